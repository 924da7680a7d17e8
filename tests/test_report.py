"""`vawm report` on synthetic run directories with known numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from vawm.report import aggregate, curves, tables
from vawm.report.cli import main as report_main
from vawm.sweep.cell import write_json
from vawm.sweep.spec import parse_sweep

REFS = tables.load_atari_reference()["games"]


def make_run(root: Path, rel: str, env: str, backbone: str, objective: str, seed: int,
             score: float | None, steps: int = 10_000, reached: int | None = None,
             diagnostics: bool = False) -> Path:
    """A run directory as `vawm train` writes it; ``score=None`` leaves it unfinished."""
    d = root / rel
    d.mkdir(parents=True)
    cfg = {"env": env, "backbone": backbone, "objective": objective, "preset": "test",
           "seed": seed, "steps": steps, "run": {"batch_size": 16}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    last = steps if score is not None else (reached or steps // 2)
    with open(d / "metrics.jsonl", "w") as f:
        for i, step in enumerate(range(0, last + 1, steps // 10)):
            row = {"env_step": step, "update": i * 10, "wall_clock_s": float(i),
                   "train/episode_return": (score or 0.0) * step / steps + seed}
            if diagnostics:
                row.update({"wm/loss_dyn": 3.0 - 0.2 * i, "var/loss": 1.0 / (1 + i),
                            "var/beta": min(1.0, 0.3 + 0.1 * i)})
            f.write(json.dumps(row) + "\n")
    if score is not None:
        (d / "summary.json").write_text(json.dumps({
            "status": "finished", "eval_return_mean": score, "eval_return_std": 0.0,
            "eval_episodes": 10, "eval_returns": [score] * 10, "env_steps": steps,
            "updates": 100, "wall_clock_s": 10.0, "env": env, "backbone": backbone,
            "objective": objective, "preset": "test", "seed": seed, "versions": {}}))
    return d


def hns_score(game: str, h: float) -> float:
    r = REFS[game]
    return r["random"] + h * (r["human"] - r["random"])


def table_rows(md: str, first_cell: str) -> list[list[str]]:
    """Cells of the markdown table rows whose first cell is ``first_cell``."""
    out = []
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            out.append(cells)
    return out


# ---------------------------------------------------------------------------- pure math
def test_normalisation_and_deltas():
    assert tables.human_normalized(32.25, -20.7, 14.6) == pytest.approx(1.5)
    assert tables.pct_change(1233.2, 875.88) == pytest.approx(40.796, abs=1e-3)
    assert tables.arrow_pct(tables.pct_change(935.0, 1060.5)) == "↓11.8%"
    assert tables.pct_change(-115.6, 2331.2) == pytest.approx(-104.96, abs=1e-2)
    assert tables.pct_change(5.0, 0.0) is None
    assert tables.arrow_abs(0.24) == "↑0.24" and tables.arrow_abs(-3, 0) == "↓3"
    assert tables.fmt_steps(500_000) == "500K" and tables.fmt_steps(1_000_000) == "1M"
    assert tables.reference_game("ms_pacman", REFS) == "MsPacman"
    assert tables.task_title("ball_in_cup-catch") == "Ball In Cup Catch"


@pytest.mark.parametrize("method,mean,median,superhuman", [
    ("rssm", 1.10, 0.58, 10), ("rssm+var", 1.34, 1.00, 13),
    ("tssm", 1.14, 0.51, 9), ("tssm+var", 1.36, 0.81, 12)])
def test_reference_data_reproduces_000_table1(method, mean, median, superhuman):
    """The shipped Random/Human scores turn VaR (anon. 2025)'s per-game columns into its aggregate rows."""
    pub = tables.load_atari_reference()["published"][method]
    assert len(pub["scores"]) == 26 == len(REFS)
    agg = tables.atari_aggregates(pub["scores"], REFS)
    assert agg["mean"] == pytest.approx(mean, abs=0.005)
    assert agg["median"] == pytest.approx(median, abs=0.005)
    assert agg["superhuman"] == superhuman == pub["superhuman"]


def test_rectangular_keeps_seeds_common_to_all_tasks():
    per_task = {"a": {0: 1.0, 1: 2.0, 2: 3.0}, "b": {0: 4.0, 2: 6.0}}
    mat, seeds = aggregate.rectangular(per_task, ["a", "b"])
    assert seeds == [0, 2]
    np.testing.assert_array_equal(mat, [[1.0, 4.0], [3.0, 6.0]])


