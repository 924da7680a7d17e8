"""State structures: one tree map for backbone states, and the RNG/carry serialisation of
checkpoints (tensors and plain containers only, so checkpoints load with ``weights_only``)."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor


def tree_map(fn: Callable[[Tensor], Any], tree: Any) -> Any:
    """Apply ``fn`` to every tensor of a state: a tensor, a dataclass, a tuple/list or a dict of
    them (nested). Other leaves are returned as they are."""
    if isinstance(tree, Tensor):
        return fn(tree)
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        return type(tree)(**{f.name: tree_map(fn, getattr(tree, f.name))
                             for f in dataclasses.fields(tree)})
    if isinstance(tree, (tuple, list)):
        return type(tree)(tree_map(fn, x) for x in tree)
    if isinstance(tree, dict):
        return {k: tree_map(fn, v) for k, v in tree.items()}
    return tree


def carry_to_tensors(carry) -> dict:
    """An acting carry (backbone state, previous action) as plain tensors for a checkpoint."""
    s, a = carry
    return {"state": {f.name: getattr(s, f.name).detach().cpu() for f in dataclasses.fields(s)},
            "action": a.cpu()}


def carry_from_tensors(wm, d: dict, device) -> tuple:
    """Inverse of :func:`carry_to_tensors` for backbone ``wm`` (its carry's state type)."""
    s0, _ = wm.initial_carry(1)
    return type(s0)(**{k: v.to(device) for k, v in d["state"].items()}), d["action"].to(device)


def rng_state() -> dict:
    """torch, numpy (legacy global) and Python RNG states as tensors and numbers."""
    st = np.random.get_state()
    py = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"keys": torch.from_numpy(st[1].astype(np.int64)), "pos": int(st[2]),
                      "has_gauss": int(st[3]), "cached": float(st[4])},
            "python": list(py[1]), "python_pos": py[2]}


def set_rng_state(d: dict) -> None:
    torch.set_rng_state(d["torch"])
    n = d["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached"]))
    random.setstate((3, tuple(d["python"]), d["python_pos"]))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
