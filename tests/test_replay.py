"""Sequence replay: windows stay inside one stream, ring order, persistence."""

import numpy as np
import torch

from vawm.replay import Replay


def _fill(r: Replay, n: int, E: int):
    for t in range(n):
        r.add({"obs": np.full((E, 2), t, np.float32) + np.arange(E)[:, None] * 1000,
               "action": np.zeros((E, 1), np.float32), "reward": np.full(E, t, np.float32),
               "is_first": np.full(E, t == 0), "is_last": np.zeros(E, bool),
               "is_terminal": np.zeros(E, bool)})


def test_windows_are_contiguous_within_a_stream():
    r = Replay(capacity=100, num_envs=2, obs_shape=(2,), obs_dtype=np.float32, act_dim=1, seq_len=5)
    _fill(r, 30, 2)
    b = r.sample(64)
    o = b["obs"][..., 0]
    assert b["obs"].shape == (64, 5, 2)
    assert torch.all(o[:, 1:] - o[:, :-1] == 1)         # consecutive steps of one env
    assert set((o[:, 0] // 1000).tolist()) == {0.0, 1.0}  # both streams get sampled


def test_ring_buffer_keeps_newest_in_order():
    r = Replay(capacity=10, num_envs=1, obs_shape=(2,), obs_dtype=np.float32, act_dim=1, seq_len=4)
    _fill(r, 25, 1)                                      # capacity 10: steps 15..24 remain
    b = r.sample(200)
    o = b["obs"][..., 0]
    assert o.min() >= 15 and o.max() <= 24
    assert torch.all(o[:, 1:] - o[:, :-1] == 1)         # never wraps through the write head


def test_state_dict_round_trip_continues_identically():
    r1 = Replay(capacity=50, num_envs=2, obs_shape=(2,), obs_dtype=np.float32, act_dim=1, seq_len=3,
                seed=3)
    _fill(r1, 20, 2)
    r1.sample(4)
    sd = r1.state_dict()
    r2 = Replay(capacity=50, num_envs=2, obs_shape=(2,), obs_dtype=np.float32, act_dim=1, seq_len=3)
    r2.load_state_dict(sd)
    a, b = r1.sample(8), r2.sample(8)
    assert all(torch.equal(a[k], b[k]) for k in a)
