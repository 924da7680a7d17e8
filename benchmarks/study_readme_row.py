"""The README row of a CartPole dream-critic study from ``benchmarks/cartpole_study.py``'s output.

    python benchmarks/study_readme_row.py STUDY_DIR --commit SHA --load L --date D [--name NAME]

Reads ``STUDY_DIR/results.json`` (own-policy prediction error) and, if present,
``STUDY_DIR/random_policy/results.json`` (the common random-policy transitions), and writes
``benchmarks/results/<name>.json`` with the per-method final reward, steps to 400 and prediction
errors (mean ± std over seeds) and a ``readme`` row. ``--commit``/``--load``/``--date`` record
the code and the machine the study's runs used (the run directories do not know them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def stats(xs, fmt: str = ".1f") -> str:
    xs = [x for x in xs if x is not None]
    return f"{np.mean(xs):{fmt}} ± {np.std(xs):{fmt}}" if xs else "n/a"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study", type=Path)
    p.add_argument("--name", default="cartpole_dream_critic_cpu")
    p.add_argument("--commit", required=True)
    p.add_argument("--load", type=float, required=True)
    p.add_argument("--date", required=True)
    p.add_argument("--command", default="vawm sweep experiments/cartpole_dream_critic_cpu.yaml")
    args = p.parse_args(argv)
    own = json.loads((args.study / "results.json").read_text())
    rnd_path = args.study / "random_policy" / "results.json"
    rnd = json.loads(rnd_path.read_text()) if rnd_path.exists() else {}
    methods, parts = {}, []
    for m, runs in own.items():
        reached = [r["steps_to_threshold"] for r in runs if r["steps_to_threshold"] is not None]
        methods[m] = {"final_reward": [r["final_reward"] for r in runs],
                      "steps_to_400": [r["steps_to_threshold"] for r in runs],
                      "pred_mse_own_policy": [r.get("pred_mse") for r in runs],
                      "pred_mse_random_policy": [r.get("pred_mse") for r in rnd.get(m, [])]}
        steps = f"{np.mean(reached):,.0f} ({len(reached)}/{len(runs)})" if reached else "—"
        parts.append(f"{m}: reward {stats(methods[m]['final_reward'])}, steps to 400 {steps}, "
                     f"pred. MSE (common random transitions) "
                     f"{stats(methods[m]['pred_mse_random_policy'], '.3f')}")
    seeds = sorted({r["seed"] for runs in own.values() for r in runs})
    budget = f"{next(iter(own.values()))[0]['env_steps']} env steps per run"
    out = {"command": args.command, "seeds": seeds, "budget": budget, "date": args.date,
           "load": args.load, "commit": args.commit, "methods": methods,
           "readme": {"what": "CartPole dream-critic study, CPU budget (anon. 2026, Table 1)",
                      "command": args.command, "result": "; ".join(parts), "order": 40}}
    path = ROOT / "benchmarks" / "results" / f"{args.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(out["readme"]["result"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
