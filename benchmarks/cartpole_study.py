"""anon. 2026 Table 1, Fig. 1 and 2 from the runs of ``experiments/cartpole_dream_critic.yaml``.

    python benchmarks/cartpole_study.py ROOT [--out DIR] [--pred-episodes 10] [--threshold 400]

For every run directory under ROOT (any folder holding ``config.yaml``), grouped by method: the
sweep's method name for a sweep's layout ``ROOT/<method>/<env>/seed<k>``, else backbone +
objective:

- final reward: ``summary.json``'s ``eval_return_mean`` (the trainer's final evaluation over
  ``run.eval_episodes`` test episodes: 100 in the ``cartpole-vae-lstm`` preset; mode actions).
  For an unfinished run, ``--eval-unfinished N`` scores its latest checkpoint the same way over N
  episodes (marked ``checkpoint`` in the per-run table);
- prediction error: MSE between the world model's one-step prediction of the next observation
  (decoder of the LSTM's mean latent, ``vawm.worldmodels.vae_lstm.next_obs_error``) and the real
  next observation, on held-out transitions: ``--pred-episodes`` fresh episodes (env seeds
  30000 + k, never used in training or evaluation) played by the run's final policy
  (``--pred-policy agent``, mode actions) or uniformly at random (``random``), each filtered as one
  sequence. For reference the same transitions are scored by "copy the last observation";
- steps to reward 400: the first ``env_step`` of ``metrics.jsonl`` whose ``train/episode_return``
  (mean of the training episodes that ended in that log interval) reaches ``--threshold``; the
  run counts as "not reached" otherwise (the mean over seeds is then over the runs that did);
- Fig. 1: ``train/episode_return`` against environment steps, mean and std over seeds;
- Fig. 2: ``wm/pred_mse`` (the same one-step prediction error, on replayed training batches,
  logged by the backbone every log interval) against environment steps.

Writes ``table.md``, ``results.json``, ``fig1_reward.png`` and ``fig2_prediction_error.png``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

HELD_OUT_SEED = 30_000


# ---------------------------------------------------------------------------- reading runs
def find_runs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("config.yaml"))


def read_metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def curve(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["env_step"], r[key]) for r in rows if key in r and r[key] is not None]
    if not pts:
        return np.zeros(0), np.zeros(0)
    x, y = zip(*pts, strict=True)
    return np.asarray(x, float), np.asarray(y, float)


def steps_to_reward(rows: list[dict], threshold: float) -> int | None:
    """First ``env_step`` whose logged mean training return reaches ``threshold`` (None: never)."""
    for r in rows:
        v = r.get("train/episode_return")
        if v is not None and v >= threshold:
            return int(r["env_step"])
    return None


def method_name(cfg, run: Path, root: Path) -> str:
    """The sweep's method (first folder under ``root`` of a ``<method>/<env>/seed<k>`` run),
    else backbone[+objective]."""
    parts = run.resolve().relative_to(root.resolve()).parts
    if len(parts) >= 3 and parts[-1].startswith("seed"):
        return parts[0]
    return cfg.backbone if cfg.objective == "none" else f"{cfg.backbone}+{cfg.objective}"


# ---------------------------------------------------------------------------- held-out error
def load_checkpoint(run: Path) -> dict:
    from vawm import checkpoint
    from vawm.train import CKPT

    path = run / CKPT
    try:
        return checkpoint.load(path)
    except checkpoint.CheckpointError:
        # checkpoints written before the spine converted numpy driver state: allow numpy arrays
        ma = (np._core if hasattr(np, "_core") else np.core).multiarray
        safe = [ma._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.int64)),
                type(np.dtype(np.float32))]
        with torch.serialization.safe_globals(safe):
            return torch.load(path, map_location="cpu", weights_only=True)


def load_agent(run: Path):
    """(config, agent in eval mode, env steps of the checkpoint) of a run's latest checkpoint."""
    from vawm.agent import Agent
    from vawm.config import load_config_file
    from vawm.envs import action_repeat, env_info

    cfg = load_config_file(str(run / "config.yaml"))
    agent = Agent(cfg, env_info(cfg.env, cfg.env_cfg))
    sd = load_checkpoint(run)
    agent.load_state_dict(sd["agent"])
    agent.eval()
    return cfg, agent, int(sd["policy_steps"]) * action_repeat(cfg.env, cfg.env_cfg)


