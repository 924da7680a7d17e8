"""`vawm sweep`: grid expansion, retry/resume decisions, and a real 2x2 sweep that is
interrupted and resumed without redoing finished cells."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from vawm.sweep import cli as sweep_cli
from vawm.sweep.cell import SWEEP_DIR, cell_key, cell_status, plan_command, run_cell, write_json
from vawm.sweep.execute import ray_available, ray_capacity
from vawm.sweep.spec import SweepError, load_sweep, parse_sweep, select

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def _train_available() -> bool:
    r = subprocess.run([PY, "-m", "vawm", "train", "--help"], capture_output=True, text=True)
    return r.returncode == 0 and "--resume" in r.stdout


# ---------------------------------------------------------------------------- sweep files
def test_grid_expands_with_overrides_and_baselines():
    sw = parse_sweep({
        "name": "t", "defaults": {"preset": "tiny", "steps": 100, "set": {"run.log_every": 10}},
        "grid": {"backbone": ["rssm", "tssm"], "objective": ["none", "var"],
                 "env": ["atari100k:Pong", "atari100k:Boxing"], "seed": [0, 1, 2]},
        "overrides": [{"match": {"backbone": "tssm"}, "preset": "storm",
                       "set": {"run.log_every": 20, "var.warmup": 5}},
                      {"match": {"env": "atari100k:Boxing", "seed": [1, 2]}, "steps": 50}]})
    assert len(sw.cells) == 2 * 2 * 2 * 3
    by = {c.name: c for c in sw.cells}
    c = by["tssm+var/atari100k-Boxing/seed2"]
    assert (c.preset, c.steps, c.baseline) == ("storm", 50, "tssm")
    assert c.train_args() == ["--env", "atari100k:Boxing", "--backbone", "tssm", "--objective",
                              "var", "--seed", "2", "--preset", "storm", "--steps", "50",
                              "--set", "run.log_every=20", "--set", "var.warmup=5"]
    base = by["rssm/atari100k-Pong/seed0"]
    assert (base.preset, base.steps, base.baseline) == ("tiny", 100, None)
    assert dict(base.sets) == {"run.log_every": "10"}
    assert len(select(sw.cells, ["method=rssm+var", "seed=0,1"])) == 2 * 2


def test_named_methods_and_bad_files(tmp_path):
    sw = parse_sweep({"methods": [
        {"name": "tssm", "backbone": "tssm"},
        {"name": "tssm+static", "label": "STORM + static", "backbone": "tssm",
         "objective": "var", "set": {"var.weight": "static", "var.per_sample": True}}],
        "grid": {"env": ["atari100k:Alien"], "seed": [0]}})
    static = sw.cells[1]
    assert static.baseline == "tssm" and static.label == "STORM + static"
    assert ("var.per_sample", "true") in static.sets
    with pytest.raises(SweepError, match="unknown key"):
        parse_sweep({"grid": {"backbone": ["rssm"], "env": ["x"], "seed": [0]}, "seeds": 3})
    with pytest.raises(SweepError, match="not both"):
        parse_sweep({"methods": [{"backbone": "rssm"}],
                     "grid": {"backbone": ["rssm"], "env": ["x"], "seed": [0]}})
    with pytest.raises(SweepError, match="grid.env"):
        parse_sweep({"grid": {"backbone": ["rssm"], "seed": [0]}})
    (tmp_path / "bad.yaml").write_text("grid: [")
    assert sweep_cli.main([str(tmp_path / "bad.yaml")]) == 2


def test_experiment_files_parse_and_state_compute():
    files = sorted((REPO / "experiments").glob("*.yaml"))
    assert len(files) >= 8
    counts = {}
    for f in files:
        sw = load_sweep(f)
        assert sw.compute, f"{f.name} must state its expected compute"
        counts[sw.name] = len(sw.cells)
    assert counts["atari100k"] == 26 * 4 * 5
    assert counts["dmc-proprio"] == 18 * 2 * 5
    assert counts["dmc-vision"] == 20 * 2 * 5
    assert counts["ablation-adaptive"] == 5 * 3 * 5


def test_cvaml_ablations_share_their_reference_cells():
    """experiments/cvaml-dmc-ablations.yaml under cvaml-dmc.yaml's --root reuses its 4 reference
    methods' cells: same names, same train arguments (no conflict, nothing run twice)."""
    abl = {c.name: c for c in load_sweep(REPO / "experiments/cvaml-dmc-ablations.yaml").cells}
    main = {c.name: c for c in load_sweep(REPO / "experiments/cvaml-dmc.yaml").cells}
    shared = set(abl) & set(main)
    assert len(shared) == 4 * 7 * 20 and len(abl) - len(shared) == 7 * 7 * 20
    assert all(abl[k].train_args() == main[k].train_args() for k in shared)


