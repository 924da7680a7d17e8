"""Run-directory outputs while training: metrics.jsonl + TensorBoard, the returns plot, the
progress bar and the package versions of the summary."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import torch


class MetricLogger:
    """metrics.jsonl + TensorBoard; averages scalars between log steps."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "metrics.jsonl"
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        from torch.utils.tensorboard import SummaryWriter
        self.tb = SummaryWriter(str(run_dir / "tb"))

    def add(self, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1

    def write(self, env_step: int, update: int, wall: float, extra: dict | None = None) -> dict:
        row = {"env_step": env_step, "update": update, "wall_clock_s": round(wall, 3)}
        row.update({k: self.sums[k] / self.counts[k] for k in sorted(self.sums)})
        row.update(extra or {})
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        for k, v in row.items():
            if k not in ("env_step",) and isinstance(v, (int, float)):
                self.tb.add_scalar(k, v, env_step)
        self.tb.flush()
        self.sums, self.counts = {}, {}
        return row

    def truncate_after(self, env_step: int) -> None:
        """On resume: drop rows logged after the checkpoint (they will be logged again)."""
        if not self.path.exists():
            return
        rows = [ln for ln in self.path.read_text().splitlines()
                if ln.strip() and json.loads(ln)["env_step"] <= env_step]
        self.path.write_text("".join(r + "\n" for r in rows))

    def close(self) -> None:
        self.tb.close()


def plot_returns(run_dir: Path, episodes: list, ev: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if episodes:
        x, y = zip(*episodes, strict=True)
        ax.plot(x, y, ".", alpha=0.3, label="training episodes")
        k = max(1, len(y) // 20)
        ys = np.convolve(y, np.ones(k) / k, mode="valid")
        ax.plot(x[k - 1:], ys, label=f"moving mean ({k})")
        ax.errorbar([x[-1]], [ev["eval_return_mean"]], [ev["eval_return_std"]], fmt="o", color="k",
                    label=f"final eval ({ev['eval_episodes']} ep.)")
    else:
        ax.text(0.5, 0.5, "no finished training episode yet", ha="center", transform=ax.transAxes)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("return")
    if episodes:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(run_dir / "returns.png", dpi=100)
    plt.close(fig)


def versions() -> dict:
    import gymnasium

    import vawm
    out = {"vawm": vawm.__version__, "torch": torch.__version__, "numpy": np.__version__,
           "gymnasium": gymnasium.__version__, "python": platform.python_version()}
    commit = source_commit()
    return {**out, "commit": commit} if commit else out


def source_commit() -> str | None:
    """The git commit of the vawm source that runs (``+dirty`` if its package files differ from
    it), or ``None`` outside a git checkout (an installed wheel)."""
    import subprocess
    from pathlib import Path
    src = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "."], cwd=src,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def progress_bar(enabled: bool, total: int, initial: int):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, mininterval=1.0)
