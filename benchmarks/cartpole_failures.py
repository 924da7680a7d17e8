"""Why a CartPole run's episodes end, and whether its world model sees it coming.

    python benchmarks/cartpole_failures.py runs/bench/default_job/seed0 [more run dirs] [--after 12000]

For each finished run directory (its replay chunks and latest checkpoint): the episodes that
ended after ``--after`` env steps, split by cause (cart position |x| > 2.4, pole angle
|theta| > 0.2095 rad, time limit), and, for the terminal ones with at least ``--window`` steps of
history, the world model's predicted continuation probability at the terminal step and one step
before (from the posterior features, as the continuation head is trained), the critic's value 9
steps before the end, and the mean continuation predicted on the non-terminal steps of the same
stretch of replay. A head that has learned the termination predicts ~0 at the terminal step.
Prints one block per run; ``--json FILE`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np
import torch

X_LIMIT, THETA_LIMIT = 2.4, 0.2095


def cause(obs: np.ndarray, terminal: bool) -> str:
    if not terminal:
        return "time limit"
    return "cart position" if abs(obs[0]) > X_LIMIT else "pole angle"


def study(run: Path, after: int, window: int) -> dict:
    from vawm.agent import Agent
    from vawm.checkpoint import load_latest
    from vawm.config import load_config_file
    from vawm.envs import env_info
    from vawm.train import CKPT
    cfg = load_config_file(str(run / "config.yaml"))
    agent = Agent(cfg, env_info(cfg.env, cfg.env_cfg))
    agent.load_state_dict(load_latest(run / CKPT)["agent"])
    agent.eval()
    chunks = [torch.load(f)["data"] for f in sorted(glob.glob(str(run / "replay" / "*.pt")))]
    data = {k: torch.cat([c[k][0] for c in chunks]) for k in chunks[0]}
    ends = torch.nonzero(data["is_last"]).flatten().tolist()
    out: dict = {"run": str(run), "episodes": {}, "terminal": {}}
    for i in ends:
        if i >= after:
            k = cause(data["obs"][i].numpy(), bool(data["is_terminal"][i]))
            out["episodes"][k] = out["episodes"].get(k, 0) + 1
    per: dict[str, list] = {}
    for i in ends:
        if i < max(after, window) or not data["is_terminal"][i]:
            continue
        sl = slice(i - window + 1, i + 1)
        b = {k: v[sl][None] for k, v in data.items()}
        if b["is_first"][0, 1:].any():
            continue
        with torch.no_grad():
            o = agent.wm.observe(b)
            c = agent.wm.cont_prob(o.post)[0]
            v = agent.ac.value(o.post)[0]
        per.setdefault(cause(data["obs"][i].numpy(), True), []).append(
            (c[-1].item(), c[-2].item(), v[-10].item()))
    for k, rows in per.items():
        a = np.array(rows)
        out["terminal"][k] = {"n": len(rows), "cont_at_terminal": float(a[:, 0].mean()),
                              "cont_one_before": float(a[:, 1].mean()),
                              "value_9_before": float(a[:, 2].mean())}
    n = data["obs"].shape[0]
    starts = torch.arange(after, n - window, window)
    if len(starts):
        b = {k: torch.stack([v[s:s + window] for s in starts]) for k, v in data.items()}
        with torch.no_grad():
            c = agent.wm.cont_prob(agent.wm.observe(b).post)[:, window // 4:]
        live = ~b["is_terminal"][:, window // 4:]
        out["cont_mean_nonterminal"] = float(c[live].mean())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--after", type=int, default=12000, help="env steps (replay index)")
    p.add_argument("--window", type=int, default=32, help="history steps filtered first")
    p.add_argument("--json")
    args = p.parse_args(argv)
    results = []
    for r in args.runs:
        run = Path(r)
        if not (run / "config.yaml").exists() or not (run / "replay").is_dir():
            print(f"cartpole_failures: {run} is not a finished run with replay chunks",
                  file=sys.stderr)
            return 2
        res = study(run, args.after, args.window)
        results.append(res)
        eps = ", ".join(f"{k} {v}" for k, v in sorted(res["episodes"].items()))
        print(f"{run}: episodes ending after {args.after} env steps: {eps}")
        for k, t in res["terminal"].items():
            print(f"  {k}: n={t['n']}, predicted continuation at the terminal step "
                  f"{t['cont_at_terminal']:.2f} (one step before {t['cont_one_before']:.2f}), "
                  f"value 9 steps before {t['value_9_before']:.1f}")
        if "cont_mean_nonterminal" in res:
            print(f"  mean predicted continuation on non-terminal steps: "
                  f"{res['cont_mean_nonterminal']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
