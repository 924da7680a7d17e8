"""Short end-to-end runs through the shared loop: every suite kind, both DreamerV3 versions."""

import json

import pytest
import yaml

from vawm.config import build_config, load_config_file, to_dict
from vawm.train import Trainer

SUMMARY_KEYS = {"eval_return_mean", "eval_return_std", "eval_episodes", "env_steps", "updates",
                "wall_clock_s", "preset", "versions", "status", "env_cfg"}


@pytest.mark.parametrize("env, preset, steps", [
    ("gym:CartPole-v1", "tiny2025", 120),          # 2025 recipe: block GRU, LaProp, repval
    ("gym:Pendulum-v1", "tiny", 120),              # continuous actions: dynamics backprop
    ("dmc-pixels:cartpole-swingup", "tiny", 80),   # images: CNN encoder/decoder, action repeat 2
    ("minatar:breakout", "tiny", 100),
])
def test_short_run_writes_run_directory(tmp_path, env, preset, steps):
    cfg = build_config(preset, {"env": env, "steps": steps},
                       ["run.prefill=40", "run.eval_episodes=1", "run.log_every=40"])
    summary = Trainer(cfg, tmp_path, progress=False).train()
    assert SUMMARY_KEYS <= set(summary) and summary["updates"] > 0
    assert summary["env_steps"] >= steps
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows and all("env_step" in r and "update" in r for r in rows)
    assert any("wm/loss_dyn" in r for r in rows)
    assert (tmp_path / "returns.png").stat().st_size > 0
    assert (tmp_path / "checkpoints" / "latest.pt").exists()
    assert to_dict(load_config_file(str(tmp_path / "config.yaml"))) == to_dict(cfg)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["env"] == env
