"""Figures of a sweep: value error against temperature, one panel per rank (Voelcker et al. 2025 Fig. 2), and
the cliff-walk counterpart (Voelcker et al. 2025 Fig. 9). Lines are means over seeds, bands 95%
t-intervals."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vawm.garnet.experiment import SweepConfig  # noqa: E402
from vawm.garnet.summary import aggregate  # noqa: E402
from vawm.garnet.train import parse_loss  # noqa: E402

STYLE = {               # loss -> (colour, line style); calibrated = dashed twin of its VAML
    "mle": ("0.45", "-"),
    "itervaml": ("black", ":"),
    "vaml-1-0": ("tab:blue", "-"),
    "cvaml-1-0": ("tab:blue", "--"),
    "vaml-1-1": ("tab:red", "-"),
    "cvaml-1-1": ("tab:red", "--"),
}


def _style(loss: str, i: int) -> tuple[str, str]:
    return STYLE.get(loss, (f"C{i % 10}", "-."))


def panel_grid(rows: list[dict], experiment: str, metrics: Sequence[tuple[str, str]],
               losses: Sequence[str], ranks: Sequence[int], xs: Sequence[float], xlabel: str,
               path: Path, logx: bool, title: str) -> None:
    """One row of panels per metric, one column per rank; mean line and CI band per loss."""
    width = max(3.2 * len(ranks), 7.5)
    fig, axes = plt.subplots(len(metrics), len(ranks), squeeze=False, sharex=True,
                             figsize=(width, 2.8 * len(metrics) + 0.9))
    for mi, (metric, ylabel) in enumerate(metrics):
        agg = aggregate(rows, experiment, metric)
        for ri, rank in enumerate(ranks):
            ax = axes[mi][ri]
            for li, loss in enumerate(losses):
                pts = [(x, *agg[loss, rank, x][:2]) for x in xs if (loss, rank, x) in agg]
                if not pts:
                    continue
                x, m, h = zip(*pts, strict=True)
                h = [0.0 if hh != hh else hh for hh in h]                 # nan -> no band
                colour, ls = _style(loss, li)
                ax.plot(x, m, ls, color=colour, label=parse_loss(loss).label, lw=1.5)
                lo = [a - b for a, b in zip(m, h, strict=True)]
                hi = [a + b for a, b in zip(m, h, strict=True)]
                ax.fill_between(x, lo, hi, color=colour, alpha=0.15, lw=0)
            if logx:
                ax.set_xscale("log")
            if experiment == "cliff" and ri == 0 and mi == 0:
                ax.invert_xaxis()           # shared x: stochasticity grows to the right
            if metric in ("value_error", "model_value_error"):
                ax.set_yscale("log")
            if mi == 0:
                ax.set_title(f"rank {rank}")
            if mi == len(metrics) - 1:
                ax.set_xlabel(xlabel)
            if ri == 0:
                ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3, which="both", lw=0.5)
    handles, labels = axes[0][0].get_legend_handles_labels()
    ncol = min(len(labels), max(2, int(width / 2.4)))
    rows_legend = -(-len(labels) // ncol)
    fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05 + 0.2 * rows_legend / fig.get_figheight(), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sweep(cfg: SweepConfig, rows: list[dict], out: Path) -> list[Path]:
    """Write the sweep's PNGs into ``out``; returns their paths."""
    paths = []
    if "garnet" in cfg.experiments:
        gs = cfg.garnet
        path = out / "garnet_value_error.png"
        panel_grid(rows, "garnet", [("value_error", "value error (rel. L2)")], cfg.losses,
                   gs.ranks, gs.temps, "temperature tau", path, True,
                   f"Garnet n={gs.states}, k={gs.successors}: value error vs temperature "
                   f"({len(cfg.seeds)} seeds, mean and 95% CI)")
        paths.append(path)
        path = out / "garnet_model.png"
        panel_grid(rows, "garnet", [("model_entropy", "model entropy (nats)"),
                                    ("model_value_error", "value error of (I-gP_hat)^-1 r")],
                   cfg.losses, gs.ranks, gs.temps, "temperature tau", path, True,
                   "Garnet: the learned models")
        paths.append(path)
    if "cliff" in cfg.experiments:
        cs = cfg.cliff
        path = out / "cliff.png"
        panel_grid(rows, "cliff", [("value_error", "value error (rel. L2)"),
                                   ("regret_start", "regret V*(s0) - V^pi(s0)")],
                   cfg.losses, cs.ranks, cs.probs, "p (intended move)", path, False,
                   f"5x5 cliff-walk, greedy policy iteration ({cs.iterations} iterations, "
                   f"{len(cfg.seeds)} seeds)")
        paths.append(path)
    return paths
