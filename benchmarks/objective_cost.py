"""Compute cost of each value-aware objective on one backbone (VaR, anon. 2025, Table 4).

    python benchmarks/objective_cost.py                          # rssm, preset cpu, CartPole
    python benchmarks/objective_cost.py --obs-shape 3,64,64 --action-dim 6   # an Atari-sized input
    python benchmarks/objective_cost.py --backbone tssm --device cuda --updates 50

What is measured, for ``none`` and every objective in ``--objectives`` on the *same* config and
the *same* synthetic replay batch (random observations of the env's shapes, one-hot or uniform
actions, rewards in [0, 1], ~2% episode starts and terminals; the content does not change the cost):

- seconds per update: one full ``Agent.train_step`` (observe, objective, world-model step,
  actor-critic in imagination). All agents live in one process; after ``--warmup`` updates each,
  ``--updates`` rounds run one update per objective, round-robin with a rotating order, so slow
  drifts of a shared machine hit every objective alike. Reported: the median; the overhead is the
  median over rounds of the paired ratio t_objective / t_none of the same round (with its IQR).
  Also the objective's own part: (w_objective - w_none) / t_none per round, with w the time of the
  world-model step (observe, objective, world-model loss, backward, optimiser step; timed inside
  ``Agent.train_step`` with ``agent.profile``). Every objective does all its work there and the
  actor-critic step that follows is the same code for all, so this estimates the same overhead
  without the actor-critic's share of the timing noise.
- peak memory: each objective in a *fresh* subprocess (the allocator's high-water mark is per
  process). CPU: peak RSS during ``--mem-updates`` updates minus the RSS before the agent was
  built (parameters + optimiser state + activations; the CPU counterpart of the GPU number), from
  ``VmHWM`` reset through ``/proc/self/clear_refs`` (``ru_maxrss`` if that is not allowed). The
  children run with glibc's ``MALLOC_MMAP_THRESHOLD_=131072``: a fixed threshold makes freed large
  tensors go back to the OS, so the high-water mark measures live memory (with glibc's dynamic
  threshold it varied by +-10 MB between identical runs of the ``cpu`` preset; with it, 0.2 MB).
  CUDA: ``torch.cuda.max_memory_allocated`` over the same updates.

``var`` runs with ``var.warmup=0`` (the warm-up path would measure nothing). Objectives whose
module does not exist yet are skipped with a note. Writes a markdown table to stdout and the rows
``{backbone, objective, env, s_per_update, peak_rss_mb, peak_gpu_mb, device, ...}`` to a
``*cost*.json`` file that ``vawm report`` reads. Run it niced on shared machines.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from readme_table import provenance, write_row

MMAP_THRESHOLD = 131072   # bytes; see the module docstring
DEFAULT_PRESET = {"rssm": "cpu", "tssm": "storm-cpu", "vae-lstm": "cartpole-vae-lstm"}


# ---------------------------------------------------------------------------- setup
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="rssm", help="rssm | tssm | vae-lstm")
    p.add_argument("--preset", help="config presets (default: cpu for rssm, storm-cpu for tssm, "
                   "cartpole-vae-lstm for vae-lstm)")
    p.add_argument("--env", default="gym:CartPole-v1", help="env id whose shapes the batch takes")
    p.add_argument("--obs-shape", help="synthetic observation shape instead of --env's, e.g. "
                   "3,64,64 (3 dims: an image, uint8) or 17 (a vector)")
    p.add_argument("--action-dim", type=int, default=6, help="with --obs-shape")
    p.add_argument("--continuous", action="store_true", help="with --obs-shape: continuous actions")
    p.add_argument("--objectives", default="none,var,tempo,dream-critic")
    p.add_argument("--updates", type=int, default=30, help="timed rounds (one update each)")
    p.add_argument("--warmup", type=int, default=5, help="untimed updates per objective first")
    p.add_argument("--mem-updates", type=int, default=3, help="updates in each memory subprocess")
    p.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    p.add_argument("--malloc-default", action="store_true",
                   help="memory children with glibc's dynamic mmap threshold (noisier)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch default)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every objective (repeatable)")
    p.add_argument("--tag", help="appended to the rows' env label, e.g. imag_starts=0 (keeps the "
                   "report from merging tables of different settings)")
    p.add_argument("--out", help="JSON output (default: runs/bench/objective_cost-<backbone>-"
                   "<env>-<device>.json)")
    p.add_argument("--readme", metavar="NAME", help="also write benchmarks/results/NAME.json, a "
                   "row of the README's measured table (benchmarks/readme_table.py)")
    p.add_argument("--what", help="the row's description (with --readme)")
    p.add_argument("--order", type=int, default=50, help="position of the README row")
    p.add_argument("--mem-child", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def env_label(args) -> str:
    label = "synthetic:" + args.obs_shape.replace(",", "x") if args.obs_shape else args.env
    return f"{label} [{args.tag}]" if args.tag else label


def env_info_for(args, cfg) -> dict:
    if args.obs_shape:
        shape = tuple(int(s) for s in args.obs_shape.split(","))
        return {"obs_kind": "image" if len(shape) == 3 else "vector", "obs_shape": shape,
                "discrete": not args.continuous, "action_dim": args.action_dim}
    from vawm.envs import env_info
    return env_info(cfg.env, cfg.env_cfg)


def make_config(args, objective: str):
    from vawm.config import build_config
    preset = args.preset or DEFAULT_PRESET.get(args.backbone, "cpu")
    overrides = {"backbone": args.backbone, "objective": objective, "env": args.env,
                 "seed": args.seed}
    return build_config(preset, overrides, ["var.warmup=0", *args.set])


def resolve(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def available(objectives: list[str]) -> list[str]:
    """The requested objectives (every registered one is valid), ``none`` first."""
    from vawm.objectives import OBJECTIVES
    keep = []
    for o in objectives:
        if o not in OBJECTIVES:
            raise SystemExit(f"unknown objective {o!r}; valid: {', '.join(sorted(OBJECTIVES))}")
        keep.append(o)
    if "none" not in keep:
        keep.insert(0, "none")
    return keep


def build_agent(args, objective: str, device: torch.device):
    from vawm.agent import Agent
    cfg = make_config(args, objective)
    info = env_info_for(args, cfg)
    torch.manual_seed(args.seed)
    return cfg, info, Agent(cfg, info).to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------- time
def time_updates(args, objectives: list[str], device: torch.device
                 ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per round: seconds of each objective's whole update, and of its world-model step."""
    from vawm.replay import random_batch
    agents, batch = {}, None
    for o in objectives:
        cfg, info, agents[o] = build_agent(args, o, device)
        if batch is None:
            batch = random_batch(cfg, info, device)
    for o in objectives:
        for _ in range(args.warmup):
            agents[o].train_step(batch)
        agents[o].profile = True
    times: dict[str, list[float]] = {o: [] for o in objectives}
    wm: dict[str, list[float]] = {o: [] for o in objectives}
    for r in range(args.updates):
        k = r % len(objectives)
        for o in objectives[k:] + objectives[:k]:               # rotating round-robin
            sync(device)
            t0 = time.perf_counter()
            m = agents[o].train_step(batch)
            sync(device)
            times[o].append(time.perf_counter() - t0)
            wm[o].append(m["time/wm_step_s"])
    return times, wm


