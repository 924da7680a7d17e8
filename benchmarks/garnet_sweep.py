"""Wall-clock of the full default `vawm garnet` sweep (Garnet Fig. 2 sweep + cliff-walk).

    .venv/bin/python benchmarks/garnet_sweep.py [--cores 2] [--out DIR] [-- extra vawm garnet flags]

Pins the process (and the worker processes it spawns) to ``--cores`` CPUs, runs the sweep with
its defaults, and prints the wall-clock, the CPU time of all processes and the load average
before and after (other jobs on the machine slow the wall-clock down; the CPU time much less).
Target: at most 300 s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cores", type=int, default=2, help="CPUs to pin to (0: no pinning)")
    p.add_argument("--out", help="output directory (default: a temporary one)")
    p.add_argument("extra", nargs="*", help="further `vawm garnet` flags, after --")
    args = p.parse_args()
    if args.cores and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))[: args.cores]
        os.sched_setaffinity(0, cpus)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []

    from vawm.garnet.cli import main as garnet_main

    out = args.out or tempfile.mkdtemp(prefix="garnet_bench_")
    load0 = os.getloadavg()
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    rc = garnet_main(["--out", out, *args.extra])
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    load1 = os.getloadavg()
    print(f"garnet sweep: wall-clock {wall:.1f} s, CPU time {cpu:.1f} s (all processes), "
          f"on CPUs {cpus}; load average {load0[0]:.1f} before, {load1[0]:.1f} after; "
          f"target <= 300 s; outputs in {out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
