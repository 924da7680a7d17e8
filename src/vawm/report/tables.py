"""Table math and markdown in the papers' layouts (VaR, anon. 2025, Tables 1–4).

Inputs are plain dicts: ``means[method][task]`` is the mean final score over the seeds that
finished, ``flags[method][task]`` is True where some expected seeds are missing (the cell gets a
``†``). Every function here is pure so tests can check the numbers by hand.
"""

from __future__ import annotations

import json
import math
import re
from importlib import resources

import numpy as np

MISSING = "—"
FLAG = "†"


# ---------------------------------------------------------------------------- math
def human_normalized(score: float, random: float, human: float) -> float:
    """(score - random) / (human - random)."""
    return (score - random) / (human - random)


# The possible returns of tasks whose bounds are fixed by the task (rewards per step times the
# episode's step limit): DMC's 1,000 steps of rewards in [0, 1] (Tassa et al. 2018), CartPole's
# +1 per step up to 500 (v1) or 200 (v0) steps.
RETURN_RANGES = {"dmc": (0.0, 1000.0), "dmc-pixels": (0.0, 1000.0),
                 "gym:CartPole-v1": (0.0, 500.0), "gym:CartPole-v0": (0.0, 200.0)}


def return_range(env: str) -> tuple[float, float] | None:
    """(min, max) return of a task with fixed bounds (``RETURN_RANGES``: by id, else by suite)."""
    return RETURN_RANGES.get(env) or RETURN_RANGES.get(env.partition(":")[0] if ":" in env
                                                       else "gym")


def pct_change(new: float | None, base: float | None) -> float | None:
    """Change of ``new`` against ``base`` in % of ``|base|`` (``None`` if undefined)."""
    if new is None or base is None or base == 0 or not math.isfinite(base):
        return None
    return 100.0 * (new - base) / abs(base)


