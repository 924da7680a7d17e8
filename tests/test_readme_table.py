"""Every number in the README's measured table comes from a JSON file a benchmark script wrote."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("readme_table", ROOT / "benchmarks/readme_table.py")
readme_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme_table)


def test_readme_table_matches_the_result_files():
    text = (ROOT / "README.md").read_text()
    assert readme_table.splice(text, readme_table.render()) == text, \
        "README.md's measured table is stale: run python benchmarks/readme_table.py"


def test_every_row_carries_its_provenance():
    rows = readme_table.rows()
    assert rows
    for d in rows:
        assert {"command", "seeds", "budget", "date", "load", "commit"} <= set(d), d["name"]
        assert {"what", "command", "result"} <= set(d["readme"]), d["name"]


def test_render_and_splice(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({
        "command": "vawm train", "seeds": [0, 1], "budget": "10 env steps", "date": "2026-01-01",
        "load": 0.1, "commit": "abcdef0123", "readme": {"what": "w", "command": "c", "result": "r"}}))
    (tmp_path / "b.json").write_text(json.dumps({"no": "row"}))
    table = readme_table.render(tmp_path)
    assert table.count("\n") == 2 and "| w | `c` | seeds 0, 1; 10 env steps | r |" in table
    text = f"x\n{readme_table.BEGIN}\nold\n{readme_table.END}\ny"
    assert readme_table.splice(text, table) == f"x\n{readme_table.BEGIN}\n{table}\n{readme_table.END}\ny"
