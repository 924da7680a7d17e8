"""``dmc:<domain>-<task>`` (proprio) and ``dmc-pixels:<domain>-<task>`` (64x64 RGB) via
dm_control.suite.

Proprio observations: all entries of the observation dict flattened and concatenated in
sorted key order, float32 ``[D]``. Pixels: ``physics.render`` of the final repeated step,
uint8 ``[C, H, W]``. Actions in [-1, 1], rescaled to the task's bounds (only
quadruped's differ). Action repeat 2 and 1000 env steps per episode by default; episodes
end with ``truncated`` at the time limit, ``terminated`` only if the task itself ends with
discount 0 (no standard task does).

Rendering is headless: unless ``MUJOCO_GL`` is already set, this module sets
``MUJOCO_GL=egl`` (and ``PYOPENGL_PLATFORM=egl``) on Linux without a display, before
dm_control or mujoco are imported (Mesa's software EGL works without a GPU).
"""

from __future__ import annotations

import gymnasium
import numpy as np

from vawm.envs.base import EnvConfig
from vawm.envs.common import SuiteEnv, default_headless_gl, image_obs, image_space

default_headless_gl()  # before dm_control / mujoco are imported

SUITES = ("dmc", "dmc-pixels")
# dm_control's cameras: quadruped's camera 0 is far away, DreamerV3 and others use 2
DEFAULT_CAMERA = {"quadruped": 2}


def tasks(suite: str) -> tuple[str, ...]:
    """All ``domain-task`` names of dm_control.suite (imports dm_control)."""
    from dm_control import suite as dmc_suite

    return tuple(f"{d}-{t}" for d, t in dmc_suite.ALL_TASKS)


def canonical_task(suite: str, task: str) -> str | None:
    """``domain-task`` if dm_control.suite has it, else None."""
    return task if task in tasks(suite) else None


class DMCEnv(SuiteEnv):
    """One dm_control task with action repeat and a time limit counted in env steps."""

    def __init__(self, domain: str, task: str, seed: int, cfg: EnvConfig, pixels: bool) -> None:
        from dm_control import suite as dmc_suite

        super().__init__(seed)
        self._env = dmc_suite.load(domain, task, task_kwargs={"random": seed})
        # the episode cap is ours (cfg.time_limit env steps), not the task's own time limit
        self._env._step_limit = float("inf")
        self._pixels = pixels
        self._repeat = cfg.action_repeat
        self._limit = cfg.time_limit
        self._size, self._grayscale = tuple(cfg.size), bool(cfg.grayscale)
        self._camera = cfg.camera if cfg.camera >= 0 else DEFAULT_CAMERA.get(domain, 0)
        self._keys = sorted(self._env.observation_spec())
        spec = self._env.action_spec()
        # [-1, 1] maps affinely onto the task's bounds (quadruped's are not [-1, 1]);
        # effectively unbounded dims (lqr: +-1e10) are passed through as they are
        low = np.broadcast_to(spec.minimum, spec.shape).astype(np.float64)
        high = np.broadcast_to(spec.maximum, spec.shape).astype(np.float64)
        bounded = np.isfinite(low) & np.isfinite(high) & (np.maximum(-low, high) < 1e6)
        self._low, self._high = np.where(bounded, low, -1.0), np.where(bounded, high, 1.0)
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, spec.shape, np.float32)
        self.action_space.seed(seed)
        if pixels:
            self.observation_space = image_space(self._size, self._grayscale)
        else:
            dim = sum(int(np.prod(self._env.observation_spec()[k].shape)) for k in self._keys)
            self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        self._steps = 0
        self._state_noise = float(cfg.state_noise)

    @property
    def physics(self):
        """The dm_control physics (for rendering videos or inspecting state)."""
        return self._env.physics

    def _obs(self, time_step) -> np.ndarray:
        if self._pixels:
            return image_obs(self.render(), self._size, self._grayscale)
        parts = [np.asarray(time_step.observation[k], np.float32).ravel() for k in self._keys]
        return np.concatenate(parts)

    def render(self) -> np.ndarray:
        """uint8 ``[H, W, 3]`` frame of size ``cfg.size`` from the configured camera."""
        h, w = self._size
        return self._env.physics.render(height=h, width=w, camera_id=self._camera)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        seed = self._reset_seed(seed)
        super().reset(seed=seed)
        if seed is not None:
            self._env.task.random.seed(seed)
        self._steps = 0
        return self._obs(self._env.reset()), {}

    def step(self, action):
        action = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
        action = self._low + (action + 1.0) * 0.5 * (self._high - self._low)
        reward, terminated, truncated = 0.0, False, False
        if self._state_noise > 0:          # env_cfg.state_noise: a stochastic transition
            qvel = self._env.physics.data.qvel
            qvel += self.np_random.normal(0.0, self._state_noise, qvel.shape)
        for _ in range(self._repeat):
            time_step = self._env.step(action)
            reward += float(time_step.reward or 0.0)
            self._steps += 1
            if time_step.last():  # only tasks that end themselves get here
                terminated = time_step.discount == 0.0
                truncated = not terminated
                break
            if self._limit and self._steps >= self._limit:
                truncated = True
                break
        return self._obs(time_step), reward, terminated, truncated, {}

    def close(self) -> None:
        self._env.physics.free()


def make(suite: str, task: str, seed: int, cfg: EnvConfig, training: bool) -> gymnasium.Env:
    """Build ``domain-task``; ``suite == "dmc-pixels"`` gives image observations."""
    domain, name = task.split("-", 1)
    return DMCEnv(domain, name, seed, cfg, pixels=suite == "dmc-pixels")
