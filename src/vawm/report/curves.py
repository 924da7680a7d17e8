"""Curves over training: return vs env steps, and the value-alignment diagnostics of VaR (anon. 2025)
Fig. 8 and 12 (L_dyn, L_var, beta_var), as mean and 95% CI over seeds.

Each run's logged values are averaged into bins of env steps (gaps between logged bins are
interpolated, nothing is extrapolated past a run's last point); the seeds are then averaged per
bin, with a Student-t 95% interval over the seeds that reached it.
"""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import numpy as np

DIAGNOSTICS = (("wm/loss_dyn", "L_dyn"), ("var/loss", "L_var"), ("var/beta", "β_var"),
               ("tempo/w_mean", "TEMPO weight"),
               # Voelcker et al. 2025 Fig. 5: the Gaussian model's entropy and the VAML loss
               # (without the calibration term, so that VAML and CVAML runs compare)
               ("wm/model_entropy", "model entropy (nats)"),
               ("vaml/uncalibrated", "VAML loss (uncalibrated)"))


def series(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(env_step, value) of the rows that logged ``key``."""
    pts = [(r["env_step"], r[key]) for r in rows
           if key in r and "env_step" in r and r[key] is not None]
    if not pts:
        return np.zeros(0), np.zeros(0)
    a = np.asarray(pts, dtype=float)
    return a[:, 0], a[:, 1]


def binned(steps: np.ndarray, values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mean of ``values`` per bin of ``steps`` (bins ``[edges[i], edges[i+1])``, the last one
    closed); bins between two logged bins are interpolated, others are NaN."""
    nb = len(edges) - 1
    out = np.full(nb, np.nan)
    if len(steps) == 0:
        return out
    idx = np.clip(np.searchsorted(edges, steps, side="right") - 1, 0, nb - 1)
    sums = np.bincount(idx, weights=values, minlength=nb)
    counts = np.bincount(idx, minlength=nb)
    have = counts > 0
    out[have] = sums[have] / counts[have]
    first, last = np.flatnonzero(have)[[0, -1]]
    inner = np.arange(first, last + 1)
    out[inner] = np.interp(inner, np.flatnonzero(have), out[have])
    return out


def mean_ci(mat: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column of a (seeds x bins) matrix with NaNs: the mean over the seeds present and a
    Student-t ``level`` interval (NaN where fewer than two seeds are present)."""
    from scipy import stats

    n = np.sum(~np.isnan(mat), axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(mat, axis=0)
        std = np.nanstd(mat, axis=0, ddof=1)
    half = stats.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1)) * std / np.sqrt(np.maximum(n, 1))
    half = np.where(n > 1, half, np.nan)
    return mean, mean - half, mean + half


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _band(ax, x: np.ndarray, mat: np.ndarray, label: str, color) -> None:
    mean, lo, hi = mean_ci(mat)
    ax.plot(x, mean, label=label, color=color, lw=1.5)
    ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)


def plot_grid(panels: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]], path: Path,
              ylabel: str, labels: dict[str, str], methods: list[str], ncols: int = 4,
              seeds: dict[str, int] | None = None) -> Path:
    """One panel per title (task), one line with a 95% CI band per method, one legend.

    panels: title -> (bin centres, method -> (seeds x bins) matrix). A method with fewer seeds
    with data than ``seeds[method]`` expects is named in its panel (``n: rssm 4/5``)."""
    plt, fig, axes = _panels(len(panels), ncols, 2.5)
    colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    for ax, (title, (x, per_method)) in zip(axes.flat, panels.items(), strict=False):
        short = []
        for m in methods:
            if m in per_method:
                mat = per_method[m]
                _band(ax, x, mat, labels.get(m, m), colors[m])
                n_have = int(np.any(~np.isnan(mat), axis=1).sum())
                want = (seeds or {}).get(m) or n_have
                if n_have < want:
                    short.append(f"{labels.get(m, m)} {n_have}/{want}")
        if short:       # wrapped to the panel's width (~45 characters of 6 pt)
            ax.text(0.02, 0.97, textwrap.fill("n: " + ", ".join(short), 45),
                    transform=ax.transAxes, va="top", fontsize=6)
        _style(ax, title)
    handles = [plt.Line2D([], [], color=colors[m], lw=2) for m in methods]
    return _finish(plt, fig, axes, len(panels), handles, [labels.get(m, m) for m in methods],
                   "env steps", ylabel, path)


def _panels(n: int, ncols: int, height: float):
    """A grid of ``n`` panels, at most ``ncols`` per row: (pyplot, figure, axes [rows, cols])."""
    plt = _plt()
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, height * nrows + 0.4),
                             squeeze=False)
    return plt, fig, axes


def _finish(plt, fig, axes, n: int, handles: list, names: list[str], xlabel: str, ylabel: str,
            path: Path) -> Path:
    """Blank the unused panels, label the outer axes, one legend on top, save to ``path``."""
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel(xlabel, fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel, fontsize=8)
    _legend(fig, handles, names, 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _legend(fig, handles: list, names: list[str], fontsize: int) -> None:
    """One legend above the panels, as many entries per row as the width holds (~1.7 in each);
    the figure grows by the legend's rows, then the panels are laid out below it."""
    per_row = max(1, min(len(names), 6, int(fig.get_figwidth() / 1.7)))
    fig.legend(handles, names, loc="upper center", ncol=per_row, fontsize=fontsize,
               frameon=False)
    top = 0.25 * -(-len(names) // per_row) + 0.1       # inches for the legend's rows
    fig.set_figheight(fig.get_figheight() + top)
    fig.tight_layout(rect=(0, 0, 1, 1 - top / fig.get_figheight()))


def _steps(x: float, _pos=None) -> str:
    """Tick label for env steps: 250k, 1M."""
    if abs(x) >= 1e6:
        return f"{x / 1e6:g}M"
    if abs(x) >= 1e3:
        return f"{x / 1e3:g}k"
    return f"{x:g}"


def _style(ax, title: str) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.xaxis.set_major_formatter(FuncFormatter(_steps))


def plot_diagnostics(rows: dict[str, tuple[np.ndarray, dict[str, dict[str, np.ndarray]]]],
                     path: Path, labels: dict[str, str], methods: list[str]) -> Path:
    """VaR (anon. 2025) Fig. 8/12: one row per task, one column per diagnostic (L_dyn, L_var, beta_var,
    ...), one line per method. rows: task -> (bin centres, key -> method -> (seeds x bins))."""
    plt = _plt()
    keys = [(k, name) for k, name in DIAGNOSTICS if any(k in d for _, d in rows.values())]
    nrows, ncols = len(rows), len(keys)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.4 * nrows), squeeze=False)
    colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    for r, (task, (x, per_key)) in enumerate(rows.items()):
        for c, (k, name) in enumerate(keys):
            ax = axes[r, c]
            for m in methods:
                if m in per_key.get(k, {}):
                    _band(ax, x, per_key[k][m], labels.get(m, m), colors[m])
            _style(ax, f"{task}: {name}")
    for ax in axes[-1]:
        ax.set_xlabel("env steps", fontsize=8)
    # one legend of every method drawn in any panel (a diagnostic some methods do not log,
    # e.g. a deterministic model's entropy, must not leave the others unnamed)
    shown = [m for m in methods if any(m in d for _, per_key in rows.values()
                                       for d in per_key.values())]
    _legend(fig, [plt.Line2D([], [], color=colors[m], lw=2) for m in shown],
            [labels.get(m, m) for m in shown], 7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_intervals(est: dict[str, dict[str, tuple[float, float, float]]], path: Path,
                   labels: dict[str, str], xlabel: str = "human-normalised score") -> Path:
    """Point estimates with 95% CIs of IQM, optimality gap, mean and median (rliable style)."""
    plt = _plt()
    names = {"iqm": "IQM", "og": "Optimality gap", "mean": "Mean", "median": "Median"}
    methods = list(est)
    fig, axes = plt.subplots(1, 4, figsize=(12, 0.5 + 0.45 * len(methods)), squeeze=False)
    for ax, (k, title) in zip(axes[0], names.items(), strict=True):
        for i, m in enumerate(methods):
            pt, lo, hi = est[m][k]
            ax.plot([lo, hi], [i, i], color=f"C{i % 10}", lw=6, alpha=0.5,
                    solid_capstyle="butt")
            ax.plot([pt], [i], "k|", ms=12)
        ax.set_yticks(range(len(methods)))
        ax.set_yticklabels([labels.get(m, m) for m in methods] if ax is axes[0][0] else [])
        ax.set_title(title, fontsize=9)
        ax.set_ylim(-0.6, len(methods) - 0.4)
        ax.tick_params(labelsize=7)
    axes[0][0].figure.supxlabel(xlabel, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_capacity(panels: dict[str, dict[str, list[tuple[int, float, float, int]]]], path: Path,
                  sizes: list[str], labels: dict[str, str], ylabel: str = "final return",
                  ncols: int = 4, xlabel: str = "world-model size") -> Path:
    """VaR (anon. 2025) Fig. 2a/2b: per task, final return against world-model (or image) size,
    one line per method family (e.g. DreamerV3 and DreamerV3 + Var) with mean ± std over seeds
    as error bars.

    panels: title -> family -> [(size index, mean, std, n seeds)]."""
    plt, fig, axes = _panels(len(panels), ncols, 2.6)
    families = list(dict.fromkeys(f for per in panels.values() for f in per))
    colors = {f: f"C{i % 10}" for i, f in enumerate(families)}
    for ax, (title, per) in zip(axes.flat, panels.items(), strict=False):
        for k, (f, pts) in enumerate(per.items()):
            pts = sorted(pts)
            x = np.array([p[0] for p in pts], dtype=float) + 0.04 * (k - (len(per) - 1) / 2)
            ax.errorbar(x, [p[1] for p in pts], yerr=[p[2] for p in pts], color=colors[f],
                        marker="o", ms=4, lw=1.5, capsize=3, label=labels.get(f, f))
        _style(ax, title)
        ax.set_xticks(range(len(sizes)), sizes, fontsize=7)     # after _style: categorical x
        ax.set_xlim(-0.4, len(sizes) - 0.6)
    handles = [plt.Line2D([], [], color=colors[f], lw=2, marker="o") for f in families]
    return _finish(plt, fig, axes, len(panels), handles, [labels.get(f, f) for f in families],
                   xlabel, ylabel, path)