@torch.no_grad()
def held_out_episodes(cfg, agent, episodes: int, policy: str, seed: int) -> list[dict]:
    """Play ``episodes`` episodes in fresh evaluation envs (mode actions, or uniform random ones
    with ``policy=random``); returns one [1, T] batch per episode in replay layout."""
    from vawm.acting import Acting, random_actions
    from vawm.driver import Driver

    out = []
    rng = np.random.default_rng(seed)
    override = None
    if policy == "random":
        override = lambda a: random_actions(1, agent.act_dim, agent.discrete, "cpu", rng)
    keys = ("obs", "action", "reward", "is_first", "is_terminal")
    for k in range(episodes):
        driver = Driver(cfg.env, 1, seed + k, cfg.env_cfg, False, training=False)
        acting = Acting(agent, driver, torch.device("cpu"), mode=True)
        acting.reset()
        rec: list[dict] = []
        while not rec or not rec[-1]["is_last"][0]:
            rec.append(acting.step(override))
        driver.close()
        out.append({key: torch.as_tensor(np.stack([r[key][0] for r in rec]))[None] for key in keys})
    return out


def prediction_error(run: Path, episodes: int = 10, policy: str = "agent") -> dict:
    """Held-out one-step prediction MSE of a vae-lstm run's final world model (see module doc).

    ``pred_mse`` filters each episode from its start, as the agent does while acting;
    ``pred_mse_chunked`` cuts episodes into windows of the training sequence length
    (``run.batch_length``), each starting from h = 0, as in training. ``copy_last_mse`` scores the
    same transitions by predicting o_{t+1} = o_t."""
    from vawm.worldmodels.vae_lstm import next_obs_error

    cfg, agent, steps = load_agent(run)
    if cfg.backbone != "vae-lstm":
        raise ValueError(f"{run}: prediction error is implemented for vae-lstm, not {cfg.backbone}")
    torch.manual_seed(cfg.seed)
    eps = held_out_episodes(cfg, agent, episodes, policy, HELD_OUT_SEED)
    L = cfg.run.batch_length
    tot = {"full": 0.0, "chunked": 0.0}
    cnt = {"full": 0, "chunked": 0}
    copy = {"full": 0.0, "chunked": 0.0}
    for b in eps:
        T = b["obs"].shape[1]
        for mode, starts in (("full", [0]), ("chunked", range(0, T, L))):
            for s0 in starts:
                sub = {k: v[:, s0:T if mode == "full" else s0 + L] for k, v in b.items()}
                s, c = next_obs_error(agent.wm, sub)
                tot[mode], cnt[mode] = tot[mode] + s, cnt[mode] + c
                o = sub["obs"][0].float()
                copy[mode] += float((o[1:] - o[:-1]).pow(2).mean(-1).sum())
    return {"pred_mse": tot["full"] / max(cnt["full"], 1),
            "copy_last_mse": copy["full"] / max(cnt["full"], 1),
            "pred_mse_chunked": tot["chunked"] / max(cnt["chunked"], 1),
            "copy_last_mse_chunked": copy["chunked"] / max(cnt["chunked"], 1),
            "pred_transitions": cnt["full"], "pred_episodes": episodes, "pred_policy": policy,
            "checkpoint_env_steps": steps}


def checkpoint_reward(run: Path, episodes: int) -> dict:
    """The trainer's final evaluation, applied to the latest checkpoint of an unfinished run."""
    from vawm.acting import evaluate_policy

    cfg, agent, steps = load_agent(run)
    ev = evaluate_policy(agent, cfg, torch.device("cpu"), episodes)
    return {"final_reward": ev["eval_return_mean"], "eval_episodes": ev["eval_episodes"],
            "reward_source": f"checkpoint@{steps}", "checkpoint_env_steps": steps}


