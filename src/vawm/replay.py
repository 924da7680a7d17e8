"""Sequence replay: one ring buffer per environment stream, uniform sampling of [B, T] windows.

A stored step t holds o_t, the action a_t taken at o_t, the reward r_t received on arriving at o_t,
and the flags is_first / is_last / is_terminal of o_t. Windows may cross episode boundaries: the
world model resets its state wherever ``is_first`` is set. The buffer (and its sampler's RNG) are
part of every checkpoint.

Persistence. With a ``chunk_dir`` (the trainer's default: ``RUN/replay/``), a checkpoint does not
carry the buffer: every completed run of ``chunk`` steps is written once, atomically, as
``chunk_<k>.pt`` ([E, chunk, ...] per key, weights-only), and the checkpoint holds only the
unfinished tail (< ``chunk`` steps) and the counters. A checkpoint therefore costs O(new data)
instead of O(buffer) (Atari 100k: ~1.2 GB of frames per checkpoint without chunks). Chunks wholly
older than the buffer's window are deleted after the checkpoint that no longer needs them is on
disk. Without a ``chunk_dir`` the whole buffer goes into the checkpoint (the older format, still
readable).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

KEYS = ("obs", "action", "reward", "is_first", "is_last", "is_terminal")


class Replay:
    def __init__(self, capacity: int, num_envs: int, obs_shape: tuple[int, ...], obs_dtype,
                 act_dim: int, seq_len: int, seed: int = 0, chunk_dir: str | Path | None = None,
                 chunk: int = 1024):
        self.num_envs, self.seq_len = num_envs, seq_len
        self.chunk_dir = Path(chunk_dir) if chunk_dir is not None else None
        self.chunk = int(chunk)
        self.total = 0                      # steps added per stream since the start of the run
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
        self.total += 1

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
    def _steps(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Global steps [start, stop) of every stream (they must still be in the ring)."""
        idx = np.arange(start, stop) % self.cap
        return {k: np.ascontiguousarray(v[:, idx]) for k, v in self.data.items()}

    def _put(self, start: int, data: dict) -> None:
        """Write global steps [start, start + n) into the ring, keeping only the last ``cap``."""
        n = next(iter(data.values())).shape[1]
        lo = max(start, self.total - self.cap)
        if start + n <= lo:
            return
        idx = np.arange(lo, start + n) % self.cap
        for k, v in data.items():
            arr = v.numpy() if isinstance(v, torch.Tensor) else v
            self.data[k][:, idx] = arr[:, lo - start:]

    def _piece(self, start: int, stop: int) -> dict:
        """Steps [start, stop) still in the ring (a piece older than the window is cut)."""
        lo = max(start, self.total - self.cap)
        return {"start": lo, "data": {k: torch.from_numpy(v) for k, v in self._steps(lo, stop).items()}}

    def _chunk_path(self, k: int) -> Path:
        return self.chunk_dir / f"chunk_{k:07d}.pt"

    def state_dict(self) -> dict:
        if self.chunk_dir is None:
            n = int(self.filled.max())
            full = bool((self.filled == self.cap).any())
            sl = slice(None) if full else slice(0, n)
            return {
                "data": {k: torch.from_numpy(np.ascontiguousarray(v[:, sl]))
                         for k, v in self.data.items()},
                "pos": torch.from_numpy(self.pos.copy()), "filled": torch.from_numpy(self.filled.copy()),
                "rng": rng_state(self.rng),
            }
        from vawm import checkpoint
        S, done = self.chunk, self.total // self.chunk
        for k in range(self._first_chunk(), done):
            path = self._chunk_path(k)
            if not path.exists():                         # a complete chunk never changes
                checkpoint.save(self._piece(k * S, (k + 1) * S), path)
        return {"total": self.total, "chunk": S, "rng": rng_state(self.rng),
                "tail": self._piece(done * S, self.total)}

    def _first_chunk(self) -> int:
        """The oldest chunk with a step inside the buffer's window."""
        return max(0, self.total - self.cap) // self.chunk

    def prune(self, older_total: int | None = None) -> None:
        """Delete chunk files wholly outside the buffer's window (call once the checkpoint that
        refers to this state is on disk); ``older_total``: keep the window of an older kept
        checkpoint too (the replay's ``total`` when it was written)."""
        if self.chunk_dir is None or not self.chunk_dir.exists():
            return
        total = self.total if older_total is None else min(older_total, self.total)
        first = max(0, total - self.cap) // self.chunk
        for path in self.chunk_dir.glob("chunk_*.pt"):
            if int(path.stem.split("_")[1]) < first:
                path.unlink(missing_ok=True)

    def clear_chunks(self) -> None:
        """Delete every chunk file (of an earlier run in the same directory)."""
        if self.chunk_dir is not None and self.chunk_dir.exists():
            for path in self.chunk_dir.glob("chunk_*.pt"):
                path.unlink()

    def load_state_dict(self, sd: dict) -> None:
        if "data" in sd:                                  # whole buffer inside the checkpoint
            for k, v in sd["data"].items():
                n = v.shape[1]
                self.data[k][:, :n] = v.numpy()
            self.pos = sd["pos"].numpy().copy()
            self.filled = sd["filled"].numpy().copy()
            wrapped = bool((self.filled == self.cap).any())
            # a count consistent with the ring (the true one is not stored in this format)
            self.total = self.cap + int(self.pos[0]) if wrapped else int(self.filled.max())
            set_rng_state(self.rng, sd["rng"])
            return
        from vawm import checkpoint
        if self.chunk_dir is None:
            raise checkpoint.CheckpointError("this checkpoint keeps its replay in chunk files; "
                                             "the replay needs their directory (chunk_dir)")
        if int(sd["chunk"]) != self.chunk:
            raise checkpoint.CheckpointError(f"the replay chunks of this checkpoint hold {int(sd['chunk'])} "
                                             f"steps, the config says {self.chunk} (run.replay_chunk)")
        self.total = int(sd["total"])
        done = self.total // self.chunk
        for path in self.chunk_dir.glob("chunk_*.pt"):     # written after this checkpoint: redo
            if int(path.stem.split("_")[1]) >= done:
                path.unlink()
        for k in range(self._first_chunk(), done):
            piece = checkpoint.load(self._chunk_path(k))
            self._put(int(piece["start"]), piece["data"])
        self._put(int(sd["tail"]["start"]), sd["tail"]["data"])
        self.pos = np.full(self.num_envs, self.total % self.cap, np.int64)
        self.filled = np.full(self.num_envs, min(self.total, self.cap), np.int64)
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


