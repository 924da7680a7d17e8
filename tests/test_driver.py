"""The driver: worker processes give the same data as local stepping; states restore exactly."""

import numpy as np

from vawm.driver import Driver
from vawm.envs import EnvConfig


def _rollout(driver: Driver, actions: np.ndarray) -> list[dict]:
    return [driver.step(a) for a in actions]


def test_parallel_matches_sync_and_autoresets():
    rng = np.random.default_rng(0)
    acts = np.eye(2, dtype=np.float32)[rng.integers(0, 2, (120, 3))]     # [T, E, A] one-hot
    sync = Driver("gym:CartPole-v1", 3, seed=4, cfg=EnvConfig())
    par = Driver("gym:CartPole-v1", 3, seed=4, cfg=EnvConfig(), parallel=True)
    try:
        a, b = _rollout(sync, acts), _rollout(par, acts)
    finally:
        sync.close()
        par.close()
    for x, y in zip(a, b, strict=True):
        for k in ("obs", "reward", "is_first", "is_last", "is_terminal"):
            assert np.array_equal(x[k], y[k]), k
    firsts = np.stack([x["is_first"] for x in a])
    lasts = np.stack([x["is_last"] for x in a])
    assert firsts[0].all() and lasts.any()
    t, e = np.argwhere(lasts)[0]
    assert firsts[t + 1, e]                     # the step after an episode end resets (NEXT_STEP)


def test_state_restore_resimulates_current_episode():
    rng = np.random.default_rng(1)
    acts = np.eye(2, dtype=np.float32)[rng.integers(0, 2, (60, 2))]
    d1 = Driver("gym:CartPole-v1", 2, seed=9, cfg=EnvConfig())
    _rollout(d1, acts[:30])
    state = d1.get_state()
    d2 = Driver("gym:CartPole-v1", 2, seed=9, cfg=EnvConfig())
    d2.set_state(state)
    for a in acts[30:]:
        x, y = d1.step(a), d2.step(a)
        assert np.array_equal(x["obs"], y["obs"]) and np.array_equal(x["is_first"], y["is_first"])
    d1.close()
    d2.close()
