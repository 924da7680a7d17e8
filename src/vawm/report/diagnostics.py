"""Diagnostics a run logs, summarised per method and task late in training (Voelcker et al. 2025
App. C.3, Fig. 5: the Gaussian model's entropy and the VAML loss)."""

from __future__ import annotations

from pathlib import Path

from vawm.report import curves, tables
from vawm.report.runs import Experiment
from vawm.report.sections import Gathered

# logged diagnostics summarised per method and task late in training (Voelcker et al. 2025
# App. C.3, Fig. 5: CVAML should give the Gaussian model a higher entropy than VAML, with no
# noticeable difference in the VAML error): key -> (title, digits)
LATE_DIAGNOSTICS = {
    "wm/model_entropy": ("model entropy (nats)", 1),
    "vaml/uncalibrated": ("VAML loss without the calibration term (comparable across methods)", 3),
    "vaml/loss": ("VAML loss as trained (CVAML: minus s^2/n)", 3),
}


def late_mean(rows: list[dict], key: str, budget: int | None) -> float | None:
    """Mean of ``key`` over a run's log rows in the second half of its env-step budget (of the
    steps it reached, without a budget); ``None`` if it logged none there."""
    x, y = curves.series(rows, key)
    if not len(x):
        return None
    half = (budget or x.max()) / 2
    late = y[x >= half]
    return float(late.mean()) if late.size else None


def diagnostics_section(exp: Experiment, g: Gathered, metrics: dict[Path, list[dict]]
                        ) -> list[str]:
    """Per diagnostic of ``LATE_DIAGNOSTICS`` that finished runs log: task x method, the mean
    over each run's second half of training, mean ± std over seeds (n), and the difference of
    the means to the method's baseline."""
    out = []
    for key, (title, digits) in LATE_DIAGNOSTICS.items():
        stats: dict[str, dict[str, tuple[float, float, int]]] = {}
        for m in exp.methods:
            for e in g.envs:
                vals = [v for s in g.scores.get(m, {}).get(e, {})
                        if (r := g.runs[(m, e, s)]).path in metrics
                        and (v := late_mean(metrics[r.path], key, r.steps)) is not None]
                if vals:
                    stats.setdefault(m, {})[e] = tables.seed_stats(vals)
        if not stats:
            continue
        methods = [m for m in exp.methods if m in stats]
        rows = []
        for e in g.envs:
            row = [e]
            for m in methods:
                st = stats[m].get(e)
                if st is None:
                    row.append(tables.MISSING)
                    continue
                cell = (f"{st[0]:.{digits}f} ± {st[1]:.{digits}f} (n={st[2]})"
                        + (tables.FLAG if g.flagged(m, e) else ""))
                b = exp.baselines.get(m)
                if b in stats and e in stats[b]:
                    cell += f" ({tables.arrow_abs(st[0] - stats[b][e][0], digits)})"
                row.append(cell)
            rows.append(row)
        out += [f"**{title}** (`{key}`)", "",
                tables.markdown_table(["Task", *(exp.labels.get(m, m) for m in methods)], rows),
                ""]
    if out:
        out.append("Mean of each finished run's logged values over the second half of its "
                   "env-step budget; mean ± std over seeds (n); in brackets the difference of "
                   "the means to the method's baseline; " + tables.FLAG + " = fewer seeds than "
                   "expected.")
    return out