def test_iqm_interval_contains_point():
    x = np.arange(40, dtype=float).reshape(4, 10) / 40
    est = aggregate.interval_estimates({"m": x}, reps=200)["m"]
    # IQM of 0..39/40: the middle 20 values 10..29 -> mean 19.5/40
    assert est["iqm"][0] == pytest.approx(19.5 / 40)
    assert est["og"][0] == pytest.approx(1 - x.mean())
    for pt, lo, hi in est.values():
        assert lo <= pt <= hi


def test_a_methods_interval_does_not_depend_on_the_others():
    """Same data, same seed -> same interval, whichever methods share the call and in which
    order (a README row of one method matches the full report's)."""
    rng = np.random.default_rng(0)
    x, y = rng.random((5, 3)), rng.random((5, 3))
    np.random.seed(123)
    alone = aggregate.interval_estimates({"x": x}, reps=300)["x"]
    assert np.random.randint(1 << 30) == np.random.RandomState(123).randint(1 << 30)  # restored
    both = aggregate.interval_estimates({"y": y, "x": x}, reps=300)
    assert both["x"] == alone and both["y"] != alone
    assert aggregate.interval_estimates({"x": x}, reps=300, seed=1)["x"] != alone
    p_alone = aggregate.improvement_probabilities({"xy": (x, y)}, reps=300)["xy"]
    assert aggregate.improvement_probabilities({"yx": (y, x), "xy": (x, y)}, reps=300)["xy"] == p_alone


def test_binned_curve_and_ci():
    edges = np.linspace(0, 100, 6)                     # 5 bins of 20
    b = curves.binned(np.array([0, 10, 50, 90]), np.array([1.0, 3.0, 5.0, 7.0]), edges)
    np.testing.assert_allclose(b, [2.0, 3.5, 5.0, 6.0, 7.0])   # bins 1, 3 interpolated
    late = curves.binned(np.array([50.0]), np.array([1.0]), edges)
    assert np.isnan(late[:2]).all() and np.isnan(late[3:]).all()
    mean, lo, hi = curves.mean_ci(np.array([[1.0, 2.0], [3.0, np.nan]]))
    np.testing.assert_allclose(mean, [2.0, 2.0])
    assert lo[0] < 2.0 < hi[0] and np.isnan(lo[1])


