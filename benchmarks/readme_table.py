"""Rebuild the README's measured table from the JSON files that benchmark scripts write.

    python benchmarks/readme_table.py            # rewrite the table between the README's markers
    python benchmarks/readme_table.py --check    # exit 1 if the README disagrees with the JSONs

Every ``benchmarks/results/*.json`` with a ``readme`` entry is one row: ``what``, ``command``,
``result`` (text the writing script formatted from its measurements), plus the provenance every
row carries: ``seeds``, ``budget``, ``date``, ``load`` (the machine's load average before the
run) and ``commit`` (the code measured). Rows are sorted by their ``order`` key, then name. The
table lives between ``<!-- measured:begin -->`` and ``<!-- measured:end -->``; nothing else in the
README is touched. ``tests/test_readme_table.py`` fails when the two disagree.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
BEGIN, END = "<!-- measured:begin -->", "<!-- measured:end -->"
HEADER = ("| what | command | seeds, budget | result | measured |\n"
          "|---|---|---|---|---|")


def provenance(load: float | None = None) -> dict:
    """The provenance every row carries: date, load (default: the load average now; pass the
    one read before the run) and commit (``+dirty`` if ``src/`` has uncommitted changes)."""
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "src"], capture_output=True,
                           text=True, cwd=ROOT).stdout.strip()
    return {"date": time.strftime("%Y-%m-%d"),
            "load": round(os.getloadavg()[0] if load is None else load, 2),
            "commit": commit + ("+dirty" if dirty else "")}


def write_row(name: str, data: dict) -> Path:
    """Write ``benchmarks/results/<name>.json`` (a row when ``data`` has a ``readme`` entry)."""
    path = RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def publish(name: str, record: dict) -> int:
    """Write a record with a ``readme`` row, print its result and where it went; exit status 0."""
    path = write_row(name, record)
    print(record["readme"]["result"])
    print(f"wrote {path}")
    return 0


def rows(results: Path = RESULTS) -> list[dict]:
    out = []
    for path in sorted(results.glob("*.json")):
        data = json.loads(path.read_text())
        if "readme" in data:
            out.append({"name": path.stem, **data})
    return sorted(out, key=lambda d: (d["readme"].get("order", 100), d["name"]))


def render(results: Path = RESULTS) -> str:
    lines = [HEADER]
    for d in rows(results):
        r = d["readme"]
        seeds = ", ".join(str(s) for s in d.get("seeds", [])) or "—"
        commit = d["commit"][:8] + ("+dirty" if d["commit"].endswith("+dirty") else "")
        when = f"{d['date']}, load {d['load']}, `{commit}`"
        lines.append(f"| {r['what']} | `{r['command']}` | seeds {seeds}; {d['budget']} | "
                     f"{r['result']} | {when} |")
    return "\n".join(lines)


def splice(readme: str, table: str) -> str:
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} markers")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only compare; exit 1 on a difference")
    args = p.parse_args(argv)
    text = README.read_text()
    new = splice(text, render())
    if args.check:
        if new != text:
            print("README.md's measured table differs from benchmarks/results/*.json; run "
                  "python benchmarks/readme_table.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
