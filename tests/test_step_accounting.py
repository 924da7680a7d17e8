"""``--steps`` and every step counter count environment steps summed over all environments.

With E environments one vector step is E agent steps (x action repeat env steps); the train
ratio stays replayed steps per agent step of each environment, so the number of updates per env
step does not depend on E.
"""

import json

import pytest

from vawm.config import build_config
from vawm.train import Trainer

STEPS, PREFILL, LOG = 240, 40, 60


def _run(tmp_path, num_envs: int, steps: int = STEPS):
    cfg = build_config("tiny", {"steps": steps}, [
        f"run.num_envs={num_envs}", f"run.prefill={PREFILL}", f"run.log_every={LOG}",
        "run.eval_episodes=1", "run.checkpoint_every=100000"])
    run_dir = tmp_path / f"e{num_envs}"
    tr = Trainer(cfg, run_dir, progress=False)
    summary = tr.train()
    rows = [json.loads(r) for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return cfg, tr, summary, rows


@pytest.mark.parametrize("num_envs", [1, 4])
def test_steps_count_all_envs(tmp_path, num_envs):
    cfg, tr, summary, rows = _run(tmp_path, num_envs)
    E = num_envs
    collected = tr.replay.total * E                  # transitions in the replay, all streams
    assert STEPS <= collected < STEPS + E            # stops at N, up to one vector step
    assert summary["env_steps"] == summary["policy_steps"] == collected   # action repeat 1
    assert summary["num_envs"] == E
    # updates: train_ratio replayed steps per agent step after the prefill
    per_update = cfg.run.batch_size * cfg.run.batch_length
    learn_steps = collected - PREFILL
    expected = learn_steps * cfg.run.train_ratio / per_update
    assert abs(summary["updates"] - expected) <= E * cfg.run.train_ratio / per_update + 1
    # every periodic log row is written at the first vector step that reaches its threshold
    periodic = [r["env_step"] for r in rows[:-1]]
    assert periodic == [k * LOG + ((-k * LOG) % E) for k in range(1, len(periodic) + 1)]
    assert len(periodic) == (STEPS - 1) // LOG
    assert rows[-1]["env_step"] == collected


def test_updates_per_env_step_do_not_depend_on_num_envs(tmp_path):
    _, _, one, _ = _run(tmp_path, 1)
    _, _, four, _ = _run(tmp_path, 4)
    assert abs(one["env_steps"] - four["env_steps"]) < 4
    assert abs(one["updates"] - four["updates"]) <= 4


def test_prefill_counts_env_steps(tmp_path):
    """Random actions until ``run.prefill`` env steps of all envs; no update before it."""
    cfg = build_config("tiny", {"steps": 64}, ["run.num_envs=4", "run.prefill=48",
                                              "run.eval_episodes=1"])
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    seen = []
    orig = tr.agent.train_step

    def spy(batch):
        seen.append(tr.replay.total * 4)         # transitions collected by all 4 envs
        return orig(batch)

    tr.agent.train_step = spy
    tr.train()
    assert seen and min(seen) == 48
