"""A run killed with SIGKILL and resumed ends bit-identical to an uninterrupted run (CPU)."""

import json
import os
import signal
import subprocess
import sys

import torch

from vawm.checkpoint import load

ARGS = ["--preset", "tiny", "--steps", "240", "--seed", "5", "--no-progress",
        "--set", "run.checkpoint_every=60", "--set", "run.log_every=60"]


def _train(*args, env=None):
    cmd = [sys.executable, "-m", "vawm", "train", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


def test_kill_and_resume_is_bit_identical(tmp_path):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    out = _train(*ARGS, "--run-dir", str(ref))
    assert out.returncode == 0, out.stderr[-2000:]
    # SIGKILL between checkpoints (at policy step 150; checkpoints every 60 steps)
    out = _train(*ARGS, "--run-dir", str(cut), env={"VAWM_TEST_KILL_AT_STEP": "150"})
    assert out.returncode == -signal.SIGKILL
    ckpt = cut / "checkpoints" / "latest.pt"
    assert int(load(ckpt)["policy_steps"]) == 120 and not (cut / "summary.json").exists()
    out = _train("--resume", str(cut), "--no-progress")
    assert out.returncode == 0, out.stderr[-2000:]
    a, b = load(ref / "checkpoints" / "latest.pt"), load(ckpt)
    assert a["updates"] == b["updates"] and a["policy_steps"] == b["policy_steps"]
    for k, v in a["agent"].items():
        assert torch.equal(v, b["agent"][k]), k
    for k in ("reward", "obs", "action"):
        assert torch.equal(a["replay"]["data"][k], b["replay"]["data"][k])
    rows = [json.loads(r) for r in (cut / "metrics.jsonl").read_text().splitlines()]
    steps = [r["env_step"] for r in rows]
    assert steps == sorted(steps) and len(steps) == len(set(steps))   # no duplicated log rows
    ref_rows = [json.loads(r) for r in (ref / "metrics.jsonl").read_text().splitlines()]
    assert [r["wm/loss"] for r in rows if "wm/loss" in r] == \
        [r["wm/loss"] for r in ref_rows if "wm/loss" in r]
