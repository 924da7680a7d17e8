"""`vawm garnet`: outputs, bit-for-bit reproducibility, one-line errors with exit code 2."""

import csv

import pytest

from vawm.garnet.cli import main

TINY = ["--seeds", "2", "--states", "8", "--successors", "3", "--ranks", "2,8",
        "--temps", "0.05,20", "--steps", "40", "--cliff-probs", "1.0,0.6", "--cliff-ranks", "3",
        "--cliff-iterations", "2", "--cliff-steps", "15", "--no-progress"]


def _run(tmp_path, name, *extra):
    out = tmp_path / name
    assert main(["--out", str(out), *TINY, *extra]) == 0
    return out


def test_two_runs_give_identical_csv_and_all_outputs(tmp_path, capsys):
    a = _run(tmp_path, "a", "--workers", "1")
    b = _run(tmp_path, "b", "--workers", "1", "--no-plots")
    assert (a / "results.csv").read_bytes() == (b / "results.csv").read_bytes()
    for name in ("results.csv", "summary.md", "config.json", "garnet_value_error.png",
                 "garnet_model.png", "cliff.png"):
        assert (a / name).stat().st_size > 0
    rows = list(csv.DictReader(open(a / "results.csv")))
    # 5 losses x (2 ranks x 2 temps x 2 seeds  +  1 rank x 2 probs x 2 seeds x 2 iterations)
    assert len(rows) == 5 * (8 + 8)
    assert {r["experiment"] for r in rows} == {"garnet", "cliff"}
    assert all(r["value_error"] not in ("", "nan") for r in rows)
    summary = (a / "summary.md").read_text()
    assert "(1,1)-CVAML" in summary and "Paired difference" in summary


def test_worker_processes_give_the_same_numbers(tmp_path):
    one = _run(tmp_path, "one", "--workers", "1", "--no-plots", "--experiments", "garnet")
    two = _run(tmp_path, "two", "--workers", "2", "--no-plots", "--experiments", "garnet")
    assert (one / "results.csv").read_bytes() == (two / "results.csv").read_bytes()


def test_a_different_seed_changes_the_numbers(tmp_path):
    a = _run(tmp_path, "a", "--workers", "1", "--no-plots", "--experiments", "garnet")
    b = _run(tmp_path, "b", "--workers", "1", "--no-plots", "--experiments", "garnet",
             "--seed-start", "5")
    assert (a / "results.csv").read_bytes() != (b / "results.csv").read_bytes()


@pytest.mark.parametrize("flags", [
    ["--ranks", "0,2"], ["--temps", "-1"], ["--losses", "muzero"], ["--gamma", "1.5"],
    ["--cliff-probs", "1.2"], ["--samples", "1"], ["--successors", "60"], ["--steps", "x"],
    ["--experiments", "atari"], ["--dtype", "float16"],
])
def test_bad_flags_exit_2_with_one_line(tmp_path, capsys, flags):
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "x"), *flags])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vawm garnet: error:")
    assert not (tmp_path / "x").exists()
