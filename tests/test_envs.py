"""Every suite of vawm.envs under the shared conventions, vector envs and id errors."""

import subprocess
import sys

import gymnasium
import numpy as np
import pytest
import yaml

from vawm.envs import (
    KNOWN_SUITES,
    EnvConfig,
    UnknownEnvError,
    env_info,
    list_tasks,
    make_env,
    make_vec_env,
    parse_env_id,
)
from vawm.envs.common import _area_axis, resize_area


def _check_step(env, obs_shape, obs_dtype):
    obs, info = env.reset()
    assert isinstance(obs, np.ndarray) and obs.shape == obs_shape and obs.dtype == obs_dtype
    assert env.observation_space.contains(obs)
    assert isinstance(info, dict)
    out = env.step(env.action_space.sample())
    assert len(out) == 5
    obs, reward, terminated, truncated, info = out
    assert obs.shape == obs_shape and obs.dtype == obs_dtype
    assert isinstance(reward, float)
    assert isinstance(terminated, bool) and isinstance(truncated, bool)
    return obs


# --- gym ---------------------------------------------------------------------------


def test_gym_cartpole_vector_discrete_and_seeded():
    env = make_env("gym:CartPole-v1", 0)
    assert env.action_space == gymnasium.spaces.Discrete(2)
    _check_step(env, (4,), np.float32)
    a, b, c = (make_env("gym:CartPole-v1", s).reset()[0] for s in (3, 3, 4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_gym_action_repeat_and_time_limit_count_env_steps():
    env = make_env("gym:CartPole-v1", 0, EnvConfig(action_repeat=3, time_limit=5))
    env.reset()
    _, r1, te1, tr1, _ = env.step(0)
    _, r2, te2, tr2, _ = env.step(1)
    assert (r1, te1, tr1) == (3.0, False, False)
    assert (r2, te2, tr2) == (2.0, False, True)  # 5 env steps: 3 + 2


def test_gym_pendulum_box_rescaled_to_unit_interval():
    env = make_env("gym:Pendulum-v1", 0)
    assert env.action_space == gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32)
    _check_step(env, (3,), np.float32)
    for a, torque in [(1.0, 2.0), (-1.0, -2.0), (0.25, 0.5), (3.0, 2.0)]:
        env.step(np.array([a], np.float32))
        assert env.unwrapped.last_u == pytest.approx(torque)


# --- dm_control ----------------------------------------------------------------------


def test_dmc_proprio_walker():
    env = make_env("dmc:walker-walk", 0)
    assert env.action_space == gymnasium.spaces.Box(-1.0, 1.0, (6,), np.float32)
    obs, _ = env.reset()
    assert obs.shape == (24,) and obs.dtype == np.float32  # height 1 + orientations 14 + velocity 9
    # sorted keys: "height" comes first
    assert obs[0] == pytest.approx(env.unwrapped.physics.torso_height())
    obs, reward, terminated, truncated, _ = env.step(np.zeros(6, np.float32))
    assert env.unwrapped.physics.data.time == pytest.approx(2 * 0.025)  # action repeat 2
    assert 0.0 <= reward <= 2.0 and not terminated and not truncated


def test_dmc_actions_rescaled_to_task_bounds():
    env = make_env("dmc:quadruped-walk", 0)  # bounds differ per actuator, e.g. [-0.8, 0.8]
    spec = env.unwrapped._env.action_spec()
    env.reset()
    for a, bound in [(1.0, spec.maximum), (-1.0, spec.minimum)]:
        env.step(np.full(12, a, np.float32))
        np.testing.assert_allclose(env.unwrapped.physics.data.ctrl, bound)
    assert not np.allclose(spec.maximum, 1.0)


def test_dmc_time_limit_truncates_and_never_terminates():
    env = make_env("dmc:cartpole-swingup", 0, EnvConfig(time_limit=6))
    env.reset()
    dones = [env.step(env.action_space.sample())[2:4] for _ in range(3)]
    assert dones == [(False, False), (False, False), (False, True)]


def test_dmc_pixels_renders_headless():
    env = make_env("dmc-pixels:cartpole-swingup", 0)
    obs = _check_step(env, (3, 64, 64), np.uint8)
    assert obs.std() > 5  # a real picture, not a blank frame
    assert np.unique(obs.reshape(3, -1), axis=1).shape[1] > 50  # many distinct colours
    gray = make_env("dmc-pixels:cartpole-swingup", 0, EnvConfig(grayscale=True, size=(32, 48)))
    assert gray.reset()[0].shape == (1, 32, 48)


# --- atari, minatar -----------------------------------------------------------------


def test_atari100k_pong():
    env = make_env("atari100k:Pong", 0)
    assert env.action_space == gymnasium.spaces.Discrete(6)
    obs = _check_step(env, (3, 64, 64), np.uint8)
    assert obs.std() > 5


def test_minatar_breakout_vector_and_image_agree():
    vec = make_env("minatar:breakout", 0)
    img = make_env("minatar:breakout", 0, EnvConfig(minatar_obs="image"))
    assert vec.action_space == gymnasium.spaces.Discrete(3)  # minimal set: n, l, r
    ov, oi = vec.reset()[0], img.reset()[0]
    assert ov.shape == (400,) and ov.dtype == np.float32
    assert oi.shape == (4, 10, 10) and oi.dtype == np.uint8
    for _ in range(5):
        assert set(np.unique(ov)) <= {0.0, 1.0} and set(np.unique(oi)) <= {0, 255}
        np.testing.assert_array_equal(oi.transpose(1, 2, 0).ravel() / 255, ov)
        assert ov.sum() > 0
        ov, *_ = vec.step(1)
        oi, *_ = img.step(1)


@pytest.mark.parametrize(
    "env_id",
    [
        "gym:CartPole-v1",
        "gym:Pendulum-v1",
        "dmc:cartpole-swingup",
        "dmc-pixels:cartpole-swingup",
        "atari100k:Pong",
        "minatar:breakout",
    ],
)
@pytest.mark.filterwarnings("ignore::UserWarning")  # checker's notes on wrappers, inf bounds
def test_gymnasium_env_checker_accepts_every_suite(env_id):
    # spaces, dtypes, seeded-reset determinism, step/reset signatures
    from gymnasium.utils.env_checker import check_env

    env = make_env(env_id, 0)
    check_env(env, skip_render_check=True)
    env.close()


@pytest.mark.parametrize(
    "env_id", ["gym:Pendulum-v1", "dmc:cartpole-swingup", "minatar:breakout", "minatar:asterix"]
)
def test_reset_seed_and_actions_determine_the_trajectory(env_id):
    # (episode seed, actions) must pin an episode down: the driver re-simulates on resume
    def rollout(env, seed):
        obs = [env.reset(seed=seed)[0]]
        env.action_space.seed(2)
        for _ in range(40):
            o, _, terminated, truncated, _ = env.step(env.action_space.sample())
            obs.append(o)
            if terminated or truncated:
                break
        return np.stack(obs)

    used = make_env(env_id, 0)
    rollout(used, 5)
    again, fresh = rollout(used, 9), rollout(make_env(env_id, 1), 9)
    np.testing.assert_array_equal(again, fresh)
    assert not np.array_equal(again, rollout(make_env(env_id, 1), 10))


# --- vector envs -------------------------------------------------------------------


def test_vec_env_next_step_autoreset():
    # seed s and s+1; time_limit 3 truncates both at the third step
    cfg = EnvConfig(time_limit=3)
    venv = make_vec_env("gym:CartPole-v1", 2, seed=10, cfg=cfg, parallel=True)
    try:
        ref = [make_env("gym:CartPole-v1", 10 + i, cfg) for i in range(2)]
        obs, _ = venv.reset()
        np.testing.assert_array_equal(obs, np.stack([e.reset()[0] for e in ref]))
        actions = np.array([0, 1])
        for t in range(3):
            obs, reward, terminated, truncated, _ = venv.step(actions)
            for e, a in zip(ref, actions, strict=True):
                e.step(int(a))
            assert reward.tolist() == [1.0, 1.0] and not terminated.any()
            assert truncated.tolist() == [t == 2, t == 2]
        # the step after a done ignores its action: reset observation, reward 0, no done
        obs, reward, terminated, truncated, _ = venv.step(actions)
        np.testing.assert_array_equal(obs, np.stack([e.reset()[0] for e in ref]))
        assert reward.tolist() == [0.0, 0.0]
        assert not terminated.any() and not truncated.any()
        obs, reward, *_ = venv.step(actions)
        assert reward.tolist() == [1.0, 1.0]
    finally:
        venv.close()


@pytest.mark.parametrize(
    "env_id, shape",
    [
        ("dmc-pixels:cartpole-swingup", (3, 64, 64)),  # also covers dmc proprio's code path
        ("atari100k:Pong", (3, 64, 64)),
        ("minatar:breakout", (400,)),
    ],
)
def test_vec_env_parallel_every_suite(env_id, shape):
    venv = make_vec_env(env_id, 2, seed=0, parallel=True)
    try:
        assert isinstance(venv, gymnasium.vector.AsyncVectorEnv)
        obs, _ = venv.reset()
        for _ in range(3):
            obs, reward, *_ = venv.step(venv.action_space.sample())
        assert obs.shape == (2, *shape) and reward.shape == (2,)
        if len(shape) == 3:
            assert obs.std() > 5
    finally:
        venv.close()


def test_vec_env_sync_seeds_each_env():
    venv = make_vec_env("minatar:breakout", 3, seed=5)
    assert isinstance(venv, gymnasium.vector.SyncVectorEnv)
    obs, _ = venv.reset()
    for i in range(3):
        np.testing.assert_array_equal(obs[i], make_env("minatar:breakout", 5 + i).reset()[0])


# --- ids, config, metadata -----------------------------------------------------------


@pytest.mark.parametrize(
    "env_id, bad, valid",
    [
        ("CartPole-v1", "CartPole-v1", "gym"),
        ("foo:bar", "foo", "dmc-pixels"),
        ("gym:CartPol-v1", "CartPol-v1", "CartPole-v1"),
        ("gym:NoSuchEnv-v0", "NoSuchEnv-v0", "gym"),
        ("dmc:walker-fly", "walker-fly", "walker-walk"),
        ("dmc-pixels:walkerwalk", "walkerwalk", "cheetah-run"),
        ("atari100k:Pitfall", "Pitfall", "MsPacman"),
        ("minatar:pong", "pong", "space_invaders"),
        ("atari100k:", "atari100k:", "minatar"),
    ],
)
def test_unknown_ids_raise_one_line_error(env_id, bad, valid):
    with pytest.raises(UnknownEnvError) as err:
        make_env(env_id, 0)
    msg = str(err.value)
    assert "\n" not in msg and bad in msg and valid in msg
    assert all(s in msg for s in KNOWN_SUITES)
    assert isinstance(err.value, ValueError)


def test_bad_ids_fail_before_heavy_imports():
    code = (
        "import sys\n"
        "from vawm.envs import parse_env_id, UnknownEnvError\n"
        "for bad in ['foo:x', 'atari100k:Pitfall', 'minatar:pong', 'nocolon']:\n"
        "    try:\n"
        "        parse_env_id(bad)\n"
        "    except UnknownEnvError:\n"
        "        pass\n"
        "    else:\n"
        "        raise SystemExit('no error for ' + bad)\n"
        "heavy = [m for m in ('ale_py', 'dm_control', 'mujoco', 'minatar') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_parse_env_id_canonicalises():
    assert parse_env_id("atari100k:ms_pacman") == ("atari100k", "MsPacman")
    assert parse_env_id("ATARI100K:pong") == ("atari100k", "Pong")
    assert parse_env_id("minatar:SpaceInvaders") == ("minatar", "space_invaders")
    assert parse_env_id("dmc:ball_in_cup-catch") == ("dmc", "ball_in_cup-catch")
    assert parse_env_id("gym:CartPole-v1") == ("gym", "CartPole-v1")
    assert len(list_tasks("atari100k")) == 26
    assert "walker-walk" in list_tasks("dmc") and list_tasks("gym") is None


def test_env_config_yaml_round_trip_and_validation():
    cfg = EnvConfig(size=(32, 48), sticky_actions=0.25, minatar_obs="image")
    loaded = EnvConfig.from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert loaded == cfg and loaded.size == (32, 48)
    with pytest.raises(ValueError, match="frame_skip"):
        EnvConfig.from_dict({"frame_skip": 4})
    with pytest.raises(ValueError):
        EnvConfig(minatar_obs="pixels")
    with pytest.raises(ValueError):
        EnvConfig(size=(64,))
    assert EnvConfig().resolve("atari100k").action_repeat == 4
    assert EnvConfig().resolve("dmc").action_repeat == 2
    assert EnvConfig().resolve("dmc").time_limit == 1000
    assert EnvConfig().resolve("gym").action_repeat == 1


def test_env_info():
    assert env_info("atari100k:Pong") == {
        "obs_kind": "image",
        "obs_shape": (3, 64, 64),
        "discrete": True,
        "action_dim": 6,
        "action_repeat": 4,
        "suite": "atari100k",
        "task": "Pong",
    }
    info = env_info("gym:Pendulum-v1")
    assert (info["obs_kind"], info["obs_shape"], info["discrete"], info["action_dim"]) == (
        "vector",
        (3,),
        False,
        1,
    )
    assert env_info("minatar:breakout", EnvConfig(minatar_obs="image"))["obs_shape"] == (4, 10, 10)


# --- image helpers ---------------------------------------------------------------------


def test_area_resize_is_exact_area_average():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)
    blocks = img.reshape(4, 2, 4, 3, 3).astype(np.float64).mean(axis=(1, 3))
    np.testing.assert_allclose(_area_axis(_area_axis(img.astype(float), 0, 4), 1, 4), blocks)
    np.testing.assert_array_equal(resize_area(img, (4, 4)), np.rint(blocks).astype(np.uint8))
    # fractional coverage: 3 -> 2 cells, cell 0 = x0 + x1/2, cell 1 = x1/2 + x2 (over 1.5)
    x = np.array([[0.0], [3.0], [6.0]])
    np.testing.assert_allclose(_area_axis(x, 0, 2)[:, 0], [1.0, 5.0])
    const = np.full((210, 160, 3), 77, np.uint8)
    assert (resize_area(const, (64, 64)) == 77).all()


def test_area_resize_matches_cv2_inter_area():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (210, 160, 3), dtype=np.uint8)
    x = _area_axis(_area_axis(img.astype(np.float64), 0, 64), 1, 64)
    ours = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(ours, cv2.resize(img, (64, 64), interpolation=cv2.INTER_AREA))


def test_stochastic_control_options_are_seeded_and_change_transitions():
    """env_cfg.action_noise / state_noise (Voelcker et al. 2025 §7 calibration study): same
    seed, same trajectory; the noise changes it; discrete or non-MuJoCo tasks are refused."""
    import numpy as np

    from vawm.envs.base import EnvConfig, UnknownEnvError, make_env

    def roll(cfg, seed=3):
        env = make_env("dmc:cartpole-swingup", seed, cfg)
        env.reset()
        for _ in range(15):
            obs, *_ = env.step(np.full(1, 0.5, np.float32))
        env.close()
        return obs

    plain = roll(EnvConfig())
    for cfg in (EnvConfig(action_noise=0.3), EnvConfig(state_noise=0.1)):
        a, b = roll(cfg), roll(cfg)
        assert np.array_equal(a, b) and not np.allclose(a, plain, atol=1e-3)
    with pytest.raises(UnknownEnvError, match="continuous actions"):
        make_env("gym:CartPole-v1", 0, EnvConfig(action_noise=0.1))
    with pytest.raises(UnknownEnvError, match="dmc tasks only"):
        make_env("gym:Pendulum-v1", 0, EnvConfig(state_noise=0.1))
