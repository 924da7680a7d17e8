"""Assemble ``report.md``: one section per experiment in its paper's layout, curves, the cost
table and the Garnet summary. Missing seeds and tasks are listed, never averaged over silently:
a table cell over fewer seeds than expected carries ``†`` and a note says which and why."""

from __future__ import annotations

import csv
import re
import time
from pathlib import Path

import numpy as np

from vawm.report import curves, tables
from vawm.report.diagnostics import diagnostics_section
from vawm.report.runs import (
    Experiment,
    Run,
    collect,
    find_files,
    find_run_dirs,
    load_metrics,
    read_json,
    split_env,
)
from vawm.report.sections import (
    SHARED_SCALE_SUITES,
    SUITE_GROUPS,
    Gathered,
    _img,
    _relpath,
    _slug,
    ablation_section,
    atari_section,
    capacity_section,
    dmc_section,
    gather,
    generic_section,
    generic_stats_section,
    missing_notes,
)
from vawm.sweep.spec import SIZE_LAYOUTS

N_BINS = 40
LAYOUT_ORDER = ("atari100k", "dmc", "ablation", "generic")   # VaR (anon. 2025) Tables 1, 2, 3, then others


def _matrix(runs: list[Run], key: str, edges: np.ndarray, metrics: dict) -> np.ndarray:
    rows = []
    for r in runs:
        x, y = curves.series(metrics[r.path], key)
        rows.append(curves.binned(x, y, edges))
    return np.array(rows).reshape(len(rows), len(edges) - 1)


def curve_section(exp: Experiment, g: Gathered, figdir: Path, refs: dict) -> list[str]:
    """Return vs env steps per task and aggregated, and the value-alignment diagnostics."""
    metrics = {r.path: load_metrics(r.path) for r in exp.runs}
    if not any(metrics.values()):
        return ["No metrics.jsonl with data: no curves."]
    n_eval = [sum("eval/return_mean" in row for row in rows) for rows in metrics.values() if rows]
    key = "eval/return_mean" if n_eval and min(n_eval) >= 2 else "train/episode_return"
    want = {}
    for c in exp.expected:
        want.setdefault((c.method, c.env), set()).add(c.seed)
    by = {}
    for r in exp.runs:
        by.setdefault((r.method, r.env), []).append(r)
    out, base = [], figdir.parent
    panels, diag, by_env = {}, {}, {}
    one_suite = len({split_env(e)[0] for e in g.envs}) == 1
    for e in g.envs:
        title = split_env(e)[1] if one_suite else e
        top = max([max((row.get("env_step", 0) for row in metrics[r.path]), default=0)
                   for m in exp.methods for r in by.get((m, e), [])] + [0])
        budget = max([b for m in exp.methods for b in g.steps.get((m, e), set())] + [top])
        if budget <= 0:
            continue
        edges = np.linspace(0, budget, N_BINS + 1)
        x = 0.5 * (edges[1:] + edges[:-1])
        per_m = {m: _matrix(by[(m, e)], key, edges, metrics) for m in exp.methods
                 if by.get((m, e))}
        if per_m:
            by_env[e] = (x, per_m)
            panels[title] = by_env[e]
        dk = {}
        for k, _ in curves.DIAGNOSTICS:
            dm = {m: _matrix(by[(m, e)], k, edges, metrics) for m in exp.methods
                  if by.get((m, e)) and any(k in row for r in by[(m, e)]
                                            for row in metrics[r.path])}
            if dm:
                dk[k] = dm
        if dk:
            diag[title] = (x, dk)
    name = _slug(exp.name)
    if panels:
        nseeds = {m: max((len(want.get((m, e), ())) for e in g.envs), default=0)
                  for m in exp.methods}
        p = curves.plot_grid(panels, figdir / f"{name}_returns.png", key, exp.labels,
                             exp.methods, seeds=nseeds)
        out += [_img(f"{key} vs env steps per task (mean and 95% CI over seeds)", p, base), ""]
    agg = aggregate_curves(exp, by_env, refs)
    if agg:
        ylabel = "human-normalised " + key if exp.layout == "atari100k" else key
        p = curves.plot_grid(agg, figdir / f"{name}_returns_aggregate.png", ylabel, exp.labels,
                             exp.methods, ncols=2)
        out += [_img("Aggregated over tasks (seeds with every task; 95% CI over seeds)", p, base),
                ""]
    caption = ("Value-alignment diagnostics over training (VaR, anon. 2025, Fig. 8, 12; Voelcker "
               "et al. 2025 Fig. 5)")
    if diag and len(diag) <= 6:      # few tasks: one row per task, L_dyn | L_var | beta_var
        p = curves.plot_diagnostics(diag, figdir / f"{name}_diagnostics.png", exp.labels,
                                    exp.methods)
        names = ", ".join(label for k, label in curves.DIAGNOSTICS
                          if any(k in dk for _, dk in diag.values()))
        out += [_img(f"{caption}: {names} per task", p, base), ""]
    elif diag:                       # many tasks: one grid of tasks per diagnostic
        for k, label in curves.DIAGNOSTICS:
            per_task = {t: (x, dk[k]) for t, (x, dk) in diag.items() if k in dk}
            if per_task:
                p = curves.plot_grid(per_task, figdir / f"{name}_{_slug(k)}.png", label,
                                     exp.labels, exp.methods)
                out += [_img(f"{caption}: {label} per task", p, base), ""]
    keys = ", ".join(f"`{k}`" for k, _ in curves.DIAGNOSTICS)
    out.append(f"Curves from `{key}` (returns) and the {keys} keys of each run's metrics.jsonl "
               f"(those a run logs), averaged into {N_BINS} bins of env steps; "
               f"mean and 95% CI over seeds; panels name methods with fewer seeds than expected.")
    return out


