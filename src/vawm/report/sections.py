"""The paper-layout sections of a report: what each experiment scored and what is missing
(``Gathered``), then one function per layout (VaR, anon. 2025, Tables 1-3, Fig. 2a; a generic table)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from vawm.report import aggregate, curves, tables
from vawm.report.runs import Cell, Experiment, Run, split_env

SUITE_GROUPS = {"dmc-pixels": "Visual", "dmc": "Proprio"}


@dataclass
class Gathered:
    """Final scores of an experiment and what is missing from it."""
    scores: dict[str, dict[str, dict[int, float]]] = field(default_factory=dict)  # m -> env -> seed
    missing: dict[str, dict[str, list[tuple[int, str]]]] = field(default_factory=dict)
    envs: list[str] = field(default_factory=list)
    runs: dict[tuple[str, str, int], Run] = field(default_factory=dict)
    steps: dict[tuple[str, str], set] = field(default_factory=dict)  # (method, env) -> budgets

    def mean(self, m: str, env: str) -> float | None:
        s = self.scores.get(m, {}).get(env)
        return float(np.mean(list(s.values()))) if s else None

    def flagged(self, m: str, env: str) -> bool:
        return bool(self.missing.get(m, {}).get(env))


def missing_reason(cell: Cell, run: Run | None) -> str:
    """Why an expected cell has no final score, e.g. ``unfinished at 60,000/100,000 env steps``."""
    state = cell.state or {}
    failed = state.get("status") == "failed"
    n = len(state.get("attempts") or [])
    if run is None:
        return f"failed after {n} attempt(s), no run directory" if failed else "not started"
    if run.status == "finished":
        return "finished without eval_return_mean in summary.json"
    at = f"at {run.env_steps:,}" if run.env_steps is not None else "before its first log line"
    budget = run.steps or cell.steps
    of = f"/{budget:,} env steps" if budget and run.env_steps is not None else ""
    return f"{'failed after ' + str(n) + ' attempt(s)' if failed else 'unfinished'} {at}{of}"


def gather(exp: Experiment) -> Gathered:
    """Scores per (method, env, seed) of the finished runs, and the reasons for the others."""
    g = Gathered()
    g.runs = {(r.method, r.env, r.seed): r for r in exp.runs}
    for c in exp.expected:
        if c.env not in g.envs:
            g.envs.append(c.env)
        run = g.runs.get((c.method, c.env, c.seed))
        budget = (run.steps if run else None) or c.steps
        if budget:
            g.steps.setdefault((c.method, c.env), set()).add(int(budget))
        if run is not None and run.status == "finished" and run.score is not None:
            g.scores.setdefault(c.method, {}).setdefault(c.env, {})[c.seed] = run.score
        else:
            g.missing.setdefault(c.method, {}).setdefault(c.env, []).append(
                (c.seed, missing_reason(c, run)))
    return g


def missing_notes(exp: Experiment, g: Gathered) -> list[str]:
    """One line per (method, env) with missing seeds."""
    per = {}
    for c in exp.expected:
        per.setdefault((c.method, c.env), []).append(c.seed)
    lines = []
    for m in exp.methods:
        for env in g.envs:
            miss = g.missing.get(m, {}).get(env)
            if not miss:
                continue
            n_all = len(per.get((m, env), []))
            detail = "; ".join(f"seed {s}: {why}" for s, why in miss)
            lines.append(f"- {exp.labels.get(m, m)} on `{env}`: {n_all - len(miss)}/{n_all} "
                         f"seeds finished ({detail})")
    return lines


# ---------------------------------------------------------------------------- layouts
def _game_map(envs: list[str], refs: dict) -> dict[str, str]:
    return {e: tables.reference_game(split_env(e)[1], refs) or split_env(e)[1] for e in envs}


def _ordered(names: list[str], order: list[str]) -> list[str]:
    pos = {n: i for i, n in enumerate(order)}
    return sorted(dict.fromkeys(names), key=lambda n: (pos.get(n, len(order)), n))


def atari_section(exp: Experiment, g: Gathered, refs_all: dict, reps: int, seed: int,
                  figdir: Path | None) -> tuple[list[str], dict]:
    """VaR (anon. 2025) Table 1, the published comparison, and IQM / optimality gap with 95% CIs."""
    refs = refs_all["games"]
    gmap = _game_map(g.envs, refs)
    games = _ordered(list(gmap.values()), list(refs))
    means = {m: {gmap[e]: g.mean(m, e) for e in g.envs if g.mean(m, e) is not None}
             for m in exp.methods}
    flags = {m: {gmap[e]: g.flagged(m, e) for e in g.envs} for m in exp.methods}
    table, agg = tables.atari_table(means, flags, exp.methods, exp.baselines, refs, games,
                                    exp.labels)
    out = [table, ""]
    unref = [x for x in games if x not in refs]
    if unref:
        out.append(f"Games without Random/Human reference scores (left out of the normalised "
                   f"rows): {', '.join(unref)}.")
    n_ref = sum(x in refs for x in games)
    out.append(f"Scores: mean over seeds of the final evaluation return. Normalised rows over "
               f"the {n_ref} game(s) run, of the 26 of Atari 100k; "
               f"{tables.FLAG} = fewer seeds or games than expected (see missing runs).")
    pub = refs_all.get("published", {})
    rows = []
    for m in exp.methods:
        if m in pub and agg[m]["mean"] is not None:
            p = pub[m]
            rows.append([f"{exp.labels.get(m, m)} vs {p['label']}", f"{agg[m]['games']}/26",
                         f"{agg[m]['mean']:.2f} / {p['mean']:.2f}",
                         f"{agg[m]['median']:.2f} / {p['median']:.2f}",
                         f"{agg[m]['superhuman']} / {p['superhuman']}"])
    if rows:
        out += ["", "Against VaR (anon. 2025) Table 1 (ours / published):", "",
                tables.markdown_table(["Method", "Games", "Mean", "Median", "Superhuman"], rows)]
    out += ["", *iqm_section(exp, g, gmap, refs, reps, seed, figdir)]
    return out, agg


def iqm_section(exp: Experiment, g: Gathered, gmap: dict[str, str], refs: dict, reps: int,
                seed: int, figdir: Path | None) -> list[str]:
    """IQM, optimality gap, mean and median of human-normalised scores (Atari: Random and Human
    reference scores) with stratified-bootstrap 95% CIs over the games every method finished."""
    bounds = {e: (refs[gmap[e]]["random"], refs[gmap[e]]["human"]) for e in g.envs
              if gmap[e] in refs}
    return normalised_section(exp, g, bounds, reps, seed, figdir, "human-normalised", "game",
                              gmap)


def normalised_matrices(exp: Experiment, g: Gathered, bounds: dict[str, tuple[float, float]]
                        ) -> tuple[dict[str, np.ndarray], list[str], dict[str, list[int]]]:
    """Per method a (seeds x tasks) matrix of (score - lo) / (hi - lo) over the tasks in
    ``bounds`` that every method with results finished, using each method's seeds finished on
    all of them. Returns the matrices (methods with no such seed left out), the tasks and each
    method's seeds."""
    methods = [m for m in exp.methods if g.scores.get(m)]
    envs = [e for e in g.envs if e in bounds and all(g.scores.get(m, {}).get(e) for m in methods)]
    mats, seeds = {}, {}
    for m in methods if envs else []:
        per_task = {e: {s: tables.human_normalized(v, *bounds[e])
                        for s, v in g.scores[m][e].items()} for e in envs}
        mat, seeds[m] = aggregate.rectangular(per_task, envs)
        if seeds[m]:
            mats[m] = mat
    return mats, envs, seeds