# ---------------------------------------------------------------------------- table and figures
def mean_std(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return "n/a"
    return f"{np.mean(xs):.3f} ± {np.std(xs):.3f}" if max(abs(x) for x in xs) < 10 else \
        f"{np.mean(xs):.1f} ± {np.std(xs):.1f}"


def plot_curves(groups: dict[str, list[dict]], key: str, ylabel: str, path: Path, grid: int = 100
                ) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for method, runs in groups.items():
        curves = [curve(r["rows"], key) for r in runs]
        curves = [c for c in curves if len(c[0]) > 1]
        if not curves:
            continue
        hi = min(c[0][-1] for c in curves)
        lo = max(c[0][0] for c in curves)
        xs = np.linspace(lo, hi, grid)
        ys = np.stack([np.interp(xs, x, y) for x, y in curves])
        m, s = ys.mean(0), ys.std(0)
        ax.plot(xs, m, label=f"{method} ({len(curves)} seeds)")
        ax.fill_between(xs, m - s, m + s, alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel(ylabel)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path)
    p.add_argument("--out", type=Path, help="output folder (default: ROOT/study)")
    p.add_argument("--pred-episodes", type=int, default=10)
    p.add_argument("--pred-policy", choices=("agent", "random"), default="agent")
    p.add_argument("--threshold", type=float, default=400.0)
    p.add_argument("--no-pred", action="store_true", help="skip the held-out prediction error")
    p.add_argument("--eval-unfinished", type=int, default=0, metavar="N",
                   help="score the latest checkpoint of unfinished runs over N test episodes")
    args = p.parse_args(argv)
    from vawm.config import load_config_file

    torch.set_num_threads(1)
    out = args.out or args.root / "study"
    out.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[dict]] = {}
    for run in find_runs(args.root):
        if run.resolve() == out.resolve():
            continue
        cfg = load_config_file(str(run / "config.yaml"))
        summ = run / "summary.json"
        summary = json.loads(summ.read_text()) if summ.exists() else {}
        rows = read_metrics(run)
        rec = {"run": str(run), "seed": cfg.seed, "rows": rows,
               "finished": summary.get("status") == "finished",
               "env_steps": summary.get("env_steps", rows[-1]["env_step"] if rows else 0),
               "final_reward": summary.get("eval_return_mean"),
               "eval_episodes": summary.get("eval_episodes"),
               "steps_to_threshold": steps_to_reward(rows, args.threshold)}
        has_ckpt = (run / "checkpoints" / "latest.pt").exists()
        rec["reward_source"] = "summary" if summary else None
        if not summary and args.eval_unfinished and has_ckpt:
            rec.update(checkpoint_reward(run, args.eval_unfinished))
        if not args.no_pred and has_ckpt:
            rec.update(prediction_error(run, args.pred_episodes, args.pred_policy))
        groups.setdefault(method_name(cfg, run, args.root), []).append(rec)
    if not groups:
        print(f"no run directories under {args.root}")
        return 1
    thr = int(args.threshold)
    lines = [f"| Method | Final reward | Prediction error (held-out MSE) | Steps to {thr} reward "
             "| runs |", "|---|---|---|---|---|"]
    for method, runs in groups.items():
        reached = [r["steps_to_threshold"] for r in runs if r["steps_to_threshold"] is not None]
        steps = f"{np.mean(reached):,.0f} ({len(reached)}/{len(runs)} reached)" if reached else \
            f"not reached (0/{len(runs)})"
        lines.append(f"| {method} | {mean_std([r['final_reward'] for r in runs])} | "
                     f"{mean_std([r.get('pred_mse') for r in runs])} | {steps} | {len(runs)} |")
    lines += ["", "| run | seed | env steps | final reward | reward from | pred MSE | "
              f"copy-last MSE | pred MSE (chunks of the training length) | steps to {thr} |",
              "|---|---|---|---|---|---|---|---|---|"]
    for method, runs in groups.items():
        for r in sorted(runs, key=lambda r: r["seed"]):
            fmt = lambda v, f: "n/a" if v is None else format(v, f)
            lines.append(f"| {method} | {r['seed']} | {r['env_steps']} | "
                         f"{fmt(r['final_reward'], '.1f')} | {r['reward_source'] or 'n/a'} | "
                         f"{fmt(r.get('pred_mse'), '.4f')} | "
                         f"{fmt(r.get('copy_last_mse'), '.4f')} | "
                         f"{fmt(r.get('pred_mse_chunked'), '.4f')} | "
                         f"{fmt(r['steps_to_threshold'], 'd')} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    res = {m: [{k: v for k, v in r.items() if k != "rows"} for r in runs]
           for m, runs in groups.items()}
    (out / "results.json").write_text(json.dumps(res, indent=2))
    plot_curves(groups, "train/episode_return", "training episode return", out / "fig1_reward.png")
    plot_curves(groups, "wm/pred_mse", "one-step prediction MSE (replay)",
                out / "fig2_prediction_error.png")
    print("\n".join(lines))
    print(f"written: {out}/table.md, results.json, fig1_reward.png, fig2_prediction_error.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
