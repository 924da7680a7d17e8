"""Updates per second of one backbone/preset/objective on a synthetic replay batch.

    python benchmarks/throughput.py --backbone tssm                     # storm-cpu, CartPole shapes
    python benchmarks/throughput.py --backbone tssm --preset storm --obs-shape 3,64,64 --device cuda
    python benchmarks/throughput.py --backbone rssm --preset cpu --objective var
    python benchmarks/throughput.py --backbone latent --objective vaml --preset latent-cpu,cvaml-1-1
    bash benchmarks/gpu_atari.sh             # on a GPU: size S, Atari shapes, fp32 / bf16 / CUDA graph

Measured: seconds per full ``Agent.train_step`` (observe, objective, world-model step, actor-critic
in imagination): ``--warmup`` untimed updates, then the median (and IQR) of ``--updates`` timed
ones (with ``run.cuda_graph=true`` the warm-up covers the graph's capture: timed updates are
replays). Also, on the same batch: the imagination alone (``backbone.imagine`` from
``agent.imag_starts`` starts, horizon ``agent.horizon``, no gradient, as the agent calls it), and
for ``tssm`` the same rollout without the key/value cache (``tssm.kv_cache=false``: every step
re-runs the whole context + rollout), which is what the cache saves. The batch is random
observations of the env's (or ``--obs-shape``'s) shapes; its content does not change the cost.
``--compare KEY=VALUE`` (repeatable) builds a second agent with those settings on top of the first
(e.g. ``--compare run.precision=bf16``) and times both in paired rounds, one update each in
alternating order, so a shared machine's drift hits both alike; it reports the median over rounds
of the ratio t_compare / t_base with its IQR. ``var`` runs with ``var.warmup=0``. Run it niced on
shared machines; for the cost of every objective against ``none`` use
``benchmarks/objective_cost.py``.

``--backbone latent`` (default env dmc:cheetah-run, preset latent-cpu) times the TD learner's update
and, instead of imagination, one acting step of a single env (encode + action) with MPC
(``td.mpc=true``, the preset's MPC sizes) and with the actor alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from vawm.state import tree_map

DEFAULT_PRESET = {"rssm": "cpu", "tssm": "storm-cpu", "vae-lstm": "cartpole-vae-lstm",
                  "latent": "latent-cpu"}
DEFAULT_ENV = {"latent": "dmc:cheetah-run"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="tssm", help="rssm | tssm | vae-lstm")
    p.add_argument("--preset", help="config presets (default: storm-cpu for tssm, cpu for rssm)")
    p.add_argument("--objective", default="none")
    p.add_argument("--env", help="env id whose shapes the batch takes (default: gym:CartPole-v1; "
                   "latent: dmc:cheetah-run)")
    p.add_argument("--obs-shape", help="synthetic shape instead of --env's: 3,64,64 (image) or 17")
    p.add_argument("--action-dim", type=int, default=6, help="with --obs-shape (discrete)")
    p.add_argument("--updates", type=int, default=10, help="timed updates (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed updates first")
    p.add_argument("--imagine-reps", type=int, default=5, help="timed imagination rollouts")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch default)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--compare", action="append", default=[], metavar="KEY=VALUE",
                   help="also time an agent with these settings, paired with the first")
    p.add_argument("--out", help="JSON output (default: runs/bench/throughput-<backbone>-....json)")
    return p.parse_args(argv)


def median_iqr(xs: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return q[0], statistics.median(xs), q[2]


def warmup_updates(agent, n: int) -> int:
    """Untimed updates: ``--warmup``, and with ``run.cuda_graph`` at least the graph's warm-up
    and capture (the timed updates are replays)."""
    return max(n, agent.graphed.warmup + 1) if agent.graphed is not None else n


def timed(fn, n: int, device: torch.device) -> list[float]:
    out = []
    for _ in range(n):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        out.append(time.perf_counter() - t0)
    return out


def imagination_times(agent, cfg, batch, device: torch.device, args) -> dict[str, list[float]]:
    """The imagination alone, as the agent calls it (no gradient for discrete actions)."""
    wm = agent.wm
    with torch.no_grad():
        start = wm.observe(batch).start
    n = batch["reward"].numel()
    if cfg.agent.imag_starts and cfg.agent.imag_starts < n:
        idx = torch.randperm(n, device=device)[: cfg.agent.imag_starts]
        start = tree_map(lambda t: t[idx], start)
        n = cfg.agent.imag_starts
    policy = lambda f: agent.ac.actor(f).sample()  # noqa: E731

    def imagine():
        with torch.no_grad():
            wm.imagine(start, policy, cfg.agent.horizon)

    imagine()
    rows = {"imagine": timed(imagine, args.imagine_reps, device)}
    if args.backbone == "tssm":
        wm.cfg.kv_cache = False
        imagine()
        rows["imagine_no_cache"] = timed(imagine, args.imagine_reps, device)
        wm.cfg.kv_cache = True
    return rows


def acting_times(agent, info: dict, device: torch.device, reps: int) -> dict[str, list[float]]:
    """One env's acting step (encode + action): with MPC and with the actor alone."""
    obs = torch.randn(1, *info["obs_shape"], device=device)
    carry = agent.wm.initial_carry(1)
    prev, first = torch.zeros(1, info["action_dim"], device=device), torch.ones(1, dtype=bool)
    rows = {}
    for name, mpc in (("act_mpc", True), ("act_policy", False)):
        agent.ac.cfg.mpc = mpc
        act = lambda: agent.act(carry, obs, prev, first)  # noqa: E731
        timed(act, 3, device)
        rows[name] = timed(act, reps, device)
    return rows


