"""``minatar:<game>`` (breakout, asterix, freeway, seaquest, space_invaders) via the
``minatar`` package's game classes.

Observations: ``cfg.minatar_obs == "vector"`` gives the 10x10xC binary grid flattened
(HWC order) as float32 ``[100*C]``; ``"image"`` gives uint8 ``[C, 10, 10]`` with 0/255.
Sticky actions (``cfg.minatar_sticky_actions``, MinAtar's default 0.1) and difficulty
ramping follow the MinAtar package; ``minimal_action_set`` as in its ``-v1`` ids.

The game modules are loaded from their files: ``import minatar`` pulls in matplotlib
and seaborn for its GUI (seconds per worker process), which we never use.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import gymnasium
import numpy as np

from vawm.envs.base import EnvConfig
from vawm.envs.common import SuiteEnv

SUITES = ("minatar",)
GAMES: tuple[str, ...] = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")
NUM_ACTIONS = 6  # every MinAtar game: n, l, u, r, d, f


def tasks(suite: str) -> tuple[str, ...]:
    """The five MinAtar games."""
    return GAMES


def canonical_task(suite: str, task: str) -> str | None:
    """Lower-case game name (``SpaceInvaders`` and ``space-invaders`` are accepted)."""
    key = task.lower().replace("-", "_")
    by_key = {g.replace("_", ""): g for g in GAMES}
    return by_key.get(key.replace("_", ""))


def _game_module(game: str) -> ModuleType:
    """``minatar.environments.<game>`` without running ``minatar/__init__``."""
    name = f"vawm.envs._minatar_{game}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec("minatar")
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0], "environments", f"{game}.py") if locations else None
    if path is None or not path.is_file():  # unexpected layout: the ordinary import
        return importlib.import_module(f"minatar.environments.{game}")
    file_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(file_spec)
    file_spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


class MinAtarEnv(SuiteEnv):
    """One MinAtar game with sticky actions, action repeat and an optional time limit."""

    def __init__(self, game: str, seed: int, cfg: EnvConfig) -> None:
        super().__init__(seed)
        self.game = _game_module(game).Env(ramping=cfg.minatar_ramping)
        self._sticky = float(cfg.minatar_sticky_actions)
        self._actions = (
            list(self.game.minimal_action_set())
            if cfg.minimal_action_set
            else list(range(NUM_ACTIONS))
        )
        self._image = cfg.minatar_obs == "image"
        self._repeat = cfg.action_repeat
        self._limit = cfg.time_limit
        shape = tuple(self.game.state_shape())  # (10, 10, C)
        if self._image:
            chw = (shape[2], shape[0], shape[1])
            self.observation_space = gymnasium.spaces.Box(0, 255, chw, np.uint8)
        else:
            self.observation_space = gymnasium.spaces.Box(
                0.0, 1.0, (int(np.prod(shape)),), np.float32
            )
        self.action_space = gymnasium.spaces.Discrete(len(self._actions))
        self.action_space.seed(seed)
        self._last_action = 0
        self._steps = 0

    def _obs(self) -> np.ndarray:
        state = self.game.state()  # bool [10, 10, C]
        if self._image:
            return np.ascontiguousarray(state.transpose(2, 0, 1)).astype(np.uint8) * 255
        return state.astype(np.float32).ravel()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        seed = self._reset_seed(seed)
        super().reset(seed=seed)
        if seed is not None:  # the game draws from its own RandomState
            self.game.random = np.random.RandomState(seed)
        self.game.reset()
        self._last_action = 0
        self._steps = 0
        return self._obs(), {}

    def step(self, action):
        a = self._actions[int(action)]
        reward, terminated, truncated = 0.0, False, False
        for _ in range(self._repeat):
            if self.np_random.random() < self._sticky:
                a = self._last_action
            self._last_action = a
            r, terminated = self.game.act(a)
            reward += float(r)
            self._steps += 1
            truncated = not terminated and 0 < self._limit <= self._steps
            if terminated or truncated:
                break
        return self._obs(), reward, bool(terminated), bool(truncated), {}

    def render(self) -> np.ndarray:
        """uint8 ``[10, 10, 3]``: channel c of the grid lit in a fixed colour."""
        state = self.game.state()
        colours = np.random.default_rng(0).integers(64, 256, (state.shape[2], 3))
        img = (state[:, :, :, None] * colours).max(axis=2)
        return img.astype(np.uint8)


def make(suite: str, task: str, seed: int, cfg: EnvConfig, training: bool) -> gymnasium.Env:
    """Build the game ``task``."""
    return MinAtarEnv(task, seed, cfg)
