"""Aggregates over seeds (mean and t-based 95% CI), paired comparisons, the CSV and the markdown
summary of a sweep. Numbers are reported as the runs give them; nothing is filtered."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from scipy import stats

from vawm.garnet.experiment import SweepConfig
from vawm.garnet.train import parse_loss

COLUMNS = ("experiment", "loss", "rank", "temperature", "p_intended", "seed", "iteration",
           "steps", "value_error", "value_rmse", "model_value_error", "model_kl",
           "model_entropy", "env_entropy", "env_value_var", "regret_start", "regret_mean")
PAIRS = (("vaml-1-0", "cvaml-1-0"), ("vaml-1-1", "cvaml-1-1"))


def write_csv(path: Path, rows: Iterable[dict]) -> None:
    """All rows, all columns; floats with repr (round-trip exact, so reruns compare bit for bit)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        for row in rows:
            w.writerow([_fmt(row.get(c, "")) for c in COLUMNS])


def _fmt(x: object) -> str:
    return repr(x) if isinstance(x, float) else str(x)


def mean_ci(xs: Sequence[float], level: float = 0.95) -> tuple[float, float, int]:
    """Mean and half-width of the t-interval over seeds (nan half-width for one value)."""
    xs = [x for x in xs]
    n = len(xs)
    mean = sum(xs) / n
    if n < 2:
        return mean, math.nan, n
    var = sum((x - mean) ** 2 for x in xs) / (n - 1)
    return mean, stats.t.ppf(0.5 + level / 2, n - 1) * math.sqrt(var / n), n


def x_key(experiment: str) -> str:
    return "temperature" if experiment == "garnet" else "p_intended"


def final_rows(rows: Iterable[dict], experiment: str) -> list[dict]:
    """Rows of one experiment; for the cliff only the last policy-iteration step."""
    rows = [r for r in rows if r["experiment"] == experiment]
    if experiment == "cliff" and rows:
        last = max(r["iteration"] for r in rows)
        rows = [r for r in rows if r["iteration"] == last]
    return rows


def aggregate(rows: Iterable[dict], experiment: str, metric: str) -> dict:
    """{(loss, rank, x): (mean, ci_halfwidth, n)} over seeds."""
    cells = defaultdict(list)
    for r in final_rows(rows, experiment):
        cells[r["loss"], r["rank"], r[x_key(experiment)]].append(r[metric])
    return {k: mean_ci(v) for k, v in cells.items()}


def paired(rows: Iterable[dict], experiment: str, metric: str, a: str, b: str) -> dict:
    """{(rank, x): (mean, ci, n)} of metric(a) - metric(b), paired by seed."""
    val = {}
    for r in final_rows(rows, experiment):
        val[r["loss"], r["rank"], r[x_key(experiment)], r["seed"]] = r[metric]
    diffs = defaultdict(list)
    for (loss, rank, x, seed), v in val.items():
        if loss == a and (b, rank, x, seed) in val:
            diffs[rank, x].append(v - val[b, rank, x, seed])
    return {k: mean_ci(v) for k, v in diffs.items()}


def _cell(m: float, h: float) -> str:
    return f"{m:.3g} ± {h:.2g}" if not math.isnan(h) else f"{m:.3g}"


def _table(agg: dict, losses: Sequence[str], rank: int, xs: Sequence[float], xname: str) -> list:
    lines = [f"| loss \\ {xname} | " + " | ".join(f"{x:g}" for x in xs) + " |",
             "|---|" + "---|" * len(xs)]
    for loss in losses:
        cells = [_cell(*agg[loss, rank, x][:2]) if (loss, rank, x) in agg else "" for x in xs]
        lines.append(f"| {parse_loss(loss).label} | " + " | ".join(cells) + " |")
    return lines


def _verdict(m: float, h: float) -> str:
    if math.isnan(h):
        return "n/a"
    if m - h > 0:
        return "calibrated lower"
    if m + h < 0:
        return "calibrated higher"
    return "no difference"


def _pair_lines(rows: list[dict], experiment: str, cfg: SweepConfig, ranks: Sequence[int],
                xs: Sequence[float]) -> list[str]:
    xname = x_key(experiment)
    lines = []
    for a, b in PAIRS:
        if a not in cfg.losses or b not in cfg.losses:
            continue
        d = paired(rows, experiment, "value_error", a, b)
        lines += ["", f"Paired difference of the value error, {parse_loss(a).label} minus "
                  f"{parse_loss(b).label} (mean ± 95% CI over seeds; > 0: the calibrated loss "
                  "is better):", "",
                  f"| rank \\ {xname} | " + " | ".join(f"{x:g}" for x in xs) + " |",
                  "|---|" + "---|" * len(xs)]
        for rank in ranks:
            cells = [_cell(*d[rank, x][:2]) if (rank, x) in d else "" for x in xs]
            lines.append(f"| {rank} | " + " | ".join(cells) + " |")
        verdicts = defaultdict(int)
        for v in d.values():
            verdicts[_verdict(v[0], v[1])] += 1
        lines += ["", "Cells: " + ", ".join(f"{k}: {v}" for k, v in sorted(verdicts.items()))]
    return lines


def summary_markdown(cfg: SweepConfig, rows: list[dict], wall_clock_s: float | None,
                     workers: int) -> str:
    """The markdown summary: settings, tables of means ± CI, paired calibration comparisons."""
    lines = ["# Garnet lab results", "",
             "Value error = ||V - V_true|| / ||V_true|| of the *learned* value table, mean ± "
             "half-width of the t-based 95% CI over seeds.", "",
             f"- seeds: {list(cfg.seeds)}", f"- losses: {list(cfg.losses)}",
             f"- training: {cfg.train}", f"- dtype (training): {cfg.dtype}",
             f"- values learned on r / max|r|: {cfg.scale_rewards}"]
    if wall_clock_s is not None:
        lines.append(f"- wall-clock: {wall_clock_s:.1f} s with {workers} worker process(es)")
    nan = sum(1 for r in rows if isinstance(r["value_error"], float)
              and math.isnan(r["value_error"]))
    lines.append(f"- non-finite value errors: {nan}")
    for exp in cfg.experiments:
        settings = cfg.garnet if exp == "garnet" else cfg.cliff
        xs = settings.temps if exp == "garnet" else settings.probs
        lines += ["", f"## {exp}", "", f"Settings: {settings}", ""]
        metrics = (("value_error", "Value error"), ("model_entropy", "Model entropy (nats)"))
        if exp == "cliff":
            metrics += (("regret_start", "Regret at the start state, V*(s0) - V^pi(s0), of the "
                         "final greedy policy"),)
            lines.append(f"Cliff rows: last policy-iteration step ({settings.iterations}); the "
                         "value error is that of the last evaluated policy.")
        for metric, title in metrics:
            agg = aggregate(rows, exp, metric)
            for rank in settings.ranks:
                lines += ["", f"### {title}, rank {rank}", ""]
                lines += _table(agg, cfg.losses, rank, xs, x_key(exp))
        lines += _pair_lines(rows, exp, cfg, settings.ranks, xs)
    return "\n".join(lines) + "\n"