def mean_median(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return float(np.mean(values)), float(np.median(values))


def atari_aggregates(means: dict[str, float], refs: dict[str, dict]) -> dict:
    """Human-normalised mean and median over games, and the count of superhuman games
    (score > human). Games without a reference are left out and listed."""
    hns = {g: human_normalized(s, refs[g]["random"], refs[g]["human"])
           for g, s in means.items() if g in refs}
    mean, median = mean_median(list(hns.values()))
    return {"mean": mean, "median": median, "superhuman": sum(v > 1.0 for v in hns.values()),
            "games": len(hns), "unreferenced": sorted(set(means) - set(refs)), "hns": hns}


def seed_stats(values: list[float]) -> tuple[float, float, int]:
    """Mean, sample std (0 for one seed) and count."""
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0, len(a)


# ---------------------------------------------------------------------------- reference data
def load_atari_reference() -> dict:
    """The shipped Random/Human scores of the 26 Atari 100k games (and VaR (anon. 2025)'s columns)."""
    text = resources.files("vawm.report").joinpath("data/atari_reference.json").read_text()
    return json.loads(text)


def _norm_name(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


def reference_game(task: str, refs: dict[str, dict]) -> str | None:
    """Match an env's task (``Pong``, ``pong``, ``ms_pacman``) to a reference game name."""
    key = _norm_name(task.removesuffix("NoFrameskip-v4").removesuffix("-v5"))
    return next((g for g in refs if _norm_name(g) == key), None)


def task_title(task: str) -> str:
    """``ball_in_cup-catch`` -> ``Ball In Cup Catch`` (VaR, anon. 2025, Table 2's task names)."""
    return " ".join(w.capitalize() for w in re.split(r"[-_ ]+", task) if w)


# ---------------------------------------------------------------------------- formatting
def fmt_num(x: float | None, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return MISSING
    return f"{x:.{digits}f}"


def arrow_pct(p: float | None) -> str:
    """``↑40.8%`` / ``↓11.8%`` / ``±0.0%``."""
    if p is None:
        return "n/a"
    a = "↑" if p > 0.05 else "↓" if p < -0.05 else "±"
    return f"{a}{abs(p):.1f}%"


def arrow_abs(d: float | None, digits: int = 2) -> str:
    """``↑0.24`` / ``↓3`` for differences of aggregates."""
    if d is None:
        return "n/a"
    a = "↑" if d > 0 else "↓" if d < 0 else "±"
    return f"{a}{abs(d):.{digits}f}"


def with_delta(value: float | None, base: float | None, digits: int = 1, flag: bool = False,
               is_baseline: bool = False) -> str:
    """A table cell: ``1233.2 (↑40.8%)``, with ``†`` when seeds are missing."""
    if value is None:
        return MISSING
    s = fmt_num(value, digits) + (FLAG if flag else "")
    if not is_baseline and base is not None:
        s += f" ({arrow_pct(pct_change(value, base))})"
    return s


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table; the first column left-aligned, the rest right."""
    esc = lambda c: str(c).replace("|", "\\|")
    lines = ["| " + " | ".join(esc(h) for h in header) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _head(methods: list[str], labels: dict[str, str]) -> list[str]:
    return [labels.get(m, m) for m in methods]


# ---------------------------------------------------------------------------- VaR (anon. 2025) Table 1
def atari_table(means: dict[str, dict[str, float]], flags: dict[str, dict[str, bool]],
                methods: list[str], baselines: dict[str, str | None], refs: dict[str, dict],
                games: list[str], labels: dict[str, str] | None = None) -> tuple[str, dict]:
    """VaR (anon. 2025) Table 1: Game | Random | Human | one column per method (a method with a
    baseline shows its % change against it); then Superhuman, Mean and Median of the
    human-normalised scores with absolute changes. Returns (markdown, aggregates by method)."""
    labels = labels or {}
    agg = {m: atari_aggregates(means.get(m, {}), refs) for m in methods}
    rows = []
    for g in games:
        ref = refs.get(g)
        row = [g, fmt_num(ref["random"]) if ref else "?", fmt_num(ref["human"]) if ref else "?"]
        for m in methods:
            b = baselines.get(m)
            row.append(with_delta(means.get(m, {}).get(g), means.get(b, {}).get(g) if b else None,
                                  flag=flags.get(m, {}).get(g, False), is_baseline=b is None))
        rows.append(row)
    n_games = sum(g in refs for g in games)

    def agg_row(name: str, key: str, rnd: str, hum: str, digits: int) -> list[str]:
        row = [name, rnd, hum]
        for m in methods:
            v, b = agg[m][key], baselines.get(m)
            if v is None:
                row.append(MISSING)
                continue
            s = f"{v:.{digits}f}" + (FLAG if agg[m]["games"] < n_games else "")
            bv = agg[b][key] if b and b in agg else None
            if b is not None and bv is not None:
                s += f" ({arrow_abs(v - bv, digits)})"
            row.append(s)
        return row

    rows.append(agg_row("Superhuman (↑)", "superhuman", "0", "N/A", 0))
    rows.append(agg_row("Mean (↑)", "mean", "0.00", "1.00", 2))
    rows.append(agg_row("Median (↑)", "median", "0.00", "1.00", 2))
    return markdown_table(["Game", "Random", "Human", *_head(methods, labels)], rows), agg


# ---------------------------------------------------------------------------- VaR (anon. 2025) Table 2
def fmt_steps(n: int | None) -> str:
    """500000 -> ``500K``, 1000000 -> ``1M``."""
    if n is None:
        return "?"
    if n >= 1_000_000 and n % 100_000 == 0:
        return f"{n / 1e6:g}M"
    if n >= 1000 and n % 100 == 0:
        return f"{n / 1e3:g}K"
    return str(n)


def dmc_table(columns: list[tuple[str, str]], means: dict[tuple[str, str], dict[str, float]],
              flags: dict[tuple[str, str], dict[str, bool]], baselines: dict[str, str | None],
              tasks: dict[str, list[str]], steps: dict[tuple[str, str], str],
              labels: dict[str, str] | None = None) -> str:
    """VaR (anon. 2025) Table 2: Task | one column per (input, method), e.g. (Visual, rssm); a row of
    environment steps; per-task scores (% against the baseline); Task mean and Task median.
    ``tasks[group]`` lists the tasks expected of a group; a task it lacks shows ``—``."""
    labels = labels or {}
    header = ["Task"] + [f"{grp}: {labels.get(m, m)}" for grp, m in columns]
    rows = [["Environment steps"] + [steps.get(c, "?") for c in columns]]
    all_tasks = list(dict.fromkeys(t for grp, _ in columns for t in tasks.get(grp, [])))
    for t in all_tasks:
        row = [task_title(t)]
        for grp, m in columns:
            if t not in tasks.get(grp, []):
                row.append("-")
                continue
            b = baselines.get(m)
            base = means.get((grp, b), {}).get(t) if b else None
            row.append(with_delta(means.get((grp, m), {}).get(t), base, digits=0,
                                  flag=flags.get((grp, m), {}).get(t, False),
                                  is_baseline=b is None))
        rows.append(row)
    stats = {c: mean_median(list(means.get(c, {}).values())) for c in columns}
    for i, name in ((0, "Task mean"), (1, "Task median")):
        row = [name]
        for grp, m in columns:
            b = baselines.get(m)
            base = stats.get((grp, b), (None, None))[i] if b else None
            full = len(means.get((grp, m), {})) >= len(tasks.get(grp, []))
            row.append(with_delta(stats[(grp, m)][i], base, digits=0, flag=not full,
                                  is_baseline=b is None))
        rows.append(row)
    return markdown_table(header, rows)


# ---------------------------------------------------------------------------- VaR (anon. 2025) Table 3
def ablation_table(means: dict[str, dict[str, float]], flags: dict[str, dict[str, bool]],
                   methods: list[str], baselines: dict[str, str | None], tasks: list[str],
                   labels: dict[str, str] | None = None, digits: int = 1) -> str:
    """VaR (anon. 2025) Table 3: one row per method, one column per task, % against the baseline."""
    labels = labels or {}
    rows = []
    for m in methods:
        b = baselines.get(m)
        row = [labels.get(m, m)]
        for t in tasks:
            base = means.get(b, {}).get(t) if b else None
            row.append(with_delta(means.get(m, {}).get(t), base, digits=digits,
                                  flag=flags.get(m, {}).get(t, False), is_baseline=b is None))
        rows.append(row)
    return markdown_table(["Method", *tasks], rows)


# ---------------------------------------------------------------------------- other suites
def generic_table(stats: dict[str, dict[str, tuple[float, float, int]]],
                  flags: dict[str, dict[str, bool]], methods: list[str],
                  baselines: dict[str, str | None], tasks: list[str],
                  labels: dict[str, str] | None = None, aggregate: bool = True) -> str:
    """Task | per method: mean ± std (seeds), % of the mean against the baseline; with more
    than one task and ``aggregate``, Task mean and Task median rows (only meaningful when the
    tasks' returns share a scale)."""
    labels = labels or {}
    rows = []
    for t in tasks:
        row = [t]
        for m in methods:
            s = stats.get(m, {}).get(t)
            if s is None:
                row.append(MISSING)
                continue
            cell = f"{s[0]:.1f} ± {s[1]:.1f} (n={s[2]})" + (FLAG if flags.get(m, {}).get(t) else "")
            b = baselines.get(m)
            bs = stats.get(b, {}).get(t) if b else None
            if bs is not None:
                cell += f" ({arrow_pct(pct_change(s[0], bs[0]))})"
            row.append(cell)
        rows.append(row)
    if len(tasks) > 1 and aggregate:
        agg = {m: mean_median([s[0] for t, s in stats.get(m, {}).items() if t in tasks])
               for m in methods}
        for i, name in ((0, "Task mean"), (1, "Task median")):
            row = [name]
            for m in methods:
                b = baselines.get(m)
                full = len(stats.get(m, {})) >= len(tasks)
                row.append(with_delta(agg[m][i], agg[b][i] if b in agg else None,
                                      flag=not full, is_baseline=b is None))
            rows.append(row)
    return markdown_table(["Task", *_head(methods, labels)], rows)


# ---------------------------------------------------------------------------- VaR (anon. 2025) Table 4
def cost_table(rows: list[dict], extra: dict[str, dict[str, str]] | None = None) -> str:
    """VaR (anon. 2025) Table 4 from benchmark rows ``{backbone, objective, env, s_per_update,
    peak_rss_mb, peak_gpu_mb, device}`` of one (env, device): one column per method; each value
    with its overhead in % against the same backbone's ``none`` (for seconds per update the
    benchmark's own ``overhead_pct``, a median of paired ratios, when given). ``extra`` adds rows
    (name -> method -> text), e.g. the mean score on Atari 100k."""
    by_method: dict[str, dict] = {}
    for r in rows:
        by_method[_label(r)] = r
    methods = sorted(by_method, key=lambda m: (m.split("+")[0], "+" in m, m))
    fields = [("peak_gpu_mb", "GPU memory (MB)", 0), ("peak_rss_mb", "CPU memory, peak RSS (MB)",
                                                          0),
              ("s_per_update", "Seconds per update", 3)]
    out = []
    for key, name, digits in fields:
        if all(by_method[m].get(key) is None for m in methods):
            continue
        row = [name]
        for m in methods:
            v = by_method[m].get(key)
            base_m = m.split("+")[0]
            bv = by_method.get(base_m, {}).get(key) if m != base_m else None
            paired = by_method[m].get("overhead_pct") if key == "s_per_update" else None
            if v is None:
                row.append(MISSING)
            elif paired is not None:     # the benchmark's median of paired ratios
                row.append(f"{fmt_num(float(v), digits)} ({float(paired):+.1f}%)")
            elif bv is None:
                row.append(fmt_num(float(v), digits))
            else:
                row.append(f"{fmt_num(float(v), digits)} ({pct_change(float(v), float(bv)):+.1f}%)")
        out.append(row)
    for name, vals in (extra or {}).items():
        out.append([name] + [vals.get(m, MISSING) for m in methods])
    return markdown_table(["Methods", *methods], out)


def _label(r: dict) -> str:
    b, o = str(r.get("backbone", "?")), str(r.get("objective", "none"))
    return b if o == "none" else f"{b}+{o}"