def random_batch(cfg, info: dict, device: torch.device | str = "cpu", seed: int | None = None,
                 p_first: float = 0.02, p_term: float = 0.02) -> dict[str, torch.Tensor]:
    """A [B, T] batch in the replay's format with random content, for benchmarks and tests.

    B, T = ``cfg.run.batch_size``, ``cfg.run.batch_length``; observations of ``info``'s shape
    (uint8 pixels or standard-normal vectors), one-hot or uniform [-1, 1] actions, rewards in
    [0, 1], episode starts and terminals with probabilities ``p_first`` / ``p_term``, ``is_last``
    where a step is terminal or the next one starts an episode. Seeded by ``seed`` (default
    ``cfg.seed``) with a private generator: the global RNG is untouched.
    """
    B, T = cfg.run.batch_size, cfg.run.batch_length
    g = torch.Generator().manual_seed(cfg.seed if seed is None else seed)
    shape, A = tuple(info["obs_shape"]), info["action_dim"]
    if info["obs_kind"] == "image":
        obs = torch.randint(0, 256, (B, T, *shape), generator=g, dtype=torch.uint8)
    else:
        obs = torch.randn(B, T, *shape, generator=g)
    if info["discrete"]:
        action = torch.nn.functional.one_hot(torch.randint(0, A, (B, T), generator=g), A).float()
    else:
        action = torch.rand(B, T, A, generator=g) * 2 - 1
    first = torch.rand(B, T, generator=g) < p_first
    term = torch.rand(B, T, generator=g) < p_term
    batch = {"obs": obs, "action": action, "reward": torch.rand(B, T, generator=g),
             "is_first": first, "is_last": term | torch.roll(first, -1, 1), "is_terminal": term}
    return {k: v.to(device) for k, v in batch.items()}