def aggregate_curves(exp: Experiment, panels: dict, refs: dict) -> dict:
    """Per-seed mean over tasks of the binned curves (human-normalised for Atari), over the
    seeds that have every task; one panel per input group (Atari: one). Other layouts get it
    when all their tasks score on one scale (DMC's 0..1000; Voelcker et al. 2025 §7 plots the
    aggregate over a domain's tasks)."""
    shared = all(split_env(e)[0] in SHARED_SCALE_SUITES for e in panels)
    if exp.layout not in ("atari100k", "dmc") and not shared or len(panels) < 2:
        return {}
    groups: dict[str, list[str]] = {}
    for e in panels:
        suite = split_env(e)[0]
        groups.setdefault("Atari 100k, human-normalised" if suite == "atari100k"
                          else SUITE_GROUPS.get(suite, suite), []).append(e)
    out = {}
    for title, envs in groups.items():
        x0 = panels[envs[0]][0]
        if not all(np.array_equal(panels[e][0], x0) for e in envs):
            continue   # different env-step budgets: bins would not line up
        per_m = {}
        for m in exp.methods:
            if not all(m in panels[e][1] for e in envs):
                continue
            seeds_by_env = [[r.seed for r in exp.runs if r.method == m and r.env == e]
                            for e in envs]
            common = sorted(set.intersection(*map(set, seeds_by_env)))
            if not common:
                continue
            rows = []
            for s in common:
                vals = []
                for e, seeds in zip(envs, seeds_by_env, strict=True):
                    row = panels[e][1][m][seeds.index(s)]  # rows follow exp.runs order
                    if split_env(e)[0] == "atari100k":
                        ref = refs.get(tables.reference_game(split_env(e)[1], refs) or "")
                        if ref is None:
                            continue
                        row = tables.human_normalized(row, ref["random"], ref["human"])
                    vals.append(row)
                rows.append(np.mean(vals, axis=0))
            per_m[m] = np.array(rows)
        if per_m:
            out[f"{title}: mean over {len(envs)} tasks"] = (x0, per_m)
    return out