def normalised_section(exp: Experiment, g: Gathered, bounds: dict[str, tuple[float, float]],
                       reps: int, seed: int, figdir: Path | None, unit: str, task: str = "task",
                       names: dict[str, str] | None = None) -> list[str]:
    """IQM, optimality gap, mean and median over tasks and seeds of scores normalised per task
    as (score - lo) / (hi - lo), with stratified-bootstrap 95% CIs (rliable), over the tasks in
    ``bounds`` every method finished and each method's seeds finished on all of them."""
    out = ["#### Aggregate scores with 95% stratified-bootstrap CIs (rliable)", ""]
    if not aggregate.rliable_available():
        return out + [f"rliable is not installed: {aggregate.INSTALL_HINT}"]
    mats, envs, seeds = normalised_matrices(exp, g, bounds)
    if not envs:
        return out + [f"No {task} has a finished run of every method."]
    notes = [f"{exp.labels.get(m, m)}: " + (f"seeds {', '.join(map(str, ss))}" if ss else
                                           f"no seed finished every {task}, left out")
             for m, ss in seeds.items()]
    est = aggregate.interval_estimates(mats, reps=reps, seed=seed)
    fmt = lambda t: f"{t[0]:.3f} [{t[1]:.3f}, {t[2]:.3f}]"                # noqa: E731
    rows = [[exp.labels.get(m, m), fmt(e["iqm"]), fmt(e["og"]), fmt(e["mean"]), fmt(e["median"]),
             f"{mats[m].shape[0]} x {mats[m].shape[1]}"] for m, e in est.items()]
    out.append(tables.markdown_table(
        ["Method", "IQM (↑)", "Optimality gap (↓)", "Mean (↑)", "Median (↑)", f"seeds x {task}s"],
        rows))
    left = sorted({(names or {}).get(e, e) for e in g.envs if e not in envs})
    out += ["", f"{unit.capitalize()} scores over the {len(envs)} {task}(s) every method "
                f"finished" + (f" (left out: {', '.join(left)})" if left else "")
            + f"; {reps} bootstrap replications; runs used: " + "; ".join(notes) + "."]
    if figdir is not None and est:
        p = curves.plot_intervals(est, figdir / f"{_slug(exp.name)}_aggregates.png", exp.labels,
                                  xlabel=f"{unit} score")
        out += ["", _img(f"Aggregate {unit} scores, 95% CIs", p, figdir.parent)]
    return out


