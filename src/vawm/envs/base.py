"""EnvConfig, the "suite:task" registry and the factories every suite shares.

An id is ``"<suite>:<task>"``, e.g. ``gym:CartPole-v1``, ``dmc:walker-walk``,
``dmc-pixels:walker-walk``, ``atari100k:Pong``, ``minatar:breakout``. Suite modules
are imported lazily, so a bad id fails fast, before dm_control or ale_py load.

Every env built here follows one set of conventions (see ``make_env``):
observations are ``np.ndarray`` (image suites: uint8 ``[C, H, W]``; vector suites:
float32 ``[D]``), actions are ``Discrete(n)`` or ``Box(-1, 1, (d,), float32)``,
``step`` returns Gymnasium's 5-tuple with the reward summed over repeated frames,
``terminated`` only for true terminal states and ``truncated`` for time limits.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import multiprocessing
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import gymnasium
import numpy as np

from vawm.settings import Min, Range, section

NonNeg = Annotated[int, Min(0)]
Prob = Annotated[float, Range(0, 1)]

# suite name -> module that implements it (imported on first use)
_SUITE_MODULES: dict[str, str] = {
    "gym": "vawm.envs.gym_suite",
    "dmc": "vawm.envs.dmc",
    "dmc-pixels": "vawm.envs.dmc",
    "atari100k": "vawm.envs.atari",
    "atari": "vawm.envs.atari",
    "minatar": "vawm.envs.minatar",
}
KNOWN_SUITES: tuple[str, ...] = tuple(_SUITE_MODULES)

# action_repeat=0 resolves to these (others: 1)
DEFAULT_ACTION_REPEAT: dict[str, int] = {"dmc": 2, "dmc-pixels": 2, "atari100k": 4, "atari": 4}


class UnknownEnvError(ValueError):
    """A ``suite:task`` id names no known suite or no known task (one-line message)."""


@section("env_cfg")
class EnvConfig:
    """Environment protocol. Every field is a plain type so it round-trips through YAML.

    Generic:
      action_repeat: agent steps repeat each action this many env steps/frames, summing
        rewards; 0 = suite default (dmc 2, atari100k 4, others 1).
      size: (height, width) of image observations.
      time_limit: episode cap in *env* steps (not agent steps); 0 = suite default
        (dmc 1000 env steps = 500 agent steps at repeat 2; gym and minatar: the env's
        own). Atari uses ``max_episode_frames`` instead.
      grayscale: image observations with 1 channel instead of RGB.
    Atari (the Atari 100k protocol, README):
      noop_max: reset takes a uniform random number of no-op frames in [0, noop_max].
      sticky_actions: ALE repeat_action_probability.
      life_loss_signal: set ``info["life_loss"]`` on the step a life is lost (training
        envs only); the episode goes on.
      max_episode_frames: episode cap in raw emulator frames, no-op frames included.
      minimal_action_set: the game's minimal action set (else all 18 actions); also
        used by MinAtar.
      max_pool: observation is the element-wise max of the last two frames of a step.
    dmc:
      camera: -1 = suite default (quadruped 2, others 0).
    Stochasticity (any continuous-control task; Voelcker et al. 2025 §4 and §7: calibration
    matters as the environment's stochasticity grows; DMC itself is deterministic):
      action_noise: std of Gaussian noise the environment adds to every continuous action
        (in the [-1, 1] action box, once per agent step, then clipped), drawn from the env's
        own seeded generator.
      state_noise: dmc only: std of Gaussian noise added to the physics' generalised
        velocities (qvel) before every agent step, from the same generator.
    MinAtar:
      minatar_obs: "vector" (flattened float32 of the 10x10xC binary grid) or "image"
        (uint8 [C, 10, 10] with values 0/255).
      minatar_sticky_actions: MinAtar's own sticky-action probability (package default).
      minatar_ramping: MinAtar's difficulty ramping (package default).
    """

    action_repeat: NonNeg = 0
    size: Annotated[tuple[int, int], Min(1)] = (64, 64)
    time_limit: NonNeg = 0
    grayscale: bool = False
    # Atari
    noop_max: NonNeg = 30
    sticky_actions: Prob = 0.0
    life_loss_signal: bool = True
    max_episode_frames: NonNeg = 108_000
    time_limit_terminal: bool = False   # the frame cap ends an episode as terminal (DreamerV3)
    minimal_action_set: bool = True
    max_pool: bool = True
    # dm_control
    camera: int = -1
    # stochastic control (0 = the task as it is)
    action_noise: Annotated[float, Min(0)] = 0.0
    state_noise: Annotated[float, Min(0)] = 0.0
    # MinAtar
    minatar_obs: Literal["vector", "image"] = "vector"
    minatar_sticky_actions: Prob = 0.1
    minatar_ramping: bool = True

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> EnvConfig:
        """Build from a mapping (e.g. parsed YAML); an unknown key is an error."""
        d = dict(d or {})
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown EnvConfig keys {unknown}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (size as a list) for YAML/JSON run summaries."""
        d = dataclasses.asdict(self)
        d["size"] = list(self.size)
        return d

    def resolve(self, suite: str) -> EnvConfig:
        """Copy with suite defaults filled in (action_repeat, dmc time_limit)."""
        repeat = self.action_repeat or DEFAULT_ACTION_REPEAT.get(suite, 1)
        limit = self.time_limit or (1000 if suite in ("dmc", "dmc-pixels") else 0)
        return dataclasses.replace(self, action_repeat=repeat, time_limit=limit)


def _suite_module(suite: str) -> Any:
    return importlib.import_module(_SUITE_MODULES[suite])


def _suites_hint() -> str:
    return "valid suites: " + ", ".join(KNOWN_SUITES) + " (ids look like 'suite:task')"


def parse_env_id(env_id: str) -> tuple[str, str]:
    """Split and validate ``"suite:task"``; returns ``(suite, canonical task)``.

    Raises ``UnknownEnvError`` (one line) for an unknown suite or task.
    """
    if not isinstance(env_id, str) or ":" not in env_id:
        raise UnknownEnvError(
            f"bad environment id {env_id!r}: expected 'suite:task'; {_suites_hint()}"
        )
    suite, task = env_id.split(":", 1)
    suite, task = suite.strip().lower(), task.strip()
    if suite not in _SUITE_MODULES:
        raise UnknownEnvError(
            f"unknown environment suite {suite!r} in {env_id!r}; {_suites_hint()}"
        )
    if not task:
        raise UnknownEnvError(f"empty task in environment id {env_id!r}; {_suites_hint()}")
    module = _suite_module(suite)
    canonical = module.canonical_task(suite, task)
    if canonical is None:
        tasks = module.tasks(suite)
        if tasks is None:
            similar = module.close_matches(task)
            hint = f" (did you mean {', '.join(similar)}?)" if similar else ""
            raise UnknownEnvError(
                f"{task!r} in {env_id!r} is not a registered Gymnasium id{hint}; {_suites_hint()}"
            )
        raise UnknownEnvError(
            f"unknown {suite} task {task!r} in {env_id!r}; valid {suite} tasks: "
            + ", ".join(tasks)
            + f"; {_suites_hint()}"
        )
    return suite, canonical


def list_tasks(suite: str) -> tuple[str, ...] | None:
    """Valid tasks of a suite (None for ``gym``: any registered Gymnasium id)."""
    if suite not in _SUITE_MODULES:
        raise UnknownEnvError(f"unknown environment suite {suite!r}; {_suites_hint()}")
    return _suite_module(suite).tasks(suite)


def make_env(
    env_id: str, seed: int, cfg: EnvConfig | None = None, *, training: bool = True
) -> gymnasium.Env:
    """Build one environment following the shared conventions (see module doc).

    ``seed`` seeds the first ``reset()`` that is called without a seed and the action
    space. ``training=False`` gives the evaluation variant: same protocol, but no
    ``info["life_loss"]`` signal.
    """
    cfg = cfg or EnvConfig()
    suite, task = parse_env_id(env_id)
    if cfg.state_noise > 0 and suite not in ("dmc", "dmc-pixels"):
        raise UnknownEnvError(f"env_cfg.state_noise perturbs MuJoCo velocities: dmc tasks only, "
                              f"not {env_id}; use env_cfg.action_noise")
    env = _suite_module(suite).make(suite, task, int(seed), cfg.resolve(suite), training)
    if cfg.action_noise > 0:
        if not isinstance(env.action_space, gymnasium.spaces.Box):
            env.close()
            raise UnknownEnvError(f"env_cfg.action_noise needs continuous actions; {env_id} has "
                                  "discrete ones")
        env = ActionNoise(env, cfg.action_noise)
    return env


class ActionNoise(gymnasium.ActionWrapper):
    """a + N(0, std^2) clipped to the action box, from the env's seeded generator: a stochastic
    version of any continuous-control task (``env_cfg.action_noise``)."""

    def __init__(self, env: gymnasium.Env, std: float):
        super().__init__(env)
        self.std = std

    def action(self, action):
        a = np.asarray(action, np.float32)
        noise = self.env.unwrapped.np_random.normal(0.0, self.std, a.shape)
        return np.clip(a + noise, self.action_space.low, self.action_space.high).astype(np.float32)


def default_context() -> str | None:
    """Start method for AsyncVectorEnv: forkserver where available (a fork of a parent
    that already holds an EGL context or torch threads can deadlock), else the default."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else None


def make_vec_env(
    env_id: str,
    num_envs: int,
    seed: int,
    cfg: EnvConfig | None = None,
    *,
    parallel: bool = False,
    training: bool = True,
    context: str | None = None,
) -> gymnasium.vector.VectorEnv:
    """``num_envs`` copies of ``env_id`` (env i seeded with ``seed + i``), NEXT_STEP autoreset:
    the step after a done ignores its action and returns the reset observation, reward 0.

    ``parallel=True`` runs each env in a subprocess (AsyncVectorEnv, start method
    ``context`` or ``default_context()``); otherwise SyncVectorEnv in this process. With
    forkserver/spawn the workers re-import ``__main__``: scripts need the usual
    ``if __name__ == "__main__":`` guard.
    """
    parse_env_id(env_id)  # fail here, not in a worker
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    fns = [
        functools.partial(make_env, env_id, seed + i, cfg, training=training)
        for i in range(num_envs)
    ]
    mode = gymnasium.vector.AutoresetMode.NEXT_STEP
    if parallel:
        return gymnasium.vector.AsyncVectorEnv(
            fns, context=context or default_context(), autoreset_mode=mode
        )
    return gymnasium.vector.SyncVectorEnv(fns, autoreset_mode=mode)


_INFO_CACHE: dict[tuple[str, str], dict[str, Any]] = {}


def env_info(env_id: str, cfg: EnvConfig | None = None) -> dict[str, Any]:
    """Metadata without stepping: obs_kind ("image"|"vector"), obs_shape, discrete,
    action_dim (n for Discrete, d for Box), action_repeat (resolved), suite, task.

    Builds the env once (no reset, no rendering); results are cached per (id, cfg).
    """
    cfg = cfg or EnvConfig()
    key = (env_id, repr(cfg))
    if key not in _INFO_CACHE:
        suite, task = parse_env_id(env_id)
        env = make_env(env_id, 0, cfg)
        try:
            obs_space, act_space = env.observation_space, env.action_space
        finally:
            env.close()
        discrete = isinstance(act_space, gymnasium.spaces.Discrete)
        _INFO_CACHE[key] = {
            "obs_kind": "image" if len(obs_space.shape) == 3 else "vector",
            "obs_shape": tuple(obs_space.shape),
            "discrete": discrete,
            "action_dim": int(act_space.n) if discrete else int(act_space.shape[0]),
            "action_repeat": cfg.resolve(suite).action_repeat,
            "suite": suite,
            "task": task,
        }
    return dict(_INFO_CACHE[key])


def action_repeat(env_id: str, cfg: EnvConfig) -> int:
    """Env steps (frames) per agent step: ``cfg.action_repeat``, else the suite's default."""
    return cfg.action_repeat or DEFAULT_ACTION_REPEAT.get(parse_env_id(env_id)[0], 1)