# ---------------------------------------------------------------------------- a whole report
GAMES_HNS = {  # game -> (rssm, rssm+var) human-normalised means
    "Pong": (0.5, 1.5), "Breakout": (0.25, 0.5), "Boxing": (2.0, 3.0)}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("runs")
    # Atari sweep: rssm vs rssm+var on 3 games x 2 seeds; rssm+var Pong seed 1 is unfinished.
    atari = parse_sweep({"name": "atari-test", "layout": "atari100k",
                         "compute": {"total": "seconds"}, "defaults": {"steps": 10_000},
                         "grid": {"backbone": ["rssm"], "objective": ["none", "var"],
                                  "env": [f"atari100k:{g}" for g in GAMES_HNS], "seed": [0, 1]}})
    sroot = root / "atari"
    write_json(sroot / "_sweep" / "atari-test.json", atari.manifest())
    for c in atari.cells:
        game = c.env.split(":")[1]
        h = GAMES_HNS[game][c.objective == "var"]
        v = hns_score(game, h)
        score = None if (c.method == "rssm+var" and game == "Pong" and c.seed == 1) else \
            v + (0.0 if c.method == "rssm+var" and game == "Pong" else (-1.0, 1.0)[c.seed])
        make_run(sroot, c.name, c.env, c.backbone, c.objective, c.seed, score, reached=5000,
                 diagnostics=True)
    # DMC runs without a manifest: proprio walker-walk and cheetah-run, one seed.
    for method, obj, ww, cr in (("rssm", "none", 900.0, 600.0), ("rssm+var", "var", 950.0, 540.0)):
        for task, s in (("walker-walk", ww), ("cheetah-run", cr)):
            make_run(root / "dmc", f"{method}/{task}", f"dmc:{task}", "rssm", obj, 0, s,
                     steps=500_000)
    # Ablation sweep with named methods.
    abl = parse_sweep({"name": "ablation-test", "layout": "ablation",
                       "methods": [{"name": "tssm", "backbone": "tssm"},
                                   {"name": "tssm+static", "label": "STORM + static weight",
                                    "backbone": "tssm", "objective": "var",
                                    "set": {"var.weight": "static"}}],
                       "grid": {"env": ["atari100k:Alien"], "seed": [0]}})
    write_json(root / "abl" / "_sweep" / "ablation-test.json", abl.manifest())
    make_run(root / "abl", abl.cells[0].name, "atari100k:Alien", "tssm", "none", 0, 1000.0)
    make_run(root / "abl", abl.cells[1].name, "atari100k:Alien", "tssm", "var", 0, 900.0)
    # Benchmark cost rows and a Garnet summary.
    (root / "bench").mkdir()
    (root / "bench" / "rssm_cost.json").write_text(json.dumps([
        {"backbone": "rssm", "objective": "none", "env": "atari100k:Pong", "s_per_update": 1.0,
         "peak_rss_mb": 2000.0, "peak_gpu_mb": None, "device": "cpu"},
        {"backbone": "rssm", "objective": "var", "env": "atari100k:Pong",
         "s_per_update": 1.011, "peak_rss_mb": 2028.0, "peak_gpu_mb": None, "device": "cpu"}]))
    (root / "bench" / "tssm_cost.json").write_text(json.dumps({"rows": [
        {"backbone": "tssm", "objective": "none", "env": "atari100k:Pong", "s_per_update": 2.0,
         "peak_rss_mb": None, "peak_gpu_mb": 5806.0, "device": "cuda"},
        {"backbone": "tssm", "objective": "var", "env": "atari100k:Pong", "s_per_update": 2.1,
         "overhead_pct": 2.04, "peak_rss_mb": None, "peak_gpu_mb": 5864.0, "device": "cuda"}],
        "meta": {}}))
    (root / "garnet").mkdir()
    (root / "garnet" / "results.csv").write_text("loss,err\nmle,0.1\n")
    (root / "garnet" / "summary.md").write_text("# Garnet summary\n\n![err](err.png)\n")
    out = root / "out"
    assert report_main([str(root), "--out", str(out), "--reps", "200"]) == 0
    return out, (out / "report.md").read_text()


def test_several_roots_make_one_report(report, tmp_path):
    """`vawm report A B`: the experiments (and Garnet summaries) of every root, nothing else."""
    root, out = report[0].parent, tmp_path / "two"
    assert report_main([str(root / "abl"), str(root / "garnet"), "--out", str(out),
                        "--no-figures", "--reps", "50"]) == 0
    md = (out / "report.md").read_text()
    assert md.count("## ablation-test") == 1 and "## Garnet" in md and "Roots `" in md
    assert "atari-test" not in md
    assert report_main([str(root / "abl"), str(tmp_path / "nope")]) == 2


def test_atari_table_known_numbers(report):
    _, md = report
    # per-game means and % against the baseline column
    pong = table_rows(md, "Pong")[0]
    assert pong[1:3] == ["-20.7", "14.6"]
    assert pong[4].startswith("32.2†") or pong[4].startswith("32.3†")   # 1 of 2 seeds
    assert pong[4].endswith(f"({tables.arrow_pct(100 * (32.25 + 3.05) / 3.05)})")
    assert tables.arrow_pct(100 * (32.25 + 3.05) / 3.05) == "↑1157.4%"
    breakout = table_rows(md, "Breakout")[0]
    assert breakout[3] == "8.9" and breakout[4] == "16.1 (↑80.9%)"
    boxing = table_rows(md, "Boxing")[0]
    assert boxing[3] == "24.1" and boxing[4] == "36.1 (↑49.8%)"
    # aggregates: rssm mean (0.5+0.25+2)/3, median 0.5, 1 superhuman; rssm+var 5/3, 1.5, 2
    assert table_rows(md, "Superhuman (↑)")[0][3:] == ["1", "2 (↑1)"]
    assert table_rows(md, "Mean (↑)")[0][3:] == ["0.92", "1.67 (↑0.75)"]
    assert table_rows(md, "Median (↑)")[0][3:] == ["0.50", "1.50 (↑1.00)"]


