"""benchmarks/effect_by_setting.py: one pair's effect per setting, from reports' scores.csv."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("effect_by_setting",
                                              ROOT / "benchmarks/effect_by_setting.py")
ebs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ebs)


def _scores(path: Path, rows: list[tuple]) -> str:
    lines = ["experiment,method,env,seed,status,score,env_steps,path"]
    lines += [f"x,{m},{e},{s},{st},{v},100,p" for m, e, s, st, v in rows]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_differences_and_improvement_probability_per_setting(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ebs, "RESULTS", tmp_path / "results")
    up = [(m, e, s, "finished", base + 10 * s + (5 if m == "a" else 0))
          for m in "ab" for e, base in (("t:1", 100), ("t:2", 500)) for s in range(3)]
    down = [(m, e, s, st, v if m == "b" else v - 50) for m, e, s, st, v in up]
    down.append(("a", "t:1", 3, "failed", ""))                         # unfinished: not counted
    s1, s2 = _scores(tmp_path / "1.csv", up), _scores(tmp_path / "2.csv", down)
    assert ebs.main(["--name", "e", "--setting", f"one={s1}", "--setting", f"two={s2}",
                     "--pair", "a:b", "--reps", "200"]) == 0
    out = json.loads((tmp_path / "results/e.json").read_text())["pairs"]
    one, two = out
    # seed i: b = base + 10 i, a = b + 5; a_i > b_j iff i >= j: 6 of the 9 pairs on each task
    assert one["tasks"]["t:1"]["diff"] == 5.0 and one["tasks"]["t:2"]["a"] == 515.0
    assert abs(one["p_improvement"][0] - 6 / 9) < 1e-9
    # a = b - 45: never above any b_j (10 i - 45 > 10 j never holds for i, j in 0..2)
    assert two["tasks"]["t:1"]["diff"] == -45.0 and two["tasks"]["t:1"]["seeds_a"] == 3
    assert two["p_improvement"][0] == 0.0
    assert "| a vs b | two |" in capsys.readouterr().out
    assert ebs.main(["--name", "e", "--setting", f"one={s1}", "--pair", "a:c"]) == 2
    assert ebs.main(["--name", "../e", "--setting", f"one={s1}", "--pair", "a:b"]) == 2
    assert ebs.main(["--name", "e", "--setting", "one", "--pair", "a:b"]) == 2
