"""The Atari 100k protocol of vawm.envs.atari, checked against the raw ALE frames."""

import numpy as np
import pytest

from vawm.envs import EnvConfig, make_env
from vawm.envs.common import image_obs

RAW = (210, 160)  # the ALE screen: with this size the observation is the raw (pooled) frame


def _raw_step(env, action, repeat):
    """Play ``action`` for ``repeat`` frames on a clone of the emulator state; return the
    screens and summed reward, then restore the state so env.step replays the same frames."""
    ale = env.unwrapped.ale
    state = ale.cloneState()
    screens, reward = [], 0.0
    for _ in range(repeat):
        reward += ale.act(env.unwrapped.actions[action])
        screens.append(ale.getScreenRGB())
    ale.restoreState(state)
    return screens, reward


def test_frames_per_step_equal_action_repeat():
    for repeat in (4, 3):
        env = make_env("atari100k:Pong", 0, EnvConfig(action_repeat=repeat))
        _, info = env.reset()
        ale = env.unwrapped.ale
        assert ale.getEpisodeFrameNumber() == info["noops"] == info["frames"]
        for _ in range(10):
            before = ale.getEpisodeFrameNumber()
            _, _, _, _, info = env.step(env.action_space.sample())
            assert ale.getEpisodeFrameNumber() - before == repeat
            assert info["frames"] == ale.getEpisodeFrameNumber()


def test_observation_is_max_of_last_two_frames_and_reward_is_summed():
    env = make_env("atari100k:Pong", 1, EnvConfig(size=RAW))
    env.reset()
    rng = np.random.default_rng(0)
    pooled_differs = 0
    for _ in range(60):
        action = int(rng.integers(env.action_space.n))
        screens, reward = _raw_step(env, action, 4)
        obs, r, *_ = env.step(action)
        expected = np.maximum(screens[-2], screens[-1]).transpose(2, 0, 1)
        np.testing.assert_array_equal(obs, expected)
        assert r == reward
        pooled_differs += int((expected != screens[-1].transpose(2, 0, 1)).any())
    assert pooled_differs > 0  # pooling is visible, so the check above can fail


def test_max_pool_then_resize_and_no_pool_option():
    env = make_env("atari100k:Pong", 2)
    raw = make_env("atari100k:Pong", 2, EnvConfig(max_pool=False, size=RAW))
    env.reset()
    raw.reset()
    for _ in range(20):
        screens, _ = _raw_step(env, 2, 4)
        obs, *_ = env.step(2)
        assert obs.shape == (3, 64, 64)
        pooled = np.maximum(screens[-2], screens[-1])
        np.testing.assert_array_equal(obs, image_obs(pooled, (64, 64), grayscale=False))
        screens, _ = _raw_step(raw, 2, 4)
        obs_raw, *_ = raw.step(2)
        np.testing.assert_array_equal(obs_raw, screens[-1].transpose(2, 0, 1))


def test_noop_starts_in_range_vary_with_seed_and_reproduce():
    cfg = EnvConfig(noop_max=30)
    env = make_env("atari100k:Breakout", 0, cfg)
    counts = []
    for seed in range(10):
        _, info = env.reset(seed=seed)
        assert 0 <= info["noops"] <= 30
        assert env.unwrapped.ale.getEpisodeFrameNumber() == info["noops"]
        counts.append(info["noops"])
    assert len(set(counts)) > 4
    again = make_env("atari100k:Breakout", 7, cfg)
    first = again.reset()
    assert first[1]["noops"] == counts[7]
    assert make_env("atari100k:Breakout", 7, cfg).reset()[1]["noops"] == counts[7]
    env = make_env("atari100k:Breakout", 0, EnvConfig(noop_max=0))
    assert env.reset()[1]["noops"] == 0
    assert env.unwrapped.ale.getEpisodeFrameNumber() == 0


def _play_breakout(env, steps, rng):
    """Random play; returns per-step (lives before, lives after, life_loss, terminated)."""
    ale = env.unwrapped.ale
    env.reset()
    log = []
    for _ in range(steps):
        before = ale.lives()
        _, _, terminated, truncated, info = env.step(int(rng.integers(env.action_space.n)))
        log.append((before, ale.lives(), info["life_loss"], terminated))
        assert info["lives"] == ale.lives()
        if terminated or truncated:
            break
    return log


