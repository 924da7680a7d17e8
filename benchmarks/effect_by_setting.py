"""One design run in several settings: does A's effect over B change with the setting?

    python benchmarks/effect_by_setting.py --name cvaml_dmc_cpu_by_noise \
        --setting "no noise=docs/results/cvaml_dmc_cpu/scores.csv" \
        --setting "action noise 0.3=docs/results/cvaml_dmc_cpu_noisy/scores.csv" \
        --pair gauss-cvaml-1-0:gauss-vaml-1-0 --pair gauss-cvaml-1-1:gauss-vaml-1-1

Reads the ``scores.csv`` that ``vawm report`` writes for each setting (finished runs' final
evaluation returns) and, for every pair ``A:B`` and setting, writes per task the mean return of
A and of B over seeds and their difference, and over all tasks P(A > B) (Agarwal et al. 2021,
the same estimator and stratified-bootstrap 95% CI as the report and ``sweep_row.py``) over the
seeds finished by both on every task. Prints a markdown table and writes
``benchmarks/results/<name>.json``. A setting missing a method or a task is an error, not a
silently smaller table.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from vawm.report import aggregate

RESULTS = Path(__file__).resolve().parent / "results"


def read_scores(path: Path) -> dict[str, dict[str, dict[int, float]]]:
    """method -> env -> seed -> final score of the finished runs of a report's scores.csv."""
    out: dict = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            if row["status"] == "finished" and row["score"] not in ("", None):
                out.setdefault(row["method"], {}).setdefault(row["env"], {})[
                    int(row["seed"])] = float(row["score"])
    return out


def compare(scores: dict, a: str, b: str, reps: int) -> dict:
    """Per task means and difference of A and B, and P(A > B) over tasks with its CI."""
    for m in (a, b):
        if m not in scores:
            raise ValueError(f"no finished run of {m!r}; methods: {', '.join(sorted(scores))}")
    tasks = sorted(set(scores[a]) & set(scores[b]))
    if not tasks:
        raise ValueError(f"{a} and {b} share no task")
    per_task = {}
    for t in tasks:
        ma, mb = np.mean(list(scores[a][t].values())), np.mean(list(scores[b][t].values()))
        per_task[t] = {"a": float(ma), "b": float(mb), "diff": float(ma - mb),
                       "seeds_a": len(scores[a][t]), "seeds_b": len(scores[b][t])}
    xa, seeds_a = aggregate.rectangular(scores[a], tasks)
    xb, seeds_b = aggregate.rectangular(scores[b], tasks)
    p = aggregate.improvement_probabilities({"p": (xa, xb)}, reps=reps).get("p")
    return {"tasks": per_task, "p_improvement": p, "seeds_a": seeds_a, "seeds_b": seeds_b}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True, help="benchmarks/results/<name>.json")
    ap.add_argument("--setting", action="append", required=True, metavar="LABEL=SCORES_CSV")
    ap.add_argument("--pair", action="append", required=True, metavar="A:B")
    ap.add_argument("--reps", type=int, default=10_000, help="bootstrap resamples")
    args = ap.parse_args(argv)
    if not args.name or Path(args.name).name != args.name:
        print(f"effect_by_setting: --name is a file stem (benchmarks/results/<name>.json), got "
              f"{args.name!r}", file=sys.stderr)
        return 2
    settings = {}
    for s in args.setting:
        label, sep, path = s.partition("=")
        if not sep or not Path(path).is_file():
            print(f"effect_by_setting: --setting wants LABEL=path/to/scores.csv, got {s!r}",
                  file=sys.stderr)
            return 2
        settings[label] = (path, read_scores(Path(path)))
    pairs = [p.split(":") for p in args.pair]
    if any(len(p) != 2 for p in pairs):
        print("effect_by_setting: --pair wants A:B", file=sys.stderr)
        return 2
    out = {"settings": {k: v[0] for k, v in settings.items()}, "pairs": []}
    lines = ["| A vs B | setting | per task: A − B (A, B; mean over seeds) | P(A > B) [95% CI] |",
             "|---|---|---|---|"]
    for a, b in pairs:
        for label, (_, scores) in settings.items():
            try:
                r = compare(scores, a, b, args.reps)
            except ValueError as e:
                print(f"effect_by_setting: {label}: {e}", file=sys.stderr)
                return 2
            out["pairs"].append({"a": a, "b": b, "setting": label, **r})
            tasks = "; ".join(f"{t}: {v['diff']:+.1f} ({v['a']:.1f}, {v['b']:.1f})"
                              for t, v in r["tasks"].items())
            p = r["p_improvement"]
            lines.append(f"| {a} vs {b} | {label} | {tasks} | "
                         f"{p[0]:.2f} [{p[1]:.2f}, {p[2]:.2f}] |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(out, indent=1) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