def main(argv: list[str] | None = None) -> int:
    from vawm.agent import Agent
    from vawm.config import build_config
    from vawm.replay import random_batch
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu")
                          if args.device == "auto" else args.device)
    preset = args.preset or DEFAULT_PRESET.get(args.backbone, "cpu")
    env = args.env or DEFAULT_ENV.get(args.backbone, "gym:CartPole-v1")
    flags = {"backbone": args.backbone, "objective": args.objective, "env": env,
             "seed": args.seed}
    cfg = build_config(preset, flags, ["var.warmup=0", *args.set])
    if args.obs_shape:
        shape = tuple(int(s) for s in args.obs_shape.split(","))
        info = {"obs_kind": "image" if len(shape) == 3 else "vector", "obs_shape": shape,
                "discrete": args.backbone != "latent", "action_dim": args.action_dim}
    else:
        from vawm.envs import env_info
        info = env_info(cfg.env, cfg.env_cfg)
    torch.manual_seed(args.seed)
    agent = Agent(cfg, info).to(device)
    batch = random_batch(cfg, info, device)
    timed(lambda: agent.train_step(batch), warmup_updates(agent, args.warmup), device)
    upd = timed(lambda: agent.train_step(batch), args.updates, device)
    paired = None
    if args.compare:
        ccfg = build_config(preset, flags, ["var.warmup=0", *args.set, *args.compare])
        torch.manual_seed(args.seed)
        other = Agent(ccfg, info).to(device)
        timed(lambda: other.train_step(batch), warmup_updates(other, args.warmup), device)
        paired = {"base": [], "compare": []}
        for r in range(args.updates):
            order = (("base", agent), ("compare", other))[:: 1 if r % 2 == 0 else -1]
            for name, a in order:
                paired[name] += timed(lambda a=a: a.train_step(batch), 1, device)

    if agent.wm.behaviour == "td":
        rows = {"update": upd, **acting_times(agent, info, device, args.imagine_reps * 10)}
        n = 0
    else:
        rows = {"update": upd, **imagination_times(agent, cfg, batch, device, args)}
        n = min(cfg.agent.imag_starts or batch["reward"].numel(), batch["reward"].numel())
    label = args.obs_shape and "synthetic:" + args.obs_shape.replace(",", "x") or env
    print(f"throughput: {args.backbone}+{args.objective}, preset {preset}, {label}, batch "
          f"{cfg.run.batch_size}x{cfg.run.batch_length}, {n} imagination starts x horizon "
          f"{cfg.agent.horizon}, device {device}, threads {torch.get_num_threads()}, load "
          f"{os.getloadavg()[0]:.1f}")
    result = {"backbone": args.backbone, "objective": args.objective, "preset": preset,
              "env": label, "device": str(device), "threads": torch.get_num_threads(),
              "n_updates": args.updates, "warmup_updates": args.warmup, "imag_starts": n,
              "horizon": cfg.agent.horizon, "loadavg": os.getloadavg(),
              "torch": torch.__version__, "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    for name, xs in rows.items():
        q1, med, q3 = median_iqr(xs)
        result[name] = {"median_s": round(med, 5), "iqr_s": [round(q1, 5), round(q3, 5)],
                        "n": len(xs)}
        extra = f", {1 / med:.2f} updates/s" if name == "update" else ""
        print(f"  {name:17s} {med:.4f} s (IQR {q1:.4f}-{q3:.4f}, n={len(xs)}){extra}")
    if paired:
        ratios = [c / b for b, c in zip(paired["base"], paired["compare"], strict=True)]
        q1, med, q3 = median_iqr(ratios)
        result["compare"] = {"settings": args.compare, "ratio_median": round(med, 4),
                             "ratio_iqr": [round(q1, 4), round(q3, 4)], "n": len(ratios),
                             "base_median_s": round(statistics.median(paired["base"]), 5),
                             "compare_median_s": round(statistics.median(paired["compare"]), 5)}
        print(f"  with {' '.join(args.compare)}: {statistics.median(paired['compare']):.4f} s "
              f"vs {statistics.median(paired['base']):.4f} s per update in paired rounds; "
              f"ratio {med:.3f} (IQR {q1:.3f}-{q3:.3f}, n={len(ratios)})")
    if "imagine_no_cache" in result:
        speedup = result["imagine_no_cache"]["median_s"] / result["imagine"]["median_s"]
        result["cache_speedup"] = round(speedup, 2)
        print(f"  key/value cache: {speedup:.2f}x faster imagination")
    out = Path(args.out) if args.out else Path("runs/bench") / (
        f"throughput-{args.backbone}-{args.objective}-{label.replace(':', '-')}-{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
