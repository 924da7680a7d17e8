"""State helpers: the tree map over backbone states, RNG round trips, random actions."""

import random

import numpy as np
import torch

from vawm.acting import random_actions
from vawm.state import rng_state, set_rng_state, tree_map
from vawm.worldmodels.rssm import RState


def test_tree_map_indexes_every_structure():
    s = RState(torch.arange(6.0).reshape(3, 2), torch.arange(3.0).reshape(3, 1, 1))
    idx = torch.tensor([2, 0])
    out = tree_map(lambda t: t[idx], s)
    assert isinstance(out, RState)
    assert out.deter.tolist() == [[4.0, 5.0], [0.0, 1.0]] and out.stoch.flatten().tolist() == [2, 0]
    nested = tree_map(lambda t: t[idx], (s.deter, {"a": s.deter, "n": 3}, [s]))
    assert nested[1]["a"].shape == (2, 2) and nested[1]["n"] == 3 and isinstance(nested[2][0], RState)


def test_rng_state_round_trip():
    st = rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(st)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_random_actions():
    torch.manual_seed(0)
    d = random_actions(500, 4, True)
    assert d.shape == (500, 4) and torch.equal(d.sum(-1), torch.ones(500))
    assert set(d.argmax(-1).tolist()) == {0, 1, 2, 3}
    c = random_actions(500, 2, False, generator=torch.Generator().manual_seed(1))
    assert c.min() >= -1 and c.max() <= 1 and c.min() < -0.9 and c.max() > 0.9
    n1 = random_actions(5, 3, True, generator=np.random.default_rng(2))
    n2 = random_actions(5, 3, True, generator=np.random.default_rng(2))
    assert torch.equal(n1, n2)
