"""Bad input gives one line naming the bad value and the choices, exit code 2, no traceback."""

import subprocess
import sys

import pytest

from vawm.cli import main


@pytest.mark.parametrize("argv, needle", [
    (["train", "--env", "gym:NoSuchEnv-v0"], "NoSuchEnv-v0"),
    (["train", "--env", "foo:bar"], "valid suites"),
    (["train", "--preset", "nope"], "valid presets"),
    (["train", "--set", "rssm.nope=1"], "valid keys here"),
    (["train", "--set", "rssm.deter=big"], "expects an integer"),
    (["train", "--set", "nokey"], "key=value"),
    (["train", "--backbone", "xyz"], "valid backbones"),
    (["train", "--objective", "xyz"], "valid objectives"),
    (["train", "--set", "optim.kind=sgd"], "valid values"),
    (["train", "--bogus-flag"], "--bogus-flag"),
    (["frobnicate"], "valid commands"),
    (["eval", "/nonexistent/run"], "not a vawm run directory"),
    (["train", "--resume", "/nonexistent/run"], "no config.yaml"),
    (["train", "--set", "optim.model_lr=nan"], "finite"),
    (["train", "--set", "optim.model_lr=-1e-4"], "optim.model_lr"),
    (["train", "--backbone", "tssm", "--set", "tssm.free_bits=bogus"], "batch, sample"),
    (["train", "--set", "run.batch_size=0"], "run.batch_size"),
    (["train", "--set", "env_cfg.size=[0, 64]"], "env_cfg.size"),
    (["train", "--set", "agent.gamma=2"], "agent.gamma"),
    (["train", "--set", "run.precision=fp8"], "fp32, bf16"),
    (["train", "--steps", "0"], "steps"),
    (["config", "--set", "var.weight=huge"], "adaptive, static"),
    (["train", "--backbone", "tssm", "--set", "run.batch_length=100"], "tssm.max_len"),
])
def test_bad_input_one_line_exit_2(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        raise SystemExit(main(argv))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_missing_checkpoint_is_clear(tmp_path, capsys):
    from vawm.config import build_config, save_config
    save_config(build_config("tiny"), str(tmp_path / "config.yaml"))
    assert main(["eval", str(tmp_path)]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_console_entry_point_no_traceback():
    out = subprocess.run([sys.executable, "-m", "vawm", "train", "--env", "gym:Nope-v9"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "Nope-v9" in out.stderr


def test_a_closed_pipe_stops_quietly():
    """`vawm presets | head -1`: the reader leaves early; no BrokenPipeError traceback."""
    p = subprocess.Popen([sys.executable, "-u", "-m", "vawm", "presets"],   # -u: every print writes
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()                                                  # nobody reads
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141 and "Traceback" not in err, err


def test_set_overrides_types():
    from vawm.config import build_config
    cfg = build_config("tiny", {"seed": 3}, ["rssm.deter=48", "optim.model_lr=2e-4",
                                            "run.parallel_envs=true", "env_cfg.size=[32, 32]"])
    assert cfg.rssm.deter == 48 and cfg.optim.model_lr == 2e-4 and cfg.run.parallel_envs is True
    assert cfg.env_cfg.size == (32, 32) and cfg.seed == 3


def test_eval_mode_flag_overrides_the_runs_setting(tmp_path):
    import json

    from vawm.config import build_config
    from vawm.train import Trainer
    cfg = build_config("tiny", {"steps": 80}, ["run.prefill=40", "run.eval_episodes=1"])
    Trainer(cfg, tmp_path, progress=False).train()
    for mode in ("mode", "sample"):
        assert main(["eval", str(tmp_path), "--episodes", "2", "--mode", mode]) == 0
        ev = json.loads((tmp_path / "eval.json").read_text())
        assert ev["eval_mode"] == mode and ev["eval_episodes"] == 2


def test_config_command_prints_the_resolved_config(capsys):
    import yaml
    assert main(["config", "--backbone", "tssm", "--preset", "tiny", "--set", "tssm.dim=24"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["backbone"] == "tssm" and cfg["tssm"]["dim"] == 24 and cfg["preset"] == "tiny"
    assert cfg["run"]["batch_size"] == 4                  # from the preset
    assert main(["train", "--print-config", "--objective", "var"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["objective"] == "var"


def test_default_job_is_the_screened_command_line(capsys):
    """`vawm train` with no flags is exactly the cpu-preset command line the screens measured
    (docs/default_job.md, the README's default-job rows), only the preset's name differs."""
    import yaml
    assert main(["config"]) == 0
    default = yaml.safe_load(capsys.readouterr().out)
    assert main(["config", "--preset", "cpu", "--steps", "40000", "--set",
                 "rssm.cont_terminal_weight=10", "--set", "run.train_ratio=64", "--set",
                 "rssm.free_nats=0.1", "--set", "run.precision=bf16"]) == 0
    screened = yaml.safe_load(capsys.readouterr().out)
    assert default.pop("preset") == "cpu-cartpole" and screened.pop("preset") == "cpu"
    assert default == screened
    # other backbones keep the cpu preset (tssm: no better with cpu-cartpole, 2.5x the time)
    assert main(["config", "--backbone", "tssm"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["preset"] == "cpu"


def test_unreadable_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    """A truncated latest checkpoint costs one checkpoint interval, not the run: resume warns in
    one line, continues from the previous checkpoint (its replay chunks were kept) and keeps the
    unreadable file for inspection."""
    import json

    from vawm.checkpoint import load, previous_path
    from vawm.config import build_config
    from vawm.train import CKPT, Trainer
    sets = ["run.prefill=20", "run.eval_episodes=1", "run.checkpoint_every=40",
            "run.replay_chunk=8", "run.replay_capacity=30"]
    run = tmp_path / "run"
    Trainer(build_config("tiny", {"steps": 110}, sets), run, progress=False).train()
    latest, prev = run / CKPT, previous_path(run / CKPT)
    assert latest.exists() and prev.exists()
    prev_steps = int(load(prev)["policy_steps"])
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])     # truncated
    assert main(["train", "--resume", str(run), "--steps", "160", "--no-progress"]) == 0
    err = capsys.readouterr().err
    warn = [ln for ln in err.splitlines() if "warning" in ln]
    assert len(warn) == 1 and "previous checkpoint" in warn[0]
    assert (run / "checkpoints" / "latest.pt.unreadable").exists()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["env_steps"] == 160 and prev_steps == 80        # latest was at 110