def dmc_section(exp: Experiment, g: Gathered) -> list[str]:
    """VaR (anon. 2025) Table 2: visual and proprio columns per method, task mean and median."""
    ref = json.loads(resources.files("vawm.report").joinpath("data/dmc_reference.json")
                     .read_text())
    order = list(dict.fromkeys(ref["visual"] + ref["proprio"]))
    columns, tasks, means, flags, steps = [], {}, {}, {}, {}
    for suite, grp in SUITE_GROUPS.items():
        envs = [e for e in g.envs if split_env(e)[0] == suite]
        if not envs:
            continue
        task_of = {e: split_env(e)[1] for e in envs}
        tasks[grp] = _ordered(list(task_of.values()), order)
        for m in exp.methods:
            if not any((m, e) in {(c.method, c.env) for c in exp.expected} for e in envs):
                continue
            columns.append((grp, m))
            means[(grp, m)] = {task_of[e]: g.mean(m, e) for e in envs
                               if g.mean(m, e) is not None}
            flags[(grp, m)] = {task_of[e]: g.flagged(m, e) for e in envs}
            budgets = set().union(*(g.steps.get((m, e), set()) for e in envs))
            steps[(grp, m)] = "/".join(tables.fmt_steps(b) for b in sorted(budgets)) or "?"
    out = [tables.dmc_table(columns, means, flags, exp.baselines, tasks, steps, exp.labels), ""]
    out.append(f"Scores: mean over seeds of the final evaluation return; {tables.FLAG} = fewer "
               f"seeds or tasks than expected; - = task not part of that benchmark.")
    for suite, grp in SUITE_GROUPS.items():
        key = "visual" if suite == "dmc-pixels" else "proprio"
        if grp in tasks:
            absent = [t for t in ref[key] if t not in tasks[grp]]
            if absent:
                out.append(f"{grp}: {len(tasks[grp])} task(s) run; not run of VaR (anon. 2025) Table 2's "
                           f"{len(ref[key])}: {', '.join(absent)}.")
            pub = ref["published"][key]
            items = [f"{v['label']} {v['mean']} / {v['median']}" for v in pub.values()]
            out.append(f"{grp}, published task mean / median (VaR, anon. 2025, Table 2): "
                       + ", ".join(items) + ".")
    return out


