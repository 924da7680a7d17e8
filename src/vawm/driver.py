"""Environment driver: E environments stepped together, locally or in worker processes.

Every episode is reset with its own seed (derived from the run seed, the env index and the episode
index), and the actions since that reset are kept. An environment's exact state is therefore
``(episode seed, actions so far)``: a checkpoint stores that, and a resumed run rebuilds the state
by re-simulating the current episode. This works for any deterministic simulator (Gymnasium,
MuJoCo, ALE, MinAtar) without pickling simulator objects.

Reset semantics match Gymnasium's NEXT_STEP autoreset: the step after an episode ends ignores its
action and returns the first observation of the next episode with ``is_first``.
"""

from __future__ import annotations

import multiprocessing as mp
from functools import partial

import numpy as np

from vawm.envs import EnvConfig, make_env


def episode_seed(seed: int, env_index: int, episode: int) -> int:
    return int(np.random.SeedSequence([seed, env_index, episode]).generate_state(1)[0] & 0x7FFFFFFF)


class EnvSlot:
    """One environment with its episode bookkeeping; lives in the driver or in a worker."""

    def __init__(self, env_id: str, seed: int, index: int, cfg: EnvConfig, training: bool):
        self.env = make_env(env_id, seed + index, cfg, training=training)
        self.seed, self.index = seed, index
        self.episode = 0
        self.actions: list = []
        self.needs_reset = True
        self.ret = 0.0
        self.length = 0
        self.discrete = hasattr(self.env.action_space, "n")

    def to_env_action(self, a: np.ndarray):
        return int(np.argmax(a)) if self.discrete else np.clip(a, -1, 1).astype(np.float32)

    def _reset(self) -> np.ndarray:
        obs, _ = self.env.reset(seed=episode_seed(self.seed, self.index, self.episode))
        self.actions, self.needs_reset, self.ret, self.length = [], False, 0.0, 0
        return obs

    def step(self, a: np.ndarray) -> dict:
        if self.needs_reset:
            obs = self._reset()
            return dict(obs=obs, reward=0.0, is_first=True, is_last=False, is_terminal=False,
                        life_loss=False, episode_return=None, episode_length=None)
        act = self.to_env_action(a)
        obs, reward, term, trunc, info = self.env.step(act)
        self.actions.append(act)
        self.ret += float(reward)
        self.length += 1
        done = bool(term or trunc)
        out = dict(obs=obs, reward=float(reward), is_first=False, is_last=done,
                   is_terminal=bool(term), life_loss=bool(info.get("life_loss", False)),
                   episode_return=self.ret if done else None,
                   episode_length=self.length if done else None)
        if done:
            self.needs_reset, self.episode = True, self.episode + 1
        return out

    def get_state(self) -> dict:
        return {"episode": self.episode, "needs_reset": self.needs_reset,
                "actions": np.asarray(self.actions), "ret": self.ret, "length": self.length}

    def set_state(self, st: dict) -> None:
        self.episode = int(st["episode"])
        self.needs_reset = True
        if not st["needs_reset"]:
            self._reset()
            actions = np.asarray(st["actions"])    # tensor or array from a checkpoint
            for act in actions:
                self.env.step(int(act) if self.discrete else act.astype(np.float32))
            self.actions = [int(a) if self.discrete else a.astype(np.float32) for a in actions]
            self.ret, self.length = float(st["ret"]), int(st["length"])

    def close(self) -> None:
        self.env.close()


def _worker(conn, ctor) -> None:
    slot = ctor()
    try:
        while True:
            cmd, arg = conn.recv()
            if cmd == "step":
                conn.send(slot.step(arg))
            elif cmd == "get_state":
                conn.send(slot.get_state())
            elif cmd == "set_state":
                slot.set_state(arg)
                conn.send(None)
            elif cmd == "close":
                slot.close()
                conn.send(None)
                break
    except (KeyboardInterrupt, EOFError):
        pass


class Driver:
    """Steps ``num_envs`` :class:`EnvSlot` s; ``parallel`` puts each in its own process."""

    def __init__(self, env_id: str, num_envs: int, seed: int, cfg: EnvConfig,
                 parallel: bool = False, training: bool = True):
        self.num_envs, self.parallel = num_envs, parallel
        ctors = [partial(EnvSlot, env_id, seed, i, cfg, training) for i in range(num_envs)]
        if parallel:
            ctx = mp.get_context("spawn")
            self.conns, self.procs = [], []
            for c in ctors:
                a, b = ctx.Pipe()
                p = ctx.Process(target=_worker, args=(b, c), daemon=True)
                p.start()
                self.conns.append(a)
                self.procs.append(p)
        else:
            self.slots = [c() for c in ctors]

    def step(self, actions: np.ndarray) -> dict[str, np.ndarray | list]:
        """actions: [E, A] (one-hot or continuous); returns batched next-step fields."""
        if self.parallel:
            for c, a in zip(self.conns, actions, strict=True):
                c.send(("step", a))
            outs = [c.recv() for c in self.conns]
        else:
            outs = [s.step(a) for s, a in zip(self.slots, actions, strict=True)]
        batch = {k: np.stack([o[k] for o in outs]) for k in
                 ("obs", "reward", "is_first", "is_last", "is_terminal", "life_loss")}
        batch["reward"] = batch["reward"].astype(np.float32)
        batch["episodes"] = [(i, o["episode_return"], o["episode_length"]) for i, o in enumerate(outs)
                             if o["episode_return"] is not None]
        return batch

    def get_state(self) -> list[dict]:
        if self.parallel:
            for c in self.conns:
                c.send(("get_state", None))
            return [c.recv() for c in self.conns]
        return [s.get_state() for s in self.slots]

    def set_state(self, states: list[dict]) -> None:
        if self.parallel:
            for c, st in zip(self.conns, states, strict=True):
                c.send(("set_state", st))
            for c in self.conns:
                c.recv()
        else:
            for s, st in zip(self.slots, states, strict=True):
                s.set_state(st)

    def close(self) -> None:
        if self.parallel:
            for c in self.conns:
                try:
                    c.send(("close", None))
                    c.recv()
                except (BrokenPipeError, EOFError):
                    pass
            for p in self.procs:
                p.join(timeout=5)
        else:
            for s in self.slots:
                s.close()
