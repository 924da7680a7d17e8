"""The README row of a head-to-head sweep (methods x tasks x seeds, generic layout).

    python benchmarks/sweep_row.py runs/head-to-head --name head_to_head_cpu \
        --command "vawm sweep experiments/objectives-head-to-head-cpu.yaml" \
        --cost benchmarks/results/objective_cost_cpu.json

Reads the sweep's runs as ``vawm report`` does (``vawm.report``), and writes
``benchmarks/results/<name>.json``: per method and task the final evaluation return (mean ± std
over seeds), the IQM over tasks and seeds of range-normalised returns (``(return - min) / (max -
min)`` with each task's possible returns, ``vawm.report.tables.RETURN_RANGES``) with a 95%
stratified-bootstrap CI, the probability of improvement over the method's baseline, the cost per
update from an ``objective_cost.py`` record, any further ``--pair A:B`` probabilities P(A > B), the
commits the runs recorded, and a ``readme`` row.
Only complete methods count towards the aggregate (the seeds finished on every task); what is
missing is stated in the row.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from readme_table import provenance, publish

from vawm.report import aggregate, tables
from vawm.report.runs import collect
from vawm.report.sections import gather, normalised_matrices


def cost_by_objective(path: Path | None) -> dict[str, float]:
    """objective -> time per update over ``none``'s in % (``objective_cost.py``'s rows)."""
    if path is None:
        return {}
    rows = json.loads(path.read_text())["rows"]
    return {r["objective"]: r.get("overhead_pct", 0.0) for r in rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path)
    p.add_argument("--name", required=True)
    p.add_argument("--command", required=True)
    p.add_argument("--what", default="every objective head to head on `rssm`")
    p.add_argument("--cost", type=Path, help="an objective_cost.py record (benchmarks/results)")
    p.add_argument("--order", type=int, default=45)
    p.add_argument("--reps", type=int, default=5000)
    p.add_argument("--table", action="store_true",
                   help="also print the method x task table with every seed's score and the IQM "
                        "(the layout of docs/latent.md)")
    p.add_argument("--pair", action="append", default=[], metavar="A:B",
                   help="also P(A > B) for methods A, B (repeatable), beside each method's "
                        "P(> its baseline)")
    args = p.parse_args(argv)
    experiments, _ = collect(args.root)
    if len(experiments) != 1:
        print(f"sweep_row: expected one experiment under {args.root}, found "
              f"{len(experiments)}", file=sys.stderr)
        return 2
    exp = experiments[0]
    g = gather(exp)
    bounds = {e: b for e in g.envs if (b := tables.return_range(e)) is not None}
    mats, envs, seeds = normalised_matrices(exp, g, bounds)
    est = aggregate.interval_estimates(mats, reps=args.reps, seed=0)
    first = exp.methods[0]
    pairs = {m: (mats[m], mats[exp.baselines.get(m) or first]) for m in mats
             if m != first and (exp.baselines.get(m) or first) in mats}
    poi = aggregate.improvement_probabilities(pairs, reps=args.reps, seed=0)
    extra = {}
    for spec in args.pair:
        a, _, b = spec.partition(":")
        if a not in exp.methods or b not in exp.methods:
            print(f"sweep_row: --pair {spec}: methods are {', '.join(exp.methods)}",
                  file=sys.stderr)
            return 2
        if a in mats and b in mats:
            extra[spec] = (mats[a], mats[b])
    extra_p = aggregate.improvement_probabilities(extra, reps=args.reps, seed=0)
    cost = cost_by_objective(args.cost)
    objective = {r.method: r.objective for r in exp.runs}
    per = {}
    for m in exp.methods:
        per[m] = {"label": exp.labels.get(m, m), "objective": objective.get(m),
                  "tasks": {e: {"mean": float(np.mean(list(v.values()))),
                                "std": float(np.std(list(v.values()), ddof=1 if len(v) > 1 else 0)),
                                "seeds": sorted(v),
                                "scores": [float(v[k]) for k in sorted(v)]}
                            for e, v in g.scores.get(m, {}).items()},
                  "iqm": est.get(m, {}).get("iqm"), "mean_norm": est.get(m, {}).get("mean"),
                  "p_improvement": poi.get(m), "cost_pct": cost.get(objective.get(m))}
    n_done = sum(len(v) for d in g.scores.values() for v in d.values())
    commits = sorted({r.summary.get("versions", {}).get("commit", "unrecorded")
                      for r in exp.runs if r.summary})
    parts = []
    for m in exp.methods:
        d = per[m]
        if d["iqm"] is None:
            parts.append(f"{d['label']}: incomplete")
            continue
        s = f"{d['label']}: IQM {d['iqm'][0]:.3f} [{d['iqm'][1]:.3f}, {d['iqm'][2]:.3f}]"
        if d["p_improvement"]:
            pt, lo, hi = d["p_improvement"]
            s += f", P(> {per[exp.baselines.get(m) or first]['label']}) {pt:.2f} [{lo:.2f}, {hi:.2f}]"
        if d["cost_pct"] is not None and m != first:
            s += f", {d['cost_pct']:+.1f}% time per update"
        parts.append(s)
    for spec, (pt, lo, hi) in extra_p.items():
        a, _, b = spec.partition(":")
        parts.append(f"P({per[a]['label']} > {per[b]['label']}) {pt:.2f} [{lo:.2f}, {hi:.2f}]")
    result = (f"range-normalised returns over {len(envs)} tasks x seeds "
              f"({', '.join(envs)}; 95% stratified-bootstrap CIs): " + "; ".join(parts)
              + f". {n_done}/{len(exp.expected)} runs finished; per-task table in the report")
    budgets = sorted({c.steps for c in exp.expected if c.steps})
    out = {"command": args.command, "seeds": sorted({c.seed for c in exp.expected}),
           "budget": f"{', '.join(map(str, budgets))} env steps per run",
           **provenance(None), "run_commits": commits, "methods": per,
           "pairs": {k: list(v) for k, v in extra_p.items()},
           "readme": {"what": args.what, "command": args.command, "result": result,
                      "order": args.order}}
    if args.table:
        print(seed_table(per, exp.methods, g.envs))
    return publish(args.name, out)


def seed_table(per: dict, methods: list[str], envs: list[str]) -> str:
    """Markdown: per method and task mean ± std (every seed's score), and the IQM with its CI."""
    head = "| method | " + " | ".join(f"{e} (per seed)" for e in envs) + \
        " | IQM, range-normalised [95% CI] |"
    lines = [head, "|" + "---|" * (len(envs) + 2)]
    for m in methods:
        d, cells = per[m], []
        for e in envs:
            t = d["tasks"].get(e)
            cells.append("—" if t is None else f"{t['mean']:.1f} ± {t['std']:.1f} ("
                         + ", ".join(f"{x:.1f}" for x in t["scores"]) + ")")
        iqm = "incomplete" if d["iqm"] is None else \
            f"{d['iqm'][0]:.3f} [{d['iqm'][1]:.3f}, {d['iqm'][2]:.3f}]"
        lines.append(f"| {d['label']} | " + " | ".join(cells) + f" | {iqm} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