# ---------------------------------------------------------------------------- memory
def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")           # resets VmHWM to VmRSS
        return True
    except OSError:
        return False


def mem_child(args) -> dict:
    """Runs in a fresh process: peak memory of building one agent and running a few updates."""
    device = resolve(args.device)
    from vawm.replay import random_batch
    cfg = make_config(args, args.mem_child)
    info = env_info_for(args, cfg)
    batch = random_batch(cfg, info, device)
    import vawm.agent  # noqa: F401  (imports before the baseline)
    torch.ones(64, 64) @ torch.ones(64, 64)                       # thread pools up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    hwm_ok = _reset_hwm()
    base_kb = _status_kb("VmRSS") or 0
    _, _, agent = build_agent(args, args.mem_child, device)
    for _ in range(args.mem_updates):
        agent.train_step(batch)
    sync(device)
    if hwm_ok and _status_kb("VmHWM") is not None:
        peak_kb = _status_kb("VmHWM")
    else:                                                        # KiB on Linux
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"peak_rss_mb": round((peak_kb - base_kb) / 1024, 1), "rss_base_mb":
           round(base_kb / 1024, 1), "rss_method": "VmHWM" if hwm_ok else "ru_maxrss"}
    out["peak_gpu_mb"] = (round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
                          if device.type == "cuda" else None)
    return out