def test_life_loss_signal_fires_exactly_when_lives_drop():
    env = make_env("atari100k:Breakout", 0)
    log = _play_breakout(env, 3000, np.random.default_rng(0))
    losses = [row for row in log if row[1] < row[0]]
    assert len(losses) >= 2
    for before, after, life_loss, terminated in log:
        assert life_loss == (after < before)
        if life_loss and after > 0:
            assert not terminated  # the episode goes on after a lost life
    assert log[-1][3] and log[-1][1] == 0  # random play ends by game over


@pytest.mark.parametrize(
    "cfg, training", [(EnvConfig(), False), (EnvConfig(life_loss_signal=False), True)]
)
def test_no_life_loss_signal_for_eval_or_when_disabled(cfg, training):
    env = make_env("atari100k:Breakout", 0, cfg, training=training)
    log = _play_breakout(env, 3000, np.random.default_rng(0))
    assert any(after < before for before, after, _, _ in log)
    assert not any(row[2] for row in log)


def test_episode_frame_cap_truncates_in_raw_frames():
    for noop_max in (0, 30):
        cfg = EnvConfig(max_episode_frames=50, noop_max=noop_max)
        env = make_env("atari100k:Pong", 3, cfg)
        _, info = env.reset()
        steps, truncated = 0, False
        while not truncated:
            _, _, terminated, truncated, info = env.step(0)
            steps += 1
            assert not terminated
            assert steps <= 13
        assert info["frames"] == 50 == env.unwrapped.ale.getEpisodeFrameNumber()
        if noop_max == 0:
            assert steps == 13  # 12 full steps of 4 frames, then 2 frames


def test_protocol_settings_reach_the_emulator():
    env = make_env("atari100k:Pong", 0)
    assert env.unwrapped.ale.getFloat("repeat_action_probability") == 0.0
    assert env.action_space.n == 6  # minimal action set
    sticky = make_env("atari100k:Pong", 0, EnvConfig(sticky_actions=0.25))
    assert sticky.unwrapped.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
    full = make_env("atari100k:Pong", 0, EnvConfig(minimal_action_set=False))
    assert full.action_space.n == 18


def test_grayscale_and_seeded_reproducibility():
    env = make_env("atari100k:MsPacman", 5, EnvConfig(grayscale=True))
    obs, _ = env.reset()
    assert obs.shape == (1, 64, 64) and obs.dtype == np.uint8
    a = make_env("atari100k:ms_pacman", 5)
    b = make_env("atari100k:MSPACMAN", 5)
    oa, ob = a.reset()[0], b.reset()[0]
    for action in [1, 2, 3, 4] * 5:
        oa, ra, *_ = a.step(action)
        ob, rb, *_ = b.step(action)
    np.testing.assert_array_equal(oa, ob)


def _rollout(env, actions):
    out = []
    for a in actions:
        obs, r, *_ = env.step(a)
        out.append((obs, r))
    return out


@pytest.mark.parametrize("sticky, first_seed", [(0.0, 0), (0.25, 0), (0.25, 7)])
def test_reset_with_seed_reproduces_a_fresh_env(sticky, first_seed):
    # the driver resets every episode with its own seed and re-simulates on resume
    cfg = EnvConfig(sticky_actions=sticky)
    actions = list(np.random.default_rng(0).integers(0, 6, 40))
    used = make_env("atari100k:Pong", first_seed, cfg)
    used.reset()
    _rollout(used, actions[:20])
    used.reset(seed=7)
    fresh = make_env("atari100k:Pong", 7, cfg)
    fresh.reset()
    for (oa, ra), (ob, rb) in zip(_rollout(used, actions), _rollout(fresh, actions), strict=True):
        np.testing.assert_array_equal(oa, ob)
        assert ra == rb


def test_frame_cap_can_be_terminal_as_in_dreamerv3():
    cfg = EnvConfig(max_episode_frames=20, noop_max=0, time_limit_terminal=True)
    env = make_env("atari100k:Pong", 3, cfg)
    env.reset()
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(0)
        done = terminated or truncated
    assert terminated and not truncated


def test_each_backbones_atari_preset_follows_its_reference():
    """DreamerV3 leaves lives unused and ends at the frame cap as terminal; STORM's code treats a
    life loss as terminal and truncates at the cap."""
    from vawm.config import build_config
    dreamer = build_config("atari100k").env_cfg
    assert not dreamer.life_loss_signal and dreamer.time_limit_terminal
    storm = build_config("storm").env_cfg
    assert storm.life_loss_signal and not storm.time_limit_terminal