# ---------------------------------------------------------------------------- extras
def load_cost_rows(paths: list[Path]) -> tuple[list[dict], list[str]]:
    """Rows of ``*cost*.json`` files: a list of rows, ``{"rows": [...]}`` or one row."""
    rows, bad = [], []
    for p in paths:
        data = read_json(p)
        items = data.get("rows") if isinstance(data, dict) and "rows" in data else data
        items = [items] if isinstance(items, dict) else items
        if not isinstance(items, list) or not all(isinstance(r, dict) and "backbone" in r
                                                  for r in items):
            bad.append(str(p))
            continue
        rows += [dict(r, _file=str(p)) for r in items]
    return rows, bad


def cost_section(rows: list[dict], atari_means: dict[str, float]) -> list[str]:
    """VaR (anon. 2025) Table 4 per (env, device), overheads against the same backbone's ``none``."""
    out = []
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((str(r.get("env", "?")), str(r.get("device", "?"))), []).append(r)
    for (env, device), rs in sorted(groups.items()):
        extra = {"Mean score on Atari 100k (ours)": {m: f"{v:.2f}" for m, v in
                                                     atari_means.items()}} if atari_means else None
        out += [f"**{env} on {device}**", "", tables.cost_table(rs, extra), ""]
    out.append("Overheads in % against the same backbone without an objective. VaR (anon. 2025) Table 4 "
               "(RTX 3090): Var costs +1.4% GPU memory and +1.1% wall-clock on DreamerV3 "
               "(4560 -> 4626 MB, 15.89 -> 16.06 h), STORM 5806 -> 5864 MB, 5.91 -> 6.04 h.")
    return out


def garnet_summaries(root: Path, exclude: Path) -> list[Path]:
    """``summary.md`` files written by ``vawm garnet --out DIR`` (a CSV beside them), outside
    run directories."""
    runs = {d.resolve() for d in find_run_dirs(root, exclude)}
    return [p for p in find_files(root, "summary.md", exclude)
            if p.parent.resolve() not in runs and any(p.parent.glob("*.csv"))]


def embed_markdown(text: str, src_dir: Path, out_dir: Path) -> str:
    """Nest a markdown file: headings two levels deeper, relative links re-pointed."""
    text = re.sub(r"^(#{1,4}) ", lambda m: "#" * min(6, len(m.group(1)) + 2) + " ", text,
                  flags=re.M)

    def relink(m: re.Match) -> str:
        target = m.group(2)
        if re.match(r"^[a-z]+:|^/|^#", target):
            return m.group(0)
        rel = Path(_relpath(src_dir / target, out_dir))
        return f"{m.group(1)}({rel.as_posix()})"

    return re.sub(r"(!?\[[^\]]*\])\(([^)\s]+)\)", relink, text)


def write_scores_csv(path: Path, experiments: list[Experiment]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["experiment", "method", "env", "seed", "status", "score", "env_steps",
                    "path"])
        for exp in experiments:
            for r in sorted(exp.runs, key=lambda r: (r.method, r.env, r.seed)):
                w.writerow([exp.name, r.method, r.env, r.seed, r.status,
                            "" if r.score is None else r.score,
                            "" if r.env_steps is None else r.env_steps, str(r.path)])


