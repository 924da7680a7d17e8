"""``gym:<Gymnasium id>``: any registered Gymnasium env under the shared conventions.

Observations: flattened to float32 ``[D]`` (Discrete observations become one-hot), or,
for uint8 images ``[H, W, C]``, uint8 ``[C, h, w]`` resized to ``cfg.size``. Actions:
``Discrete(n)`` (any ``start`` shifted to 0) or ``Box(-1, 1, (d,), float32)`` rescaled
affinely to the env's finite bounds. Ids of the ``ALE/`` and ``MinAtar/`` namespaces are
registered on demand; ``gym:module:Id`` imports ``module`` first (Gymnasium's syntax).
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from vawm.envs.base import EnvConfig
from vawm.envs.common import image_obs, image_space

SUITES = ("gym",)


def _register_namespace(task: str) -> None:
    """Make ids of packages that do not self-register on ``import gymnasium`` visible."""
    if task.startswith("ALE/"):
        import ale_py

        gymnasium.register_envs(ale_py)
    elif task.startswith("MinAtar/"):
        from minatar.gym import register_envs

        if task not in gymnasium.registry:
            register_envs()


def tasks(suite: str) -> None:
    """Any registered Gymnasium id is a task: no fixed list."""
    return None


def canonical_task(suite: str, task: str) -> str | None:
    """``task`` if it is a registered Gymnasium id (after importing its module), else None."""
    name = task
    if ":" in task:
        module, name = task.split(":", 1)
        try:
            importlib.import_module(module)
        except ImportError:
            return None
    try:
        _register_namespace(name)
    except ImportError:
        return None
    return task if name in gymnasium.registry else None


def close_matches(task: str) -> list[str]:
    """Registered ids that look like ``task`` (for error messages)."""
    return difflib.get_close_matches(task, list(gymnasium.registry), n=3)


def _is_image(space: spaces.Space) -> bool:
    return (
        isinstance(space, spaces.Box)
        and space.dtype == np.uint8
        and (space.ndim == 2 or (space.ndim == 3 and space.shape[2] in (1, 3)))
    )


class GymEnv(gymnasium.Wrapper, gymnasium.utils.RecordConstructorArgs):
    """Adapts a Gymnasium env: obs/action conventions, action repeat, first-reset seed."""

    def __init__(
        self,
        env: gymnasium.Env,
        seed: int,
        action_repeat: int,
        size: tuple[int, int],
        grayscale: bool,
    ) -> None:
        gymnasium.utils.RecordConstructorArgs.__init__(
            self, seed=seed, action_repeat=action_repeat, size=size, grayscale=grayscale
        )
        super().__init__(env)
        self._repeat = action_repeat
        self._size, self._grayscale = tuple(size), bool(grayscale)
        self._pending_seed: int | None = seed
        obs_space = env.observation_space
        self._image = _is_image(obs_space)
        if self._image:
            self.observation_space = image_space(self._size, self._grayscale)
        else:
            flat = spaces.flatten_space(obs_space)
            if not isinstance(flat, spaces.Box):
                raise ValueError(f"unsupported observation space {obs_space}")
            self.observation_space = spaces.Box(
                flat.low.astype(np.float32), flat.high.astype(np.float32), dtype=np.float32
            )
        act = env.action_space
        if isinstance(act, spaces.Discrete):
            self._start = int(act.start)
            self.action_space = spaces.Discrete(int(act.n))
        elif isinstance(act, spaces.Box):
            if not (np.all(np.isfinite(act.low)) and np.all(np.isfinite(act.high))):
                raise ValueError(f"cannot rescale an action Box with infinite bounds: {act}")
            self._low, self._high = act.low.astype(np.float64), act.high.astype(np.float64)
            self.action_space = spaces.Box(-1.0, 1.0, (int(np.prod(act.shape)),), np.float32)
        else:
            raise ValueError(f"unsupported action space {act} (need Discrete or Box)")
        self.action_space.seed(seed)

    def _obs(self, obs: Any) -> np.ndarray:
        if self._image:
            return image_obs(np.asarray(obs), self._size, self._grayscale)
        flat = spaces.flatten(self.env.observation_space, obs)
        return np.asarray(flat, dtype=np.float32)

    def _action(self, action: Any) -> Any:
        if isinstance(self.action_space, spaces.Discrete):
            return int(action) + self._start
        a = np.clip(np.asarray(action, np.float64).reshape(self._low.shape), -1.0, 1.0)
        a = self._low + (a + 1.0) * 0.5 * (self._high - self._low)
        return a.astype(self.env.action_space.dtype)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None:
            seed, self._pending_seed = self._pending_seed, None
        else:
            self._pending_seed = None
        obs, info = self.env.reset(seed=seed, options=options)
        return self._obs(obs), info

    def step(self, action: Any):
        a = self._action(action)
        total = 0.0
        for _ in range(self._repeat):
            obs, reward, terminated, truncated, info = self.env.step(a)
            total += float(reward)
            if terminated or truncated:
                break
        return self._obs(obs), total, bool(terminated), bool(truncated), info


def make(suite: str, task: str, seed: int, cfg: EnvConfig, training: bool) -> gymnasium.Env:
    """``gymnasium.make(task)`` adapted; ``cfg.time_limit`` > 0 overrides the env's cap."""
    name = task.split(":", 1)[-1]
    _register_namespace(name)
    kwargs = {"max_episode_steps": cfg.time_limit} if cfg.time_limit > 0 else {}
    env = gymnasium.make(task, **kwargs)
    return GymEnv(env, seed, cfg.action_repeat, cfg.size, cfg.grayscale)
