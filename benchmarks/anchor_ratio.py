"""vawm's DreamerV3 XS update against sheeprl's, back to back in alternating pairs.

    python benchmarks/anchor_ratio.py --pairs 3 --threads 2          # writes the README row

Each pair runs ``../shared/bench/sheeprl_anchor.sh`` (sheeprl's DreamerV3 XS on CartPole, batch
16 x 64, ``SHEEPRL_THREADS`` = ``--threads``) and ``benchmarks/throughput.py --backbone rssm
--preset xs --set run.precision=fp32 --set agent.imag_starts=0`` (imagination from all 1,024
starts, horizon 15, fp32, the same threads), in alternating order so that a drifting machine hits
both alike. Reported: each side's median seconds per update over the pairs, the ratio of medians
sheeprl / vawm (> 1: vawm faster) and every pair's own ratio, with the load average before the
first pair. Writes ``benchmarks/results/anchor_ratio.json`` (a README row).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

from readme_table import provenance, write_row

ROOT = Path(__file__).resolve().parent.parent
ANCHOR = ROOT.parent / "shared" / "bench" / "sheeprl_anchor.sh"
VAWM_ARGS = ["--backbone", "rssm", "--preset", "xs", "--set", "run.precision=fp32", "--set",
             "agent.imag_starts=0"]


def sheeprl(threads: int, updates: int) -> float:
    env = dict(os.environ, SHEEPRL_THREADS=str(threads), SHEEPRL_TIMED_UPDATES=str(updates))
    out = subprocess.run(["bash", str(ANCHOR)], capture_output=True, text=True, env=env)
    m = re.search(r"sec_per_update=([0-9.]+)", out.stdout)
    if out.returncode != 0 or m is None:
        raise RuntimeError(f"sheeprl anchor failed (rc {out.returncode}): {out.stderr[-1500:]}")
    return float(m.group(1))


def vawm(threads: int, updates: int, out: Path) -> float:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), *VAWM_ARGS, "--threads",
           str(threads), "--updates", str(updates), "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    if res.returncode != 0:
        raise RuntimeError(f"throughput.py failed: {res.stderr[-1500:]}")
    return json.loads(out.read_text())["update"]["median_s"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sheeprl-updates", type=int, default=20, help="timed (a multiple of 4)")
    p.add_argument("--vawm-updates", type=int, default=10, help="timed, median reported")
    args = p.parse_args(argv)
    if not ANCHOR.exists():
        print(f"anchor_ratio: {ANCHOR} is missing", file=sys.stderr)
        return 2
    load = os.getloadavg()[0]
    prov = provenance(load)                    # the code and the load as the runs start
    tmp = ROOT / "runs" / "bench" / "anchor_vawm.json"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    s_times, v_times = [], []
    for i in range(args.pairs):
        order = ("sheeprl", "vawm") if i % 2 == 0 else ("vawm", "sheeprl")
        for who in order:
            if who == "sheeprl":
                s_times.append(sheeprl(args.threads, args.sheeprl_updates))
            else:
                v_times.append(vawm(args.threads, args.vawm_updates, tmp))
        print(f"pair {i}: sheeprl {s_times[-1]:.3f} s, vawm {v_times[-1]:.3f} s per update "
              f"(ratio {s_times[-1] / v_times[-1]:.2f})", flush=True)
    s_med, v_med = statistics.median(s_times), statistics.median(v_times)
    ratio = s_med / v_med
    pairs = [round(s / v, 3) for s, v in zip(s_times, v_times, strict=True)]
    cmd = f"python benchmarks/anchor_ratio.py --pairs {args.pairs} --threads {args.threads}"
    data = {"command": cmd, "threads": args.threads, "sheeprl_s": s_times, "vawm_s": v_times,
            "ratio_of_medians": round(ratio, 3), "pair_ratios": pairs,
            "seeds": [0], "budget": f"{args.pairs} alternating pairs; sheeprl "
                                    f"{args.sheeprl_updates} timed updates, vawm median of "
                                    f"{args.vawm_updates}",
            **prov,
            "readme": {"what": "update speed against sheeprl 0.8.4 DreamerV3 XS (CartPole "
                               "vectors, batch 16 x 64, imagination from all 1,024 starts, "
                               f"horizon 15, fp32, {args.threads} threads)",
                       "command": cmd,
                       "result": f"sheeprl {s_med:.2f} s vs vawm {v_med:.2f} s per update "
                                 f"(medians): vawm {ratio:.2f}x faster (pairs: "
                                 f"{', '.join(f'{r:.2f}' for r in pairs)})",
                       "order": 30}}
    write_row("anchor_ratio", data)
    print(f"sheeprl {s_med:.3f} s / vawm {v_med:.3f} s per update: ratio {ratio:.2f} "
          f"(load before {load:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