def test_missing_seed_is_flagged(report):
    _, md = report
    assert ("rssm+var on `atari100k:Pong`: 1/2 seeds finished (seed 1: unfinished at "
            "5,000/10,000 env steps)") in md
    assert "IQM (↑)" in md and "rssm+var: seeds 0" in md   # seed 1 lacks Pong: left out


def test_dmc_ablation_cost_garnet(report):
    out, md = report
    assert table_rows(md, "Environment steps")[0][1:] == ["500K", "500K"]
    assert table_rows(md, "Walker Walk")[0][1:] == ["900", "950 (↑5.6%)"]
    # task mean 750 -> 745 (-0.7%), median the same with two tasks
    assert table_rows(md, "Task mean")[0][1:] == ["750", "745 (↓0.7%)"]
    assert table_rows(md, "STORM + static weight")[0][1:] == ["900.0 (↓10.0%)"]
    # the ablation's spread table: one seed each, so std 0 and n=1
    assert "1000.0 ± 0.0 (n=1)" in table_rows(md, "atari100k:Alien")[0][1]
    assert table_rows(md, "Seconds per update")[0][1:] == ["1.000", "1.011 (+1.1%)"]
    assert table_rows(md, "Seconds per update")[1][1:] == ["2.000", "2.100 (+2.0%)"]  # paired
    assert table_rows(md, "GPU memory (MB)")[0][1:] == ["5806", "5864 (+1.0%)"]
    assert table_rows(md, "CPU memory, peak RSS (MB)")[0][1:] == ["2000", "2028 (+1.4%)"]
    assert "### Garnet summary" in md and "](../garnet/err.png)" in md
    for name in ("atari-test_returns.png", "atari-test_returns_aggregate.png",
                 "atari-test_diagnostics.png", "atari-test_aggregates.png"):
        assert (out / "figures" / name).stat().st_size > 1000, name
    assert len((out / "scores.csv").read_text().splitlines()) == 1 + 12 + 4 + 2


def test_task_mean_only_where_returns_share_a_scale():
    stats = {"a": {"gym:CartPole-v1": (200.0, 10.0, 3), "gym:Pendulum-v1": (-150.0, 5.0, 3)}}
    flags = {"a": {}}
    kept = tables.generic_table(stats, flags, ["a"], {"a": None}, list(stats["a"]))
    dropped = tables.generic_table(stats, flags, ["a"], {"a": None}, list(stats["a"]),
                                   aggregate=False)
    assert "Task mean" in kept and "Task mean" not in dropped and "Task median" not in dropped
    assert "200.0 ± 10.0 (n=3)" in dropped


@pytest.mark.parametrize("layout,xlabel", [("capacity", "world-model size"),
                                           ("image-size", "image size (pixels)")])
