"""Sequence replay: one ring buffer per environment stream, uniform sampling of [B, T] windows.

A stored step t holds o_t, the action a_t taken at o_t, the reward r_t received on arriving at o_t,
and the flags is_first / is_last / is_terminal of o_t. Windows may cross episode boundaries: the
world model resets its state wherever ``is_first`` is set. The buffer (and its sampler's RNG) are
part of every checkpoint.
"""

from __future__ import annotations

import numpy as np
import torch

KEYS = ("obs", "action", "reward", "is_first", "is_last", "is_terminal")


class Replay:
    def __init__(self, capacity: int, num_envs: int, obs_shape: tuple[int, ...], obs_dtype,
                 act_dim: int, seq_len: int, seed: int = 0):
        self.num_envs, self.seq_len = num_envs, seq_len
        self.cap = max(seq_len, capacity // num_envs)               # per stream
        E, C = num_envs, self.cap
        self.data = {
            "obs": np.zeros((E, C, *obs_shape), obs_dtype),
            "action": np.zeros((E, C, act_dim), np.float32),
            "reward": np.zeros((E, C), np.float32),
            "is_first": np.zeros((E, C), bool),
            "is_last": np.zeros((E, C), bool),
            "is_terminal": np.zeros((E, C), bool),
        }
        self.pos = np.zeros(E, np.int64)    # next write index per stream
        self.filled = np.zeros(E, np.int64)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return int(self.filled.sum())

    def add(self, step: dict[str, np.ndarray]) -> None:
        """Append one step for every stream: each value is [E, ...]."""
        p = self.pos
        rows = np.arange(self.num_envs)
        for k in KEYS:
            self.data[k][rows, p] = step[k]
        self.pos = (p + 1) % self.cap
        self.filled = np.minimum(self.filled + 1, self.cap)

    def can_sample(self) -> bool:
        return bool((self.filled >= self.seq_len).any())

    def sample(self, batch_size: int, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        T = self.seq_len
        windows = np.maximum(self.filled - T + 1, 0).astype(np.float64)
        env = self.rng.choice(self.num_envs, size=batch_size, p=windows / windows.sum())
        off = (self.rng.random(batch_size) * windows[env]).astype(np.int64)
        # oldest element of a full ring is at pos; of a partial one at 0
        base = np.where(self.filled[env] == self.cap, self.pos[env], 0)
        idx = (base[:, None] + off[:, None] + np.arange(T)[None]) % self.cap   # [B, T]
        out = {k: torch.from_numpy(self.data[k][env[:, None], idx]) for k in KEYS}
        return {k: v.to(device, non_blocking=True) for k, v in out.items()}

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict:
        n = int(self.filled.max())
        full = bool((self.filled == self.cap).any())
        sl = slice(None) if full else slice(0, n)
        return {
            "data": {k: torch.from_numpy(np.ascontiguousarray(v[:, sl])) for k, v in self.data.items()},
            "pos": torch.from_numpy(self.pos.copy()), "filled": torch.from_numpy(self.filled.copy()),
            "rng": rng_state(self.rng),
        }

    def load_state_dict(self, sd: dict) -> None:
        for k, v in sd["data"].items():
            n = v.shape[1]
            self.data[k][:, :n] = v.numpy()
        self.pos = sd["pos"].numpy().copy()
        self.filled = sd["filled"].numpy().copy()
        set_rng_state(self.rng, sd["rng"])


def rng_state(rng: np.random.Generator) -> dict:
    """numpy Generator state as plain types (checkpoint-safe without pickled objects)."""
    st = rng.bit_generator.state
    return {"bit_generator": st["bit_generator"], "state": str(st["state"]["state"]),
            "inc": str(st["state"]["inc"]), "has_uint32": st["has_uint32"], "uinteger": st["uinteger"]}


def set_rng_state(rng: np.random.Generator, d: dict) -> None:
    rng.bit_generator.state = {
        "bit_generator": d["bit_generator"],
        "state": {"state": int(d["state"]), "inc": int(d["inc"])},
        "has_uint32": d["has_uint32"], "uinteger": d["uinteger"],
    }
