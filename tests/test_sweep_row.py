"""benchmarks/sweep_row.py's per-seed table: every seed's score, in seed order, and the IQM."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
spec = importlib.util.spec_from_file_location("sweep_row", ROOT / "benchmarks/sweep_row.py")
sweep_row = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sweep_row)


def test_seed_table_lists_every_seed_and_marks_missing_and_incomplete():
    per = {"a": {"label": "A", "iqm": [0.5, 0.25, 0.75],
                 "tasks": {"t:1": {"mean": 2.0, "std": 1.0, "scores": [1.0, 3.0]},
                           "t:2": {"mean": 10.0, "std": 0.0, "scores": [10.0]}}},
           "b": {"label": "B", "iqm": None,
                 "tasks": {"t:1": {"mean": 4.0, "std": 0.0, "scores": [4.0]}}}}
    lines = sweep_row.seed_table(per, ["a", "b"], ["t:1", "t:2"]).splitlines()
    assert lines[0] == "| method | t:1 (per seed) | t:2 (per seed) | IQM, range-normalised [95% CI] |"
    assert lines[1] == "|---|---|---|---|"
    assert lines[2] == "| A | 2.0 ± 1.0 (1.0, 3.0) | 10.0 ± 0.0 (10.0) | 0.500 [0.250, 0.750] |"
    assert lines[3] == "| B | 4.0 ± 0.0 (4.0) | — | incomplete |"
