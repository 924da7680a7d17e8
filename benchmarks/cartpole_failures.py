"""Why a CartPole run's episodes end, and whether its world model sees it coming.

    python benchmarks/cartpole_failures.py runs/bench/default_job/seed0 [more run dirs] [--after 12000]

For each finished run directory (its replay chunks and latest checkpoint): the episodes that
ended after ``--after`` env steps, split by cause (cart position |x| > 2.4, pole angle
|theta| > 0.2095 rad, time limit), and, for the terminal ones with at least ``--window`` steps of
history, the world model's predicted continuation probability at the terminal step and one step
before (from the posterior features, as the continuation head is trained), the critic's value 9
steps before the end, and the mean continuation predicted on the non-terminal steps of the same
stretch of replay. A head that has learned the termination predicts ~0 at the terminal step.
``--probe``: whether any reader of the features could do better (:func:`probe_features`).
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
import torch.nn.functional as F
from torch import Tensor

X_LIMIT, THETA_LIMIT = 2.4, 0.2095


def cause(obs: np.ndarray, terminal: bool) -> str:
    if not terminal:
        return "time limit"
    return "cart position" if abs(obs[0]) > X_LIMIT else "pole angle"


def _auc(p: Tensor, y: Tensor) -> float:
    """Area under the ROC curve of scores ``p`` for labels ``y`` (Mann-Whitney, by ranks)."""
    pos, neg = p[y == 1], p[y == 0]
    r = torch.cat([pos, neg]).argsort().argsort().double() + 1
    return float((r[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def probe_features(agent, data: dict, window: int, steps: int = 1500, seed: int = 0) -> dict:
    """Can anything read the terminations from the world model's features? Two samples A, B of
    the posterior features of the whole replay (windows of ``2 * window`` steps, the first
    ``window // 4`` of each dropped as warm-up); a fresh 128-unit MLP probe fits terminal vs
    not on A (Adam 1e-3, ``steps`` batches of 512) and is scored on A and on B. A probe that is
    good on A only has memorised A's latent samples, not read the state."""
    torch.manual_seed(seed)
    T, w = 2 * window, window // 4
    n = data["obs"].shape[0] // T * T
    b = {k: v[:n].reshape(-1, T, *v.shape[1:]) for k, v in data.items()}
    with torch.no_grad():
        feats = [agent.wm.observe(b).post[:, w:].flatten(0, 1) for _ in range(2)]
    y = b["is_terminal"][:, w:].flatten().float()
    m, sd = feats[0].mean(0), feats[0].std(0) + 1e-6
    a, bb = ((f - m) / sd for f in feats)
    net = torch.nn.Sequential(torch.nn.Linear(a.shape[1], 128), torch.nn.SiLU(),
                              torch.nn.Linear(128, 1))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(steps):
        idx = torch.randint(0, len(a), (512,))
        loss = F.binary_cross_entropy_with_logits(net(a[idx]).squeeze(-1), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = {"positives": int(y.sum())}
    with torch.no_grad():
        for name, f in (("sample_a", a), ("sample_b", bb)):
            p = torch.sigmoid(net(f).squeeze(-1))
            out[name] = {"p_terminal_at_terminals": float(p[y == 1].mean()), "auc": _auc(p, y)}
        head = 1 - agent.wm.cont_prob(feats[1].reshape(-1, T - w, feats[1].shape[-1]))
        head = head.flatten()
        out["cont_head_sample_b"] = {"p_terminal_at_terminals": float(head[y == 1].mean()),
                                     "auc": _auc(head, y)}
    return out


def study(run: Path, after: int, window: int, probe: bool = False) -> dict:
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
    if probe:
        out["probe"] = probe_features(agent, data, window)
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
    p.add_argument("--probe", action="store_true",
                   help="also fit a probe for terminations on the features (probe_features)")
    p.add_argument("--json")
    args = p.parse_args(argv)
    results = []
    for r in args.runs:
        run = Path(r)
        if not (run / "config.yaml").exists() or not (run / "replay").is_dir():
            print(f"cartpole_failures: {run} is not a finished run with replay chunks",
                  file=sys.stderr)
            return 2
        res = study(run, args.after, args.window, args.probe)
        results.append(res)
        eps = ", ".join(f"{k} {v}" for k, v in sorted(res["episodes"].items()))
        print(f"{run}: episodes ending after {args.after} env steps: {eps}")
        for k, t in res["terminal"].items():
            print(f"  {k}: n={t['n']}, predicted continuation at the terminal step "
                  f"{t['cont_at_terminal']:.2f} (one step before {t['cont_one_before']:.2f}), "
                  f"value 9 steps before {t['value_9_before']:.1f}")
        if "probe" in res:
            pr = res["probe"]
            print(f"  probe on the posterior features ({pr['positives']} terminal steps scored): "
                  f"P(terminal) at terminals {pr['sample_a']['p_terminal_at_terminals']:.2f} "
                  f"(AUC {pr['sample_a']['auc']:.3f}) on the sample it fit, "
                  f"{pr['sample_b']['p_terminal_at_terminals']:.2f} (AUC {pr['sample_b']['auc']:.3f}) "
                  f"on a fresh sample; the continuation head on that sample "
                  f"{pr['cont_head_sample_b']['p_terminal_at_terminals']:.2f} "
                  f"(AUC {pr['cont_head_sample_b']['auc']:.3f})")
        if "cont_mean_nonterminal" in res:
            print(f"  mean predicted continuation on non-terminal steps: "
                  f"{res['cont_mean_nonterminal']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
