"""Train the default job (or any `vawm train` command line) for several seeds and record the result.

    python benchmarks/default_job.py --seeds 0,1,2,3,4 --workers 2
    python benchmarks/default_job.py --seeds 0,1,2,3,4 --name default_job_var -- --objective var

Runs ``vawm train [ARGS] --seed S`` for every seed (``--workers`` at a time, one thread each),
then writes ``benchmarks/results/<name>.json``: the command, seeds, env-step budget, date, the
load average before the runs, the git commit, each seed's final evaluation (mean, std, episodes),
wall-clock (the trainer's, and the whole process's: start-up and evaluation included) and updates,
and a ``readme`` row (``benchmarks/readme_table.py`` puts it in the
README). The run directories stay under ``--root``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from readme_table import provenance, publish

ROOT = Path(__file__).resolve().parent.parent
SOLVED = 475.0                      # CartPole-v1's "solved" level, the issue's bar for the default job


def run_seed(seed: int, args: list[str], root: Path) -> dict:
    run_dir = root / f"seed{seed}"
    process_s = None                       # whole `vawm train` process; only for runs made now
    cmd = [sys.executable, "-m", "vawm", "train", *args, "--seed", str(seed), "--run-dir",
           str(run_dir), "--no-progress"]
    if (run_dir / "summary.json").exists():
        print(f"seed {seed}: finished earlier, read from {run_dir}", flush=True)
    else:
        if (run_dir / "config.yaml").exists():
            cmd = [sys.executable, "-m", "vawm", "train", "--resume", str(run_dir), "--no-progress"]
        t0 = time.time()
        out = subprocess.run(cmd, capture_output=True, text=True,
                             env=dict(os.environ, OMP_NUM_THREADS="1"))
        if out.returncode != 0:
            raise RuntimeError(f"seed {seed} failed: {out.stderr[-2000:]}")
        process_s = round(time.time() - t0, 2)
        print(f"seed {seed}: {process_s:.0f} s", flush=True)
    s = json.loads((run_dir / "summary.json").read_text())
    return {"seed": seed, "eval_return_mean": s["eval_return_mean"],
            "eval_return_std": s["eval_return_std"], "eval_episodes": s["eval_episodes"],
            "wall_clock_s": s["wall_clock_s"], "process_s": process_s, "updates": s["updates"],
            "env_steps": s["env_steps"], "run_dir": str(run_dir)}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--name", default="default_job")
    p.add_argument("--what", default="default job (`rssm`, default preset `cpu-cartpole`, CartPole-v1)")
    p.add_argument("--root", help="run directories (default: runs/bench/<name>)")
    p.add_argument("--order", type=int, default=10, help="position of the README row")
    args = p.parse_args(own)
    seeds = [int(s) for s in args.seeds.split(",")]
    root = Path(args.root or ROOT / "runs" / "bench" / args.name)
    prov = provenance(os.getloadavg()[0])     # the code and the load as the runs start
    with ThreadPoolExecutor(args.workers) as pool:
        per = list(pool.map(lambda s: run_seed(s, extra, root), seeds))
    means = np.array([r["eval_return_mean"] for r in per])
    walls = np.array([r["wall_clock_s"] for r in per])
    steps = per[0]["env_steps"]
    command = " ".join(["vawm train", *extra]).strip()
    procs = [r["process_s"] for r in per if r["process_s"] is not None]
    solved = int((means >= SOLVED).sum())
    result = (f"final eval {means.mean():.1f} ± {means.std():.1f} over seeds (each: 10-episode "
              f"mean; per seed {', '.join(f'{m:.1f}' for m in means)}); ≥ {SOLVED:.0f} on "
              f"{solved}/{len(seeds)}; wall-clock per run {walls.min():.0f}–{walls.max():.0f} s"
              + (f" (whole process, start-up and evaluation included: {min(procs):.0f}–"
                 f"{max(procs):.0f} s, {args.workers} runs at a time)" if procs else ""))
    out = {"command": command, "seeds": seeds, "budget": f"{steps} env steps",
           **prov, "runs": per,
           "eval_mean_over_seeds": float(means.mean()), "eval_std_over_seeds": float(means.std()),
           "solved_seeds": solved,
           "readme": {"what": args.what, "command": command, "result": result,
                      "order": args.order}}
    return publish(args.name, out)


if __name__ == "__main__":
    sys.exit(main())
