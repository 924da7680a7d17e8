"""Environments behind ``"suite:task"`` ids, all with one set of conventions.

>>> env = make_env("atari100k:Pong", seed=0)            # uint8 [3, 64, 64], Discrete(6)
>>> venv = make_vec_env("dmc:walker-walk", 4, seed=0)   # float32 [4, 24], Box(-1, 1, (6,))

Suites: ``gym`` (any Gymnasium id), ``dmc`` / ``dmc-pixels`` (dm_control),
``atari100k`` / ``atari`` (ale-py), ``minatar``. See ``base`` for the conventions and
``EnvConfig`` for the protocol fields.
"""

from vawm.envs.base import (
    DEFAULT_ACTION_REPEAT,
    KNOWN_SUITES,
    EnvConfig,
    UnknownEnvError,
    action_repeat,
    env_info,
    list_tasks,
    make_env,
    make_vec_env,
    parse_env_id,
)
from vawm.envs.common import RESIZE_BACKEND, default_headless_gl

default_headless_gl()  # as early as possible: before anything imports mujoco/dm_control

__all__ = [
    "DEFAULT_ACTION_REPEAT",
    "action_repeat",
    "KNOWN_SUITES",
    "RESIZE_BACKEND",
    "EnvConfig",
    "UnknownEnvError",
    "env_info",
    "list_tasks",
    "make_env",
    "make_vec_env",
    "parse_env_id",
]
