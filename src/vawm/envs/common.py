"""Small pieces the suites share: area resize, channels-first images, first-reset seeding."""

from __future__ import annotations

import os
import sys
from typing import Any

import gymnasium
import numpy as np

try:  # cv2 is optional; the numpy fallback gives the same pixels (exact area averaging)
    import cv2  # type: ignore[import-not-found]

    RESIZE_BACKEND = "cv2"
except ImportError:  # pragma: no cover - depends on the install
    cv2 = None
    RESIZE_BACKEND = "numpy"


def default_headless_gl() -> None:
    """On Linux without a display and with ``MUJOCO_GL`` unset, pick EGL (Mesa's software
    EGL renders without a GPU). Must run before dm_control or mujoco are imported; child
    processes inherit it through the environment."""
    if "MUJOCO_GL" in os.environ or not sys.platform.startswith("linux"):
        return
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return
    os.environ["MUJOCO_GL"] = "egl"
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


def _area_axis(x: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    """Area-average ``x`` (float64) along ``axis`` to ``n_out`` cells.

    Each output cell i covers input interval [i*s, (i+1)*s), s = n_in/n_out; its value
    is the integral of the piecewise-constant input over that interval divided by s,
    read off the cumulative sum (exact fractional coverage, like cv2.INTER_AREA).
    """
    n_in = x.shape[axis]
    if n_in == n_out:
        return x
    shape = [1] * x.ndim
    shape[axis] = -1
    cum = np.cumsum(x, axis=axis)
    zero = np.zeros_like(np.take(cum, [0], axis=axis))
    cum = np.concatenate([zero, cum], axis=axis)  # cum[k] = sum of x[:k]
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo = np.minimum(np.floor(edges).astype(np.int64), n_in - 1)
    frac = (edges - lo).reshape(shape)
    at_edges = np.take(cum, lo, axis=axis) + frac * np.take(x, lo, axis=axis)
    return np.diff(at_edges, axis=axis) * (n_out / n_in)


def resize_area(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area resize of a uint8 image ``[H, W]`` or ``[H, W, C]`` to ``size = (h, w)``."""
    h, w = size
    if img.shape[:2] == (h, w):
        return img
    if cv2 is not None:
        out = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        return out.reshape((h, w) + img.shape[2:])
    x = _area_axis(_area_axis(img.astype(np.float64), 0, h), 1, w)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def rgb_to_gray(img: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of a uint8 ``[H, W, 3]`` image -> uint8 ``[H, W]``."""
    y = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def image_obs(img: np.ndarray, size: tuple[int, int], grayscale: bool) -> np.ndarray:
    """uint8 ``[H, W, 3]`` (or ``[H, W]``) frame -> uint8 ``[C, h, w]`` observation."""
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if grayscale and img.ndim == 3:
        img = rgb_to_gray(img)
    img = resize_area(img, size)
    if img.ndim == 2:
        img = img[:, :, None]
    return np.ascontiguousarray(img.transpose(2, 0, 1))


def image_space(size: tuple[int, int], grayscale: bool) -> gymnasium.spaces.Box:
    """``Box(0, 255, (C, h, w), uint8)`` with C = 1 (grayscale) or 3."""
    return gymnasium.spaces.Box(0, 255, (1 if grayscale else 3, *size), np.uint8)


class SuiteEnv(gymnasium.Env):
    """Base of the suite envs: the construction seed seeds the first unseeded reset."""

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"]}
    render_mode = "rgb_array"

    def __init__(self, seed: int) -> None:
        self._pending_seed: int | None = int(seed)

    def _reset_seed(self, seed: int | None) -> int | None:
        """Seed to apply at this reset: the given one, else the construction seed once."""
        if seed is None:
            seed, self._pending_seed = self._pending_seed, None
        else:
            self._pending_seed = None
        return seed