# suites whose tasks all score on one scale (DMC: 0..1000), so a mean over tasks means something
SHARED_SCALE_SUITES = ("dmc", "dmc-pixels")


def ablation_section(exp: Experiment, g: Gathered, refs: dict) -> list[str]:
    """VaR (anon. 2025) Table 3: one row per method, one column per task."""
    atari = all(split_env(e)[0] == "atari100k" for e in g.envs)
    name = _game_map(g.envs, refs) if atari else {e: e for e in g.envs}
    tasks = [name[e] for e in g.envs]
    means = {m: {name[e]: g.mean(m, e) for e in g.envs if g.mean(m, e) is not None}
             for m in exp.methods}
    flags = {m: {name[e]: g.flagged(m, e) for e in g.envs} for m in exp.methods}
    return [tables.ablation_table(means, flags, exp.methods, exp.baselines, tasks, exp.labels),
            "", f"Scores: mean over seeds of the final evaluation return; % against the "
                f"baseline row; {tables.FLAG} = fewer seeds than expected.", "",
            "The same runs with their spread over seeds:", "", *generic_section(exp, g)]


def capacity_section(exp: Experiment, g: Gathered, refs: dict, figdir: Path | None,
                     xlabel: str = "world-model size") -> list[str]:
    """VaR (anon. 2025) Fig. 2a/2b: the ablation table of every (size, method) cell, then final
    return against each method's ``size`` (world-model size, 2a; image size, 2b: ``xlabel``) per
    task, one line per method family (backbone + objective)."""
    out = ablation_section(exp, g, refs)
    sizes = list(dict.fromkeys(exp.sizes[m] for m in exp.methods if m in exp.sizes))
    if figdir is None or not sizes:
        return out
    fam_label: dict[str, str] = {}
    for m in exp.methods:           # a family's name: its first label without the size word
        f = exp.families.get(m, m)
        label = exp.labels.get(m)
        if f not in fam_label:
            fam_label[f] = (label.replace(exp.sizes.get(m, ""), "").strip() if label else f)
    one_suite = len({split_env(e)[0] for e in g.envs}) == 1
    panels: dict[str, dict[str, list]] = {}
    for e in g.envs:
        per: dict[str, list] = {}
        for m in exp.methods:
            s = g.scores.get(m, {}).get(e)
            if not s or m not in exp.sizes:
                continue
            mean, std, n = tables.seed_stats(list(s.values()))
            per.setdefault(exp.families.get(m, m), []).append(
                (sizes.index(exp.sizes[m]), mean, std, n))
        if per:
            panels[split_env(e)[1] if one_suite else e] = per
    if not panels:
        return out
    path = curves.plot_capacity(panels, figdir / f"{_slug(exp.name)}_{_slug(exp.layout)}.png",
                                sizes, fam_label, xlabel=xlabel)
    fig = "2a" if xlabel == "world-model size" else "2b"
    return [*out, "", _img(f"final return against {xlabel} (mean ± std over seeds)",
                           path, figdir.parent),
            "", f"Final evaluation return against {xlabel} (VaR, anon. 2025, Fig. {fig}): "
                "mean ± std over the seeds that finished, one line per method family."]


def generic_section(exp: Experiment, g: Gathered) -> list[str]:
    stats = {m: {e: tables.seed_stats(list(v.values())) for e, v in g.scores.get(m, {}).items()}
             for m in exp.methods}
    flags = {m: {e: g.flagged(m, e) for e in g.envs} for m in exp.methods}
    shared = all(split_env(e)[0] in SHARED_SCALE_SUITES for e in g.envs)
    note = "" if shared or len(g.envs) < 2 else (
        " No task mean or median: these tasks' returns are on different scales.")
    return [tables.generic_table(stats, flags, exp.methods, exp.baselines, g.envs, exp.labels,
                                 aggregate=shared),
            "", f"Final evaluation return: mean ± std over seeds (n); % of the mean against "
                f"the baseline; {tables.FLAG} = fewer seeds or tasks than expected.{note}"]