def test_experiment_cells_build_valid_configs():
    """Every cell's presets, --set keys and env id are accepted by `vawm train`'s config."""
    from vawm.config import build_config
    from vawm.envs import parse_env_id

    seen = set()
    for f in sorted((REPO / "experiments").glob("*.yaml")):
        for c in load_sweep(f).cells:
            parse_env_id(c.env)
            key = (c.preset, c.sets, c.backbone, c.objective)
            if key in seen:
                continue
            seen.add(key)
            over = {"env": c.env, "backbone": c.backbone, "objective": c.objective,
                    "steps": c.steps}
            build_config(c.preset or "cpu", {k: v for k, v in over.items() if v is not None},
                         [f"{k}={v}" for k, v in c.sets])


def test_ray_capacity():
    assert ray_capacity({"CPU": 16.0, "GPU": 2.0}, 2, 0.25) == 8
    assert ray_capacity({"CPU": 16.0}, 1, 1) == 0
    assert ray_capacity({"CPU": 3.0}, 1, 0) == 3


# ---------------------------------------------------------------------------- one cell
def test_plan_command_resumes_from_checkpoint(tmp_path):
    d = tmp_path / "cell"
    cmd = ["vawm", "train"]
    assert cell_status(d) == "new"
    assert plan_command(cmd, ["--seed", "0"], d) == [*cmd, "--seed", "0", "--run-dir", str(d),
                                                     "--no-progress"]
    (d / "checkpoints").mkdir(parents=True)
    assert cell_status(d) == "partial"
    (d / "checkpoints" / "latest.pt").write_bytes(b"x")
    assert cell_status(d) == "resumable"
    assert plan_command(cmd, ["--seed", "0"], d) == [*cmd, "--resume", str(d), "--no-progress"]
    (d / "summary.json").write_text(json.dumps({"status": "finished"}))
    assert cell_status(d) == "finished"


def test_failing_cell_is_retried_then_reported(tmp_path):
    cell = parse_sweep({"grid": {"backbone": ["rssm"], "env": ["gym:CartPole-v1"],
                                 "seed": [0]}}).cells[0].to_json()
    (tmp_path / cell["name"]).mkdir(parents=True)
    (tmp_path / cell["name"] / "config.yaml").write_text("half: written\n")   # no checkpoint
    res = run_cell(cell, str(tmp_path), retries=2, train_cmd=[PY, "-c", "import sys; sys.exit(1)"])
    assert res["status"] == "failed" and res["attempts"] == 3 and "exit code 1" in res["error"]
    assert len(list((tmp_path / SWEEP_DIR / "failed").iterdir())) == 1   # moved aside once
    res = run_cell(cell, str(tmp_path), retries=2, train_cmd=[PY, "-c", "import sys; sys.exit(2)"])
    assert res["attempts"] == 4                                          # bad input: no retry
    state = json.loads((tmp_path / SWEEP_DIR / "cells" / f"{cell_key(cell['name'])}"
                        ".json").read_text())
    assert state["status"] == "failed" and [a["rc"] for a in state["attempts"]] == [1, 1, 1, 2]


FAKE_TRAIN = """
import json, sys, time
from pathlib import Path
d = Path(sys.argv[sys.argv.index("--run-dir") + 1]); d.mkdir(parents=True, exist_ok=True)
t0 = time.time(); time.sleep(1.0)
(d / "span.json").write_text(json.dumps([t0, time.time()]))
(d / "summary.json").write_text(json.dumps({"status": "finished"}))
"""


