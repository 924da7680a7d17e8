"""A run killed with SIGKILL and resumed ends bit-identical to an uninterrupted run (CPU)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vawm.checkpoint import load
from vawm.replay import Replay

HOOKED = str(Path(__file__).with_name("hooked_vawm.py"))   # vawm with test hooks
ARGS = ["--preset", "tiny", "--steps", "240", "--seed", "5", "--no-progress",
        "--set", "run.checkpoint_every=60", "--set", "run.log_every=60",
        # small replay chunks and a ring that wraps: the chunk files are written, pruned and read
        "--set", "run.replay_chunk=32", "--set", "run.replay_capacity=100"]


def _replay(run_dir, sd):
    """The replay a resumed run rebuilds from ``sd`` and the run's chunk files (as the trainer)."""
    from vawm.config import load_config_file
    from vawm.envs import env_info
    cfg = load_config_file(str(run_dir / "config.yaml"))
    info = env_info(cfg.env, cfg.env_cfg)
    r = Replay(cfg.run.replay_capacity, cfg.run.num_envs, tuple(info["obs_shape"]), np.float32,
               info["action_dim"], cfg.run.batch_length, chunk_dir=run_dir / "replay",
               chunk=cfg.run.replay_chunk)
    r.load_state_dict(sd["replay"])
    return r


def _train(*args, env=None):
    cmd = [sys.executable, HOOKED, "train", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


# the latent backbone (TD learner, MPC acting, model data) on a continuous-control task
LATENT = ("--env", "dmc:cartpole-swingup", "--backbone", "latent", "--set", "td.mpc=true",
          "--set", "latent.dynamics=gaussian", "--set", "env_cfg.action_repeat=1")

# DreamerV2 (its learner's target-critic counter, Gaussian latent, weight decay), tiny sizes
DV2 = ("--env", "dmc:cartpole-swingup", "--preset", "dreamerv2-dmc", "--set", "env_cfg.action_repeat=1",
       *[x for kv in ("rssm.deter=32", "rssm.hidden=32", "rssm.units=32", "rssm.layers=1",
                      "rssm.head_layers=1", "agent.units=32", "agent.layers=1", "agent.horizon=5",
                      "agent.target_every=7", "run.batch_size=4", "run.batch_length=8",
                      "run.prefill=50", "run.train_ratio=32", "run.eval_episodes=2")
         for x in ("--set", kv)])


@pytest.mark.slow
@pytest.mark.parametrize("num_envs,extra", [(1, ()), (4, ()), (1, LATENT), (1, DV2)],
                         ids=["rssm-E1", "rssm-E4", "latent-E1", "dreamerv2-E1"])
def test_kill_and_resume_is_bit_identical(tmp_path, num_envs, extra):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    args = [*ARGS, "--set", f"run.num_envs={num_envs}", *extra]
    out = _train(*args, "--run-dir", str(ref))
    assert out.returncode == 0, out.stderr[-2000:]
    # SIGKILL between checkpoints (at env step 152; checkpoints every 60 env steps of all envs)
    out = _train(*args, "--run-dir", str(cut), env={"VAWM_TEST_KILL_AT_STEP": "150"})
    assert out.returncode == -signal.SIGKILL
    ckpt = cut / "checkpoints" / "latest.pt"
    assert int(load(ckpt)["policy_steps"]) == 120 and not (cut / "summary.json").exists()
    out = _train("--resume", str(cut), "--no-progress")
    assert out.returncode == 0, out.stderr[-2000:]
    a, b = load(ref / "checkpoints" / "latest.pt"), load(ckpt)
    assert a["updates"] == b["updates"] and a["policy_steps"] == b["policy_steps"]
    for k, v in a["agent"].items():
        assert torch.equal(v, b["agent"][k]), k
    assert "data" not in b["replay"]                  # the buffer lives in chunk files
    ra, rb = _replay(ref, a), _replay(cut, b)
    assert ra.total == rb.total == 240 // num_envs        # steps per stream
    for k in ("reward", "obs", "action", "is_first"):
        assert np.array_equal(ra.data[k], rb.data[k]), k
    if num_envs == 1:
        # pruned: only chunks overlapping the last 100 steps remain (140..239 -> chunks 4..7)
        assert sorted(p.name for p in (cut / "replay").glob("chunk_*.pt")) == \
            [f"chunk_{k:07d}.pt" for k in range(4, 7)]
    rows = [json.loads(r) for r in (cut / "metrics.jsonl").read_text().splitlines()]
    steps = [r["env_step"] for r in rows]
    assert steps == sorted(steps) and len(steps) == len(set(steps))   # no duplicated log rows
    ref_rows = [json.loads(r) for r in (ref / "metrics.jsonl").read_text().splitlines()]
    assert [r["wm/loss"] for r in rows if "wm/loss" in r] == \
        [r["wm/loss"] for r in ref_rows if "wm/loss" in r]


@pytest.mark.slow
def test_sigterm_checkpoints_and_resumes(tmp_path):
    """SIGTERM (cluster preemption) stops at a step boundary with a checkpoint; resume finishes."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "vawm", "train", *ARGS, "--run-dir", str(run),
           "--set", "run.checkpoint_every=100000"]       # no periodic checkpoint at all
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and metrics.read_text().strip()):   # wait for the first log row
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "--resume" in err
    steps = int(load(run / "checkpoints" / "latest.pt")["policy_steps"])
    assert 60 <= steps < 240 and not (run / "summary.json").exists()
    out = _train("--resume", str(run), "--no-progress")
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads((run / "summary.json").read_text())["policy_steps"] == 240
