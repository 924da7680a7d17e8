"""Aggregate scores with stratified-bootstrap confidence intervals (rliable, Agarwal et al. 2021).

rliable needs a full (runs x tasks) matrix per method, so the report uses the tasks every
method has and, per method, the seeds finished on all of those tasks; what that leaves out is
stated next to the numbers.
"""

from __future__ import annotations

import warnings

import numpy as np

METRICS = ("iqm", "og", "mean", "median")
INSTALL_HINT = "pip install 'vawm[report]'  (rliable)"


def rliable_available() -> bool:
    try:
        import rliable  # noqa: F401
    except ImportError:
        return False
    return True


def rectangular(per_task: dict[str, dict[int, float]], tasks: list[str]
                ) -> tuple[np.ndarray, list[int]]:
    """Scores as a (seeds x tasks) matrix over the seeds present on every task.

    per_task: task -> seed -> score. Returns the matrix and the seeds used (sorted)."""
    if not tasks:
        return np.zeros((0, 0)), []
    common = set.intersection(*(set(per_task.get(t, {})) for t in tasks))
    seeds = sorted(common)
    mat = np.array([[per_task[t][s] for t in tasks] for s in seeds], dtype=float)
    return mat.reshape(len(seeds), len(tasks)), seeds


def _aggregates(x: np.ndarray) -> np.ndarray:
    from rliable import metrics
    return np.array([metrics.aggregate_iqm(x), metrics.aggregate_optimality_gap(x, 1.0),
                     metrics.aggregate_mean(x), metrics.aggregate_median(x)])


def _estimates(data: dict, fn, reps: int, ci: float, seed: int) -> tuple[dict, dict]:
    """rliable's point estimates and stratified-bootstrap intervals, reproducible: each entry of
    ``data`` is bootstrapped from ``seed`` afresh, so its interval depends on its data and the
    seed only, not on which other entries (methods, pairs) share the call, nor on the run.
    rliable's StratifiedBootstrap draws its indices from NumPy's global generator, not from the
    ``random_state`` it is given (rliable 1.2), so the global one is seeded here and restored."""
    from rliable import library as rly

    pts, cis = {}, {}
    saved = np.random.get_state()
    try:
        with warnings.catch_warnings():  # arch warns about RandomState, which rliable passes
            warnings.simplefilter("ignore", FutureWarning)
            for k, v in data.items():
                np.random.seed(seed)
                p, c = rly.get_interval_estimates({k: v}, fn, reps=reps,
                                                  confidence_interval_size=ci,
                                                  random_state=np.random.RandomState(seed))
                pts[k], cis[k] = p[k], c[k]
    finally:
        np.random.set_state(saved)
    return pts, cis


def interval_estimates(scores: dict[str, np.ndarray], reps: int = 10_000, seed: int = 0,
                       ci: float = 0.95) -> dict[str, dict[str, tuple[float, float, float]]]:
    """IQM, optimality gap (threshold 1), mean and median of normalised scores, each as
    (point, low, high) with a stratified-bootstrap ``ci`` interval (percentile method).

    scores: method -> (runs x tasks) matrix of normalised scores."""

    scores = {m: x for m, x in scores.items() if x.size}
    if not scores:
        return {}
    pts, cis = _estimates(scores, _aggregates, reps, ci, seed)
    return {m: {k: (float(pts[m][i]), float(cis[m][0, i]), float(cis[m][1, i]))
                for i, k in enumerate(METRICS)} for m in scores}


def improvement_probabilities(pairs: dict[str, tuple[np.ndarray, np.ndarray]], reps: int = 10_000,
                              seed: int = 0, ci: float = 0.95
                              ) -> dict[str, tuple[float, float, float]]:
    """P(X > Y) (Agarwal et al. 2021: per task the Mann-Whitney statistic of X's runs against
    Y's, averaged over tasks; scale-free, so tasks on different scales combine) with a
    stratified-bootstrap ``ci`` interval. pairs: name -> ((runs x tasks) X, (runs x tasks) Y)."""
    from rliable import metrics

    pairs = {k: v for k, v in pairs.items() if v[0].size and v[1].size}
    if not pairs:
        return {}
    fn = lambda x, y: np.array([metrics.probability_of_improvement(x, y)])   # noqa: E731
    pts, cis = _estimates(pairs, fn, reps, ci, seed)
    return {k: (float(pts[k][0]), float(cis[k][0, 0]), float(cis[k][1, 0])) for k in pairs}


def iqm_per_task(runs: np.ndarray, reps: int = 10_000, seed: int = 0, ci: float = 0.95
                 ) -> tuple[float, float, float]:
    """IQM over the runs of one task with a bootstrap ``ci`` interval.  runs: [n]"""
    from rliable import metrics

    pts, cis = _estimates({"x": runs.reshape(-1, 1)},
                          lambda x: np.array([metrics.aggregate_iqm(x)]), reps, ci, seed)
    return float(pts["x"][0]), float(cis["x"][0, 0]), float(cis["x"][1, 0])