def generic_stats_section(exp: Experiment, g: Gathered, reps: int, seed: int,
                          figdir: Path | None = None) -> list[str]:
    """Per-task IQM over seeds with bootstrap 95% CIs, and each method's probability of
    improvement over its baseline (or the first method) across tasks (rliable; scale-free);
    where every task's possible returns are known (``tables.RETURN_RANGES``), IQM, optimality
    gap, mean and median over tasks and seeds of range-normalised returns."""
    out = ["#### IQM per task and probability of improvement (rliable, 95% bootstrap CIs)", ""]
    if not aggregate.rliable_available():
        return out + [f"rliable is not installed: {aggregate.INSTALL_HINT}"]
    fmt = lambda t: f"{t[0]:.1f} [{t[1]:.1f}, {t[2]:.1f}]"                # noqa: E731
    rows = []
    for m in exp.methods:
        cells = [exp.labels.get(m, m)]
        for e in g.envs:
            v = list(g.scores.get(m, {}).get(e, {}).values())
            cells.append(fmt(aggregate.iqm_per_task(np.array(v, float), reps, seed))
                         if len(v) >= 2 else (f"{v[0]:.1f} (1 seed)" if v else "—"))
        rows.append(cells)
    out.append(tables.markdown_table(["Method", *g.envs], rows))
    first = exp.methods[0] if exp.methods else None
    pairs, names = {}, {}
    for m in exp.methods:
        base = exp.baselines.get(m) or first
        if base is None or base == m:
            continue
        envs = [e for e in g.envs if len(g.scores.get(m, {}).get(e, {})) >= 2
                and len(g.scores.get(base, {}).get(e, {})) >= 2]
        if not envs:
            continue
        x, _ = aggregate.rectangular(g.scores[m], envs)
        y, _ = aggregate.rectangular(g.scores[base], envs)
        if x.size and y.size:
            pairs[m] = (x, y)
            names[m] = (base, len(envs), x.shape[0], y.shape[0])
    est = aggregate.improvement_probabilities(pairs, reps=reps, seed=seed)
    if est:
        prow = [[exp.labels.get(m, m), exp.labels.get(names[m][0], names[m][0]),
                 f"{p:.2f} [{lo:.2f}, {hi:.2f}]", f"{names[m][1]} tasks, {names[m][2]} vs "
                 f"{names[m][3]} seeds"] for m, (p, lo, hi) in est.items()]
        out += ["", tables.markdown_table(["Method", "over", "P(method > over)", "runs"], prow)]
    out += ["", f"IQM over each task's seeds (with one seed: that score); P(X > Y) per task is the "
                f"probability that a run of X beats a run of Y, averaged over the tasks both "
                f"have (with the seeds present on all of them); {reps} bootstrap replications."]
    bounds = {e: b for e in g.envs if (b := tables.return_range(e)) is not None}
    if len(bounds) >= 2:      # tasks with known possible returns: one scale across them
        lines = normalised_section(exp, g, bounds, reps, seed, figdir, "range-normalised")
        out += ["", *lines, "", "Range-normalised: (return - min) / (max - min) with each task's "
                "possible returns (" + "; ".join(f"{e}: {lo:g} to {hi:g}" for e, (lo, hi)
                                                 in bounds.items()) + ")."]
    return out


# ---------------------------------------------------------------------------- curves


def _relpath(p: Path, start: Path) -> str:
    import os
    return os.path.relpath(p.resolve(), start.resolve())


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_") or "exp"


def _img(caption: str, path: Path, base: Path) -> str:
    return f"![{caption}]({_relpath(path, base)})"