# ---------------------------------------------------------------------------- the report
def build_report(root: Path | list[Path], out: Path, reps: int = 5000, seed: int = 0,
                 figures: bool = True) -> Path:
    """Read every run under ``root`` (one directory or several, e.g. the sweeps of one study)
    and write ``out/report.md`` (+ figures, scores.csv)."""
    roots = [r.resolve() for r in (root if isinstance(root, list) else [root])]
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    figdir = out / "figures" if figures else None
    if figdir is not None and figdir.is_dir():
        for old in figdir.glob("*.png"):   # figures of an earlier report of other runs
            old.unlink()
    experiments, warns = [], []
    for r in roots:
        e, w = collect(r, exclude=out)
        experiments += e
        warns += w
    experiments.sort(key=lambda e: (LAYOUT_ORDER.index(e.layout)
                                    if e.layout in LAYOUT_ORDER else 9, e.name))
    refs_all = tables.load_atari_reference()
    refs = refs_all["games"]
    n_runs = sum(len(e.runs) for e in experiments)
    n_fin = sum(r.status == "finished" for e in experiments for r in e.runs)
    doc = ["# vawm report", "",
           f"Root{'s' * (len(roots) > 1)} {', '.join(f'`{r}`' for r in roots)}; "
           f"{time.strftime('%Y-%m-%d %H:%M')}. {n_runs} run(s), {n_fin} "
           f"finished, in {len(experiments)} experiment(s).", ""]
    if warns:
        doc += ["**Warnings**", "", *[f"- {w}" for w in warns], ""]
    atari_means: dict[str, float] = {}
    for exp in experiments:
        g = gather(exp)
        n_exp = len(exp.expected)
        n_done = sum(len(v) for d in g.scores.values() for v in d.values())
        doc += [f"## {exp.name}", ""]
        if exp.description:
            doc += [exp.description, ""]
        doc.append(f"Layout: {exp.layout}. {n_done}/{n_exp} expected runs finished"
                   + (f" (sweep manifest `{exp.source}`)." if exp.source else
                      " (no sweep manifest: every method is expected on every task and seed "
                      "seen here)."))
        doc.append("")
        if exp.compute:
            doc += ["Expected compute:", "", *[f"- {k}: {v}" for k, v in exp.compute.items()],
                    ""]
        if exp.layout == "atari100k":
            lines, agg = atari_section(exp, g, refs_all, reps, seed, figdir)
            if not atari_means:
                atari_means = {m: a["mean"] for m, a in agg.items() if a["mean"] is not None}
        elif exp.layout == "dmc":
            lines = dmc_section(exp, g)
        elif exp.layout == "ablation":
            lines = ablation_section(exp, g, refs)
        elif exp.layout in SIZE_LAYOUTS:
            lines = capacity_section(exp, g, refs, figdir, SIZE_LAYOUTS[exp.layout])
        else:
            lines = [*generic_section(exp, g), "", *generic_stats_section(exp, g, reps, seed, figdir)]
        doc += [*lines, ""]
        finished = {r.path: load_metrics(r.path) for r in g.runs.values()
                    if r.status == "finished"}
        diag = diagnostics_section(exp, g, finished)
        if diag:
            doc += ["#### Diagnostics late in training (Voelcker et al. 2025 App. C.3)", "",
                    *diag, ""]
        notes = missing_notes(exp, g)
        doc += ["#### Missing runs", "", *(notes or ["None: every expected run finished."]), ""]
        if figdir is not None:
            doc += ["#### Curves", "", *curve_section(exp, g, figdir, refs), ""]
    cost_rows, bad = load_cost_rows([p for r in roots for p in find_files(r, "*cost*.json", out)])
    if cost_rows or bad:
        doc += ["## Compute cost (VaR, anon. 2025, Table 4)", ""]
        doc += cost_section(cost_rows, atari_means) if cost_rows else []
        doc += [f"Unreadable cost file (expected rows with backbone, objective, env, "
                f"s_per_update, peak_rss_mb, peak_gpu_mb, device): {b}" for b in bad] + [""]
    for base, p in [(r, p) for r in roots for p in garnet_summaries(r, out)]:
        text = p.read_text()
        doc += [f"## Garnet (`{_relpath(p.parent, base)}`)", "",
                embed_markdown(text, p.parent, out), ""]
        for png in sorted(p.parent.glob("*.png")):   # its figures, unless the summary shows them
            if png.name not in text:
                doc += [_img(png.stem.replace("_", " "), png, out), ""]
    write_scores_csv(out / "scores.csv", experiments)
    path = out / "report.md"
    path.write_text("\n".join(doc).rstrip() + "\n")
    return path