def test_a_cell_another_process_runs_is_left_to_it(tmp_path):
    import fcntl
    cell = parse_sweep({"grid": {"backbone": ["rssm"], "env": ["gym:x"], "seed": [0]}}).cells[0]
    key = cell_key(cell.name)
    lock = tmp_path / SWEEP_DIR / "locks" / f"{key}.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "a") as held:                                     # "another process"
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        res = run_cell(cell.to_json(), str(tmp_path), 0, [PY, "-c", FAKE_TRAIN])
        assert res["status"] == "busy" and not (tmp_path / cell.name).exists()
        assert not (tmp_path / SWEEP_DIR / "cells" / f"{key}.json").exists()
    res = run_cell(cell.to_json(), str(tmp_path), 0, [PY, "-c", FAKE_TRAIN])   # released
    assert res["status"] == "finished"


def test_dry_run_shows_running_cells_and_progress_and_writes_nothing(tmp_path, capsys):
    """--dry-run: a cell whose lock a sweep process holds is ``running``, unfinished cells say
    how far they got (last metrics line / budget), a totals line ends the listing; a root no
    sweep ever used is left untouched."""
    import fcntl
    f = tmp_path / "d.yaml"
    f.write_text(yaml.safe_dump({"name": "d", "defaults": {"steps": 1000},
                                 "grid": {"backbone": ["rssm"], "env": ["gym:x"],
                                          "seed": [0, 1, 2, 3]}}))
    root = tmp_path / "root"
    assert sweep_cli.main([str(f), "--root", str(root), "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].strip() == "4 new" and not root.exists()
    cells = parse_sweep(yaml.safe_load(f.read_text())).cells
    d0, d1, d2 = (root / c.name for c in cells[:3])
    write_json(d0 / "summary.json", {"status": "finished"})
    for d, step in ((d1, 400), (d2, 600)):
        (d / "checkpoints").mkdir(parents=True)
        (d / "checkpoints" / "latest.pt").write_bytes(b"x")
        (d / "metrics.jsonl").write_text(json.dumps({"env_step": step}) + "\n")
    lock = root / SWEEP_DIR / "locks" / f"{cell_key(cells[1].name)}.lock"
    lock.parent.mkdir(parents=True)
    (root / SWEEP_DIR / "locks" / f"{cell_key(cells[2].name)}.lock").touch()  # released
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert sweep_cli.main([str(f), "--root", str(root), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    listed = {ln.split("] ")[1].split()[0]: ln for ln in out if ln.strip().startswith("[")}
    assert listed[cells[1].name].strip().startswith("[running  ]")
    assert "(at 400/1,000 env steps)" in listed[cells[1].name]
    assert listed[cells[2].name].strip().startswith("[resumable]")
    assert "(at 600/1,000 env steps)" in listed[cells[2].name]
    assert "(at" not in listed[cells[0].name] + listed[cells[3].name]
    assert out[-1].strip() == "1 finished, 1 running, 1 resumable, 1 new"


def test_local_cells_run_max_concurrent_at_a_time(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"name": "c", "grid": {"backbone": ["rssm"], "env": ["gym:x"],
                                                       "seed": [0, 1, 2, 3, 4]}}))
    root = tmp_path / "root"
    assert sweep_cli.main([str(f), "--root", str(root), "--no-ray", "--max-concurrent", "0"]) == 2
    assert "--max-concurrent" in capsys.readouterr().err
    rc = sweep_cli.main([str(f), "--root", str(root), "--no-ray", "--no-progress",
                         "--max-concurrent", "2", "--train-cmd", f"{PY} -c '{FAKE_TRAIN}'"])
    assert rc == 0, capsys.readouterr().err
    spans = [json.loads((root / f"rssm/gym-x/seed{s}/span.json").read_text()) for s in range(5)]
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    running = [sum(d for _, d in events[:i + 1]) for i in range(len(events))]
    assert max(running) == 2                                          # two at once, never three


def test_cli_sequential_fallback_and_conflicts(tmp_path, monkeypatch, capsys):
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump({"name": "s", "grid": {"backbone": ["rssm"], "env": ["gym:x"],
                                                       "seed": [0, 1]}, "retries": 0}))
    root = tmp_path / "root"
    monkeypatch.setattr(sweep_cli, "ray_available", lambda: False)
    rc = sweep_cli.main([str(f), "--root", str(root), "--no-progress",
                         "--train-cmd", f"{PY} -c 'import sys; sys.exit(3)'"])
    err = capsys.readouterr().err
    assert rc == 1 and "pip install 'vawm[ray]'" in err and "2 failed" in err
    assert json.loads((root / SWEEP_DIR / "s.json").read_text())["cells"][1]["seed"] == 1
    assert sweep_cli.main([str(f), "--root", str(root), "--dry-run"]) == 0
    assert "[new      ] rssm/gym-x/seed1" in capsys.readouterr().out
    state = root / SWEEP_DIR / "cells" / "rssm__gym-x__seed0.json"
    write_json(state, {**json.loads(state.read_text()), "argv": ["--steps", "5"]})
    assert sweep_cli.main([str(f), "--root", str(root)]) == 2
    assert "other settings" in capsys.readouterr().err
    assert sweep_cli.main([str(f), "--root", str(root), "--address", "auto"]) == 2


def test_order_seed_lists_every_method_per_seed_first(tmp_path, capsys):
    f = tmp_path / "o.yaml"
    f.write_text(yaml.safe_dump({"name": "o", "grid": {"backbone": ["rssm"],
                                                       "objective": ["none", "var"],
                                                       "env": ["gym:a", "gym:b"], "seed": [0, 1]}}))
    def listed(*extra):
        assert sweep_cli.main([str(f), "--root", str(tmp_path / "r"), "--dry-run", *extra]) == 0
        return [ln.split("] ")[1].split()[0] for ln in capsys.readouterr().out.splitlines()
                if ln.strip().startswith("[")]
    grid = listed()
    assert grid[:2] == ["rssm/gym-a/seed0", "rssm/gym-a/seed1"]        # seeds innermost
    by_seed = listed("--order", "seed")
    assert by_seed == [c for c in grid if c.endswith("seed0")] + [c for c in grid if c.endswith("seed1")]


# ---------------------------------------------------------------------------- a real sweep
TINY = {"name": "tiny2x2",
        "defaults": {"preset": "tiny", "steps": 80,
                     "set": {"run.train_ratio": 8, "run.checkpoint_every": 20,
                             "run.log_every": 20, "run.eval_episodes": 1}},
        "grid": {"backbone": ["rssm"], "objective": ["none", "var"],
                 "env": ["gym:CartPole-v1"], "seed": [0, 1]},
        "retries": 1, "compute": {"total": "about a minute on 2 CPU cores"}}


def _wait_for(cond, timeout: float, proc: subprocess.Popen) -> None:
    end = time.time() + timeout
    while not cond():
        assert proc.poll() is None, "the sweep ended before the interruption point"
        assert time.time() < end, "timed out waiting for the sweep"
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.skipif(not _train_available(), reason="`vawm train` is not available yet")
def test_local_sweep_interrupted_and_resumed(tmp_path):
    f = tmp_path / "tiny.yaml"
    f.write_text(yaml.safe_dump(TINY))
    root = tmp_path / "runs"
    first, second = root / "rssm/gym-CartPole-v1/seed0", root / "rssm/gym-CartPole-v1/seed1"
    hooked = f"{PY} {Path(__file__).with_name('hooked_vawm.py')} train"   # vawm with test hooks
    cmd = [PY, "-m", "vawm.sweep", str(f), "--root", str(root), "--no-ray", "--no-progress",
           "--train-cmd", hooked]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # each cell holds still for 2 s after a periodic checkpoint, so the "first finished, second
    # resumable" window is always there to be seen, however fast the machine is
    # pytest-xdist workers ignore SIGINT and children inherit that: restore the default first
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**env, "VAWM_TEST_PAUSE_AFTER_CHECKPOINT": "2"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # interrupt once the first cell finished and the second has written a checkpoint
        _wait_for(lambda: cell_status(first) == "finished"
                  and cell_status(second) == "resumable", 240, proc)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "interrupted" in out
    assert cell_status(first) == "finished" and cell_status(second) != "finished"
    done_at = (first / "summary.json").stat().st_mtime_ns

    # resume: on Ray when it is installed (two cells at a time), else one after another
    resume = [c for c in cmd if c != "--no-ray"] if ray_available() else cmd
    res = subprocess.run(resume, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "1 already finished, 3 to run" in res.stderr
    assert ("Ray: " in res.stderr) == ray_available()
    for c in load_sweep(f).cells:
        assert cell_status(root / c.name) == "finished", c.name
    assert (first / "summary.json").stat().st_mtime_ns == done_at         # not redone
    log = (root / SWEEP_DIR / "logs" / "rssm__gym-CartPole-v1__seed0.log").read_text()
    assert log.count("\n=== ") == 1
    state = json.loads((root / SWEEP_DIR / "cells" / "rssm__gym-CartPole-v1__seed1.json")
                       .read_text())
    assert [a["resumed"] for a in state["attempts"]] == [False, True]     # resumed, not restarted

    from vawm.report.cli import main as report_main
    assert report_main([str(root), "--out", str(tmp_path / "report"), "--no-figures"]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "4/4 expected runs finished" in md and "| gym:CartPole-v1 |" in md


FAKE_RUN = """
import json, sys
from pathlib import Path
d = Path(sys.argv[sys.argv.index("--run-dir") + 1]); d.mkdir(parents=True, exist_ok=True)
(d / "checkpoints").mkdir(); (d / "checkpoints" / "latest.pt").write_bytes(b"x" * 1000)
(d / "config.yaml").write_text("seed: 0\\n")
(d / "metrics.jsonl").write_text(json.dumps({"env_step": 10}) + "\\n")
(d / "summary.json").write_text(json.dumps({"status": "finished", "args": sys.argv[1:]}))
"""


def test_archive_keeps_records_and_a_fresh_root_continues_from_it(tmp_path, capsys):
    """--archive: a cell finished before (or while) the sweep runs has its plain files and
    bookkeeping copied (no checkpoints); a fresh root restores them and runs nothing again; an
    unfinished run in the way is moved aside, not lost; clashing archives and nested
    directories are refused with exit 2."""
    f = tmp_path / "a.yaml"
    f.write_text(yaml.safe_dump({"name": "a", "grid": {"backbone": ["rssm"], "env": ["gym:x"],
                                                       "seed": [0, 1, 2]}, "retries": 0}))
    root, archive = tmp_path / "root", tmp_path / "archive"
    fake = ["--no-ray", "--no-progress", "--train-cmd", f"{PY} -c '{FAKE_RUN}'"]
    assert sweep_cli.main([str(f), "--root", str(root), "--only", "seed=0", *fake]) == 0
    assert sweep_cli.main([str(f), "--root", str(root), "--archive", str(archive), *fake]) == 0
    assert "0 finished cell(s) restored, 1 archived" in capsys.readouterr().err
    for s in range(3):
        cell = archive / f"rssm/gym-x/seed{s}"
        assert sorted(p.name for p in cell.iterdir()) == ["config.yaml", "metrics.jsonl",
                                                          "summary.json"]
        assert (cell / "summary.json").read_text() == (root / cell.relative_to(archive)
                                                       / "summary.json").read_text()
        assert (archive / SWEEP_DIR / "cells" / f"rssm__gym-x__seed{s}.json").is_file()
    assert json.loads((archive / SWEEP_DIR / "a.json").read_text())["name"] == "a"

    fresh = tmp_path / "fresh"
    (fresh / "rssm/gym-x/seed1").mkdir(parents=True)
    (fresh / "rssm/gym-x/seed1/metrics.jsonl").write_text("{}\n")     # an unfinished run
    assert sweep_cli.main([str(f), "--root", str(fresh), "--archive", str(archive),
                           "--dry-run"]) == 0
    assert "3 more finished in the archive" in capsys.readouterr().out
    never = ["--no-ray", "--no-progress", "--train-cmd", f"{PY} -c 'import sys; sys.exit(3)'"]
    assert sweep_cli.main([str(f), "--root", str(fresh), "--archive", str(archive), *never]) == 0
    err = capsys.readouterr().err
    assert "3 finished cell(s) restored, 0 archived" in err and "0 to run" in err
    aside = list((fresh / SWEEP_DIR / "superseded").iterdir())
    assert len(aside) == 1 and (aside[0] / "metrics.jsonl").read_text() == "{}\n"

    state = archive / SWEEP_DIR / "cells" / "rssm__gym-x__seed2.json"
    write_json(state, {**json.loads(state.read_text()), "argv": ["--steps", "5"]})
    assert sweep_cli.main([str(f), "--root", str(tmp_path / "r3"), "--archive", str(archive),
                           *never]) == 2
    assert "other settings" in capsys.readouterr().err
    assert sweep_cli.main([str(f), "--root", str(root), "--archive", str(root / "a")]) == 2
    assert "--archive" in capsys.readouterr().err