def test_size_layouts_table_and_plot(tmp_path, layout, xlabel):
    """capacity (VaR Fig. 2a) and image-size (Fig. 2b): the ablation table, then final return
    against each method's size: per family."""
    from vawm.sweep.spec import SweepError
    methods = [{"name": f"rssm{v}-{s}", "label": f"DreamerV3{' + Var' if v else ''} {s}",
                "backbone": "rssm", "objective": "var" if v else "none", "size": s,
                **({"baseline": f"rssm-{s}"} if v else {})}
               for s in ("small", "large") for v in ("", "+var")]
    spec = {"name": "cap-test", "layout": layout, "methods": methods,
            "grid": {"env": ["gym:CartPole-v1", "gym:Pendulum-v1"], "seed": [0, 1]}}
    sw = parse_sweep(spec)
    assert {c.size for c in sw.cells} == {"small", "large"}
    write_json(tmp_path / "cap" / "_sweep" / "cap-test.json", sw.manifest())
    score = {"rssm-small": 100.0, "rssm+var-small": 150.0, "rssm-large": 300.0,
             "rssm+var-large": 310.0}
    for c in sw.cells:
        make_run(tmp_path / "cap", c.name, c.env, c.backbone, c.objective, c.seed,
                 score[c.method] + 10 * c.seed)
    out = tmp_path / "out"
    assert report_main([str(tmp_path / "cap"), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert table_rows(md, "DreamerV3 + Var small")[0][1] == "155.0 (↑47.6%)"  # 155 vs 105
    fig = f"cap-test_{layout}.png"
    assert f"](figures/{fig})" in md and (out / "figures" / fig).exists()
    assert f"Final evaluation return against {xlabel}" in md
    del spec["methods"][1]["size"]
    with pytest.raises(SweepError, match=f"layout {layout} needs a size"):
        parse_sweep(spec)


def test_probability_of_improvement_and_per_task_iqm():
    """P(X > Y) per task is the Mann-Whitney statistic (ties count half), averaged over tasks;
    scale-free across tasks. IQM of one task's runs is the mean of its middle half."""
    import numpy as np

    from vawm.report import aggregate
    x = np.array([[10.0, 1000.0], [11.0, 900.0], [12.0, 950.0]])     # 3 runs x 2 tasks
    y = np.array([[1.0, 100.0], [2.0, 990.0], [12.0, 200.0]])
    est = aggregate.improvement_probabilities({"x": (x, y)}, reps=200)
    # task 0: 10,11 beat 1,2 and lose to 12; 12 ties 12 -> (2+2+2.5)/9; task 1: 1000 beats all,
    # 900 beats 100, 200; 950 beats 100, 200 -> (3+2+2)/9
    want = ((2 + 2 + 2.5) / 9 + (3 + 2 + 2) / 9) / 2
    assert est["x"][0] == pytest.approx(want)
    assert est["x"][1] <= est["x"][0] <= est["x"][2]
    same = aggregate.improvement_probabilities({"s": (x, x)}, reps=50)
    assert same["s"][0] == pytest.approx(0.5)
    pt, lo, hi = aggregate.iqm_per_task(np.array([0.0, 1.0, 2.0, 3.0, 100.0, -100.0, 1.5, 2.5]),
                                        reps=200)
    assert pt == pytest.approx(np.mean([1.0, 1.5, 2.0, 2.5])) and lo <= pt <= hi


def test_range_normalised_aggregate_over_tasks_of_different_scales(tmp_path):
    """Tasks with known possible returns (CartPole-v1 0-500, DMC 0-1000) are put on one scale:
    IQM / mean over tasks and seeds of (return - min) / (max - min); a task without known bounds
    is left out and said so."""
    from vawm.report.runs import Experiment
    from vawm.report.sections import Gathered, generic_stats_section

    assert tables.return_range("gym:CartPole-v1") == (0.0, 500.0)
    assert tables.return_range("dmc:cartpole-swingup") == (0.0, 1000.0)
    assert tables.return_range("minatar:breakout") is None
    envs = ["gym:CartPole-v1", "dmc:cartpole-swingup", "minatar:breakout"]
    g = Gathered(envs=envs, scores={
        "a": {envs[0]: {0: 250.0, 1: 250.0}, envs[1]: {0: 500.0, 1: 500.0}, envs[2]: {0: 3.0}},
        "b": {envs[0]: {0: 500.0, 1: 400.0}, envs[1]: {0: 1000.0, 1: 800.0}, envs[2]: {0: 9.0}}})
    exp = Experiment(name="h2h", layout="generic", runs=[], expected=[], methods=["a", "b"],
                     baselines={"a": None, "b": "a"})
    md = "\n".join(generic_stats_section(exp, g, reps=200, seed=0, figdir=tmp_path))
    # columns: Method, IQM, OG, Mean, Median, seeds x tasks (the per-task IQM table has 4 cells)
    agg_a = [r for r in table_rows(md, "a") if len(r) == 6][0]
    agg_b = [r for r in table_rows(md, "b") if len(r) == 6][0]
    assert agg_a[3].startswith("0.500 ") and agg_b[3].startswith("0.900 ")
    assert agg_a[5] == "2 x 2" and "left out: minatar:breakout" in md
    assert (tmp_path / "h2h_aggregates.png").exists()


def test_late_diagnostics_table_hand_computed(tmp_path):
    """Voelcker et al. 2025 App. C.3: per method and task, the mean of a logged diagnostic over
    each finished run's second half of training, mean ± std over seeds, difference to the
    baseline; methods that do not log a key get no column; unfinished runs are not counted."""
    from vawm.report.diagnostics import diagnostics_section, late_mean
    from vawm.report.runs import Cell, Experiment, Run
    from vawm.report.sections import gather

    rows = [{"env_step": s, "wm/model_entropy": float(s)} for s in (0, 25, 50, 75, 100)]
    assert late_mean(rows, "wm/model_entropy", 100) == pytest.approx((50 + 75 + 100) / 3)
    assert late_mean(rows, "wm/model_entropy", 400) is None          # nothing past 200 logged
    assert late_mean(rows, "vaml/loss", 100) is None
    env = "dmc:walker-walk"
    runs, metrics, expected = [], {}, []
    late = {("vaml", 0): 2.0, ("vaml", 1): 4.0, ("cvaml", 0): 5.0, ("cvaml", 1): 9.0}
    for (m, seed), v in late.items():
        p = tmp_path / f"{m}{seed}"
        runs.append(Run(path=p, env=env, backbone="latent", objective="vaml", method=m, seed=seed,
                        status="finished", score=1.0,
                        steps=100, env_steps=100))
        # early values must not count: 1000 before step 50
        metrics[p] = [{"env_step": s, "wm/model_entropy": 1000.0 if s < 50 else v,
                       "vaml/loss": 0.5} for s in range(0, 101, 10)]
        expected.append(Cell(method=m, env=env, seed=seed))
    p = tmp_path / "det0"         # a deterministic model: no entropy logged
    runs.append(Run(path=p, env=env, backbone="latent", objective="vaml", method="det", seed=0,
                    status="finished", score=1.0,
                    steps=100, env_steps=100))
    metrics[p] = [{"env_step": s, "vaml/loss": 0.25} for s in range(0, 101, 10)]
    expected += [Cell(method="det", env=env, seed=s) for s in (0, 1)]   # seed 1 missing
    exp = Experiment(name="c", layout="generic", runs=runs, expected=expected,
                     methods=["det", "vaml", "cvaml"],
                     baselines={"det": None, "vaml": None, "cvaml": "vaml"})
    md = "\n".join(diagnostics_section(exp, gather(exp), metrics))
    ent = md.split("**model entropy")[1].split("**")[1]
    head = [r for r in ent.splitlines() if r.startswith("| Task")][0]
    assert "det" not in head and "vaml" in head
    row = table_rows(ent, env)[0]
    assert row[1] == f"3.0 ± {np.std([2.0, 4.0], ddof=1):.1f} (n=2)"
    assert row[2] == f"7.0 ± {np.std([5.0, 9.0], ddof=1):.1f} (n=2) (↑4.0)"
    loss = md.split("VAML loss as trained")[1]
    assert table_rows(loss, env)[0][1] == "0.250 ± 0.000 (n=1)†"     # 1/2 seeds: flagged
    assert diagnostics_section(exp, gather(exp), {}) == []           # no metrics: no section


def test_aggregate_curves_of_a_generic_layout_only_on_one_scale(tmp_path):
    """Tasks that share a scale (DMC 0..1000) get a mean-over-tasks curve per seed in any layout
    (Voelcker et al. 2025 §7 aggregates a domain's tasks); tasks on different scales do not."""
    from vawm.report.build import aggregate_curves
    from vawm.report.runs import Experiment, Run

    def exp(envs):
        runs = [Run(path=tmp_path / f"{e}{s}", env=e, backbone="latent", objective="vaml",
                    method="m", seed=s, status="finished", score=1.0)
                for e in envs for s in (0, 1)]
        return Experiment(name="g", layout="generic", runs=runs, expected=[], methods=["m"],
                          baselines={"m": None})
    x = np.array([1.0, 2.0])
    dmc = {"dmc:a": (x, {"m": np.array([[0.0, 10.0], [2.0, 20.0]])}),
           "dmc:b": (x, {"m": np.array([[4.0, 30.0], [6.0, 40.0]])})}
    agg = aggregate_curves(exp(list(dmc)), dmc, {})
    (title, (x_out, per)), = agg.items()
    assert title == "Proprio: mean over 2 tasks" and np.array_equal(x_out, x)
    np.testing.assert_allclose(per["m"], [[2.0, 20.0], [4.0, 30.0]])   # per seed, over tasks
    mixed = {"dmc:a": dmc["dmc:a"], "gym:CartPole-v1": dmc["dmc:b"]}
    assert aggregate_curves(exp(list(mixed)), mixed, {}) == {}
