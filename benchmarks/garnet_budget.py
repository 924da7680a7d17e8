"""Value error of every Garnet setting against the training budget (Voelcker et al. 2025 §5 lab).

    python benchmarks/garnet_budget.py --steps 2000 8000 32000 --seeds 3 --out runs/garnet_budget.json

For each step budget (cosine schedule over the whole budget, as ``vawm garnet``), trains every
default loss x rank on seeds 0..S-1 and every temperature, then prints the mean value error per
(loss, rank, temperature) and budget, and flags settings whose error still moves by more than
10% between the last two budgets (the convergence check #13 item 9 asks for), and counts the
pairs of losses in one (rank, temperature) cell whose order flips between the last two budgets
(among pairs that differ by more than 0.01 at both): the criterion the default budget meets.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import time

import torch

from vawm.garnet.experiment import Group, SweepConfig, run_garnet_group
from vawm.garnet.train import TrainConfig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, nargs="+", default=[2000, 8000, 32000])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", default="runs/garnet_budget.json")
    p.add_argument("--eps", type=float, default=TrainConfig.eps, help="Adam's epsilon")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    means: dict[tuple, dict[int, float]] = collections.defaultdict(dict)
    for steps in args.steps:
        cfg = SweepConfig(seeds=tuple(range(args.seeds)), train=TrainConfig(steps=steps, eps=args.eps))
        t0 = time.time()
        rows = [r for loss in cfg.losses for rank in cfg.garnet.ranks
                for r in run_garnet_group(cfg, Group("garnet", loss, rank))]
        err = collections.defaultdict(list)
        for r in rows:
            err[(r["loss"], r["rank"], r["temperature"])].append(r["value_error"])
        for k, v in err.items():
            means[k][steps] = sum(v) / len(v)
        print(f"{steps} steps: {time.time() - t0:.0f} s", flush=True)
    a, b = args.steps[-2:] if len(args.steps) > 1 else (args.steps[0],) * 2
    moving = 0
    for k in sorted(means):
        m = means[k]
        flag = abs(m[a] - m[b]) > 0.1 * max(m[b], 0.02)
        moving += flag
        print(*k, *(f"{m[s]:.3f}" for s in args.steps), "moving" if flag else "")
    print(f"{moving} of {len(means)} settings move by > 10% between {a} and {b} steps")
    cells: dict[tuple, dict[str, dict[int, float]]] = collections.defaultdict(dict)
    for (loss, rank, temp), m in means.items():
        cells[(rank, temp)][loss] = m
    pairs = flips = 0
    for c in cells.values():
        for x, y in itertools.combinations(sorted(c), 2):
            da, db = c[x][a] - c[y][a], c[x][b] - c[y][b]
            if abs(da) > 0.01 and abs(db) > 0.01:
                pairs += 1
                flips += (da > 0) != (db > 0)
    print(f"{flips} of {pairs} clearly ordered loss pairs flip between {a} and {b} steps")
    with open(args.out, "w") as f:
        json.dump([{"loss": k[0], "rank": k[1], "temperature": k[2], **{str(s): v for s, v in
                    m.items()}} for k, m in means.items()], f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
