"""``vawm report ROOT [ROOT ...] --out DIR``: tables in the papers' layout, curves and aggregate scores."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vawm.report.build import build_report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vawm report",
        description="Read every run directory under ROOT (and the manifests of the sweeps that "
                    "made them) and write report.md with PNG figures and scores.csv.")
    p.add_argument("root", nargs="+", help="directory holding run directories (searched "
                                           "recursively); several: one report of them all")
    p.add_argument("--out", help="output directory (default: ROOT/report, the first ROOT's)")
    p.add_argument("--reps", type=int, default=5000,
                   help="bootstrap replications for the confidence intervals (default 5000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument("--no-figures", action="store_true", help="tables only")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    roots = [Path(r) for r in args.root]
    for r in roots:
        if not r.is_dir():
            print(f"vawm report: {str(r)!r} is not a directory", file=sys.stderr)
            return 2
    if args.reps < 1:
        print("vawm report: --reps must be positive", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else roots[0] / "report"
    path = build_report(roots, out, reps=args.reps, seed=args.seed, figures=not args.no_figures)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