def measure_memory(args, objective: str) -> dict:
    argv = [sys.executable, __file__, "--mem-child", objective] + _forward(args)
    env = os.environ.copy()
    if not args.malloc_default:
        env.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD))
    res = subprocess.run(argv, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        tail = res.stderr.strip().splitlines()[-1:] or ["?"]
        return {"peak_rss_mb": None, "peak_gpu_mb": None, "mem_error": tail[0]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def _forward(args) -> list[str]:
    out = ["--backbone", args.backbone, "--env", args.env, "--device", args.device,
           "--threads", str(args.threads), "--seed", str(args.seed),
           "--mem-updates", str(args.mem_updates), "--action-dim", str(args.action_dim)]
    if args.preset:
        out += ["--preset", args.preset]
    if args.obs_shape:
        out += ["--obs-shape", args.obs_shape]
    if args.continuous:
        out.append("--continuous")
    for s in args.set:
        out += ["--set", s]
    return out


# ---------------------------------------------------------------------------- report
def quantiles(xs: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return q[0], statistics.median(xs), q[2]


def slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._+-=" else "-" for ch in text).strip("-")


def pct(v: float | None, base: float | None) -> str:
    if v is None or base is None or base == 0:
        return ""
    return f" ({100 * (v / base - 1):+.1f}%)"


def markdown(rows: list[dict]) -> str:
    head = ("| objective | s / update (median) | overhead vs none (paired, IQR) "
            "| objective's own part (paired, IQR) | peak RSS delta MB | peak GPU MB |")
    out = [head, "|---|---|---|---|---|---|"]
    base = rows[0]
    for r in rows:
        ov = r.get("overhead_pct")
        ov_s = "—" if r is base else f"{ov:+.1f}% [{r['overhead_iqr'][0]:+.1f}, " \
                                     f"{r['overhead_iqr'][1]:+.1f}]"
        rss = "—" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:.1f}" + (
            "" if r is base else pct(r["peak_rss_mb"], base["peak_rss_mb"]))
        gpu = "—" if r["peak_gpu_mb"] is None else f"{r['peak_gpu_mb']:.1f}" + (
            "" if r is base else pct(r["peak_gpu_mb"], base["peak_gpu_mb"]))
        own = "—" if r is base else f"{r['own_overhead_pct']:+.1f}% " \
                                    f"[{r['own_overhead_iqr'][0]:+.1f}, {r['own_overhead_iqr'][1]:+.1f}]"
        out.append(f"| {r['objective']} | {r['s_per_update']:.4f} | {ov_s} | {own} | {rss} | {gpu} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mem_child:
        print(json.dumps(mem_child(args)))
        return 0
    device = resolve(args.device)
    prov = provenance(os.getloadavg()[0])      # the code and the load as the runs start
    objectives = available([o.strip() for o in args.objectives.split(",") if o.strip()])
    cfg = make_config(args, "none")
    print(f"objective cost: backbone {args.backbone}, preset {cfg.preset}, env {env_label(args)}, "
          f"batch {cfg.run.batch_size}x{cfg.run.batch_length}, device {device}, threads "
          f"{torch.get_num_threads()}, {args.updates} rounds after {args.warmup} warm-up updates",
          file=sys.stderr)
    times, wm_times = time_updates(args, objectives, device)
    rows = []
    for o in objectives:
        q1, med, q3 = quantiles(times[o])
        row = {"backbone": args.backbone, "objective": o, "env": env_label(args),
               "s_per_update": round(med, 5), "s_per_update_iqr": [round(q1, 5), round(q3, 5)],
               "peak_rss_mb": None, "peak_gpu_mb": None, "device": str(device),
               "preset": cfg.preset, "threads": torch.get_num_threads(), "n_updates": args.updates,
               "warmup_updates": args.warmup,
               "malloc_mmap_threshold": None if args.malloc_default else MMAP_THRESHOLD}
        if o != "none":
            ratios = [100 * (a / b - 1) for a, b in zip(times[o], times["none"], strict=True)]
            r1, rm, r3 = quantiles(ratios)
            row.update(overhead_pct=round(rm, 2), overhead_iqr=[round(r1, 2), round(r3, 2)])
            # the objective's own work: its extra world-model-step time over the whole baseline
            # update of the same round (the actor-critic part is the same code for every
            # objective, so leaving it out of the difference removes most of the noise)
            own = [100 * (a - b) / t for a, b, t in
                   zip(wm_times[o], wm_times["none"], times["none"], strict=True)]
            o1, om, o3 = quantiles(own)
            row.update(own_overhead_pct=round(om, 2), own_overhead_iqr=[round(o1, 2), round(o3, 2)])
        if not args.no_memory:
            row.update(measure_memory(args, o))
        rows.append(row)
    print(markdown(rows))
    out = Path(args.out) if args.out else Path("runs/bench") / (
        f"objective_cost-{args.backbone}-{slug(env_label(args))}-{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
            "torch": torch.__version__, "host_cpus": os.cpu_count(),
            "loadavg": os.getloadavg(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    out.write_text(json.dumps({"rows": rows, "meta": meta}, indent=2))
    print(f"wrote {out}", file=sys.stderr)
    if args.readme:
        print(f"wrote {readme_row(args, rows, cfg, device, prov)}", file=sys.stderr)
    return 0


def readme_row(args: argparse.Namespace, rows: list[dict], cfg, device, prov: dict) -> Path:
    """The README row of this measurement: each objective's paired time overhead (IQR), its own
    part, and its memory, over ``none``."""
    base = next(r for r in rows if r["objective"] == "none")
    parts = []
    for r in rows:
        if r["objective"] == "none":
            continue
        text = (f"{r['objective']}: {r['overhead_pct']:+.1f}% time (IQR {r['overhead_iqr'][0]:+.1f} "
                f"to {r['overhead_iqr'][1]:+.1f}; own part {r['own_overhead_pct']:+.1f}%)")
        if r["peak_rss_mb"] and base["peak_rss_mb"]:
            text += f", {100 * (r['peak_rss_mb'] / base['peak_rss_mb'] - 1):+.1f}% peak RSS"
        parts.append(text + f"; {r['s_per_update']:.3f} vs {base['s_per_update']:.3f} s/update")
    argv, skip = [], False
    for a in sys.argv[1:]:                     # the command without the row's own flags
        if skip or a.startswith(("--readme=", "--what=", "--order=", "--out=")):
            skip = False
            continue
        if a in ("--readme", "--what", "--order", "--out"):
            skip = True
            continue
        argv.append(a)
    command = " ".join(["python benchmarks/objective_cost.py", *argv])
    what = args.what or (f"cost of {', '.join(r['objective'] for r in rows[1:])} over none "
                         f"({args.backbone}, preset {cfg.preset}, {device.type}, "
                         f"{torch.get_num_threads()} thread(s))")
    data = {"command": command, "seeds": [args.seed],
            "budget": f"{args.updates} paired rounds after {args.warmup} warm-up updates",
            **prov, "rows": rows,
            "readme": {"what": what, "command": command, "result": "; ".join(parts),
                       "order": args.order}}
    return write_row(args.readme, data)


if __name__ == "__main__":
    sys.exit(main())
