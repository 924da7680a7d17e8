"""``vawm imagine RUN [RUN ...] --out DIR``: what a trained world model dreams (VaR, anon. 2025, Fig. 3,
7, 13).

One real trajectory is played in a fresh evaluation env (by default with the first run's policy,
mode actions as in evaluation; ``--policy random`` for uniform random actions). Every run's world
model then

1. filters the real observations up to the end of the context (``--start`` + ``--context`` steps:
   posterior states, decoded as reconstructions), and
2. imagines the next ``--horizon`` steps open loop from the last context state, fed the *real*
   actions, so the imagined frames line up with the real ones (VaR, anon. 2025, Fig. 3, 7).

Value-gradient saliency (VaR, anon. 2025, Fig. 3's "decoder sensitivity after value-gradient weighting",
Fig. 13): for each latent state s (context posteriors and imagined states) the critic's gradient
g = dV(s)/ds gives the direction in latent space that changes the value most; the saliency map is
the decoder's response to that direction, |J_dec(s) g| (a Jacobian-vector product), summed over
channels. It shows which pixels of the decoded observation the task-relevant part of the latent
controls.

Writes ``imagine.png`` (image observations: rows of imagined frames and saliency per run, ground
truth at the bottom; vector observations: each observation dimension over time, real vs imagined,
plus a saliency heat map per run; MinAtar's vector observations are drawn as their 10x10
grids), ``imagine_error.png`` (per-step error against the truth) and
``imagine.json`` (the numbers behind both). Several runs of the same env are drawn on the same
trajectory, e.g. a ``none`` and a ``var`` run for the comparison of VaR (anon. 2025) Fig. 3.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vawm.state import tree_map
from vawm.worldmodels.base import ReplayActions


class ImagineError(ValueError):
    """Bad input to ``vawm imagine``; the message is one line."""


# ---------------------------------------------------------------------------- the math
def value_saliency(decode: Callable[[Tensor], Tensor], value: Callable[[Tensor], Tensor],
                   feat: Tensor) -> Tensor:
    """|J_decode(s) dV/ds| for each row s of ``feat`` [N, F] -> [N, *obs_shape].

    The value gradient is taken row by row (V of one row depends on that row only), and the
    decoder's Jacobian-vector product along it by double backward (works for every layer type).
    """
    feat = feat.detach().requires_grad_(True)
    with torch.enable_grad():
        g = torch.autograd.grad(value(feat).sum(), feat)[0]
        _, jvp = torch.autograd.functional.jvp(decode, feat.detach(), g.detach())
    return jvp.abs()


@torch.no_grad()
def collect(agent, cfg, device: torch.device, length: int, seed: int, policy: str = "agent"
            ) -> dict[str, np.ndarray]:
    """Up to ``length`` steps of one episode in an evaluation env (replay layout, [T, ...])."""
    from vawm.acting import Acting, random_actions
    from vawm.driver import Driver

    driver = Driver(cfg.env, 1, seed, cfg.env_cfg, False, training=False)
    acting = Acting(agent, driver, device, mode=True)
    acting.reset()
    gen = torch.Generator().manual_seed(seed)
    override = None
    if policy == "random":
        override = lambda a: random_actions(1, agent.act_dim, agent.discrete, device, gen)
    keys = ("obs", "action", "reward", "is_first", "is_terminal")
    steps: list[dict] = []
    while len(steps) < length:
        step = acting.step(override)
        steps.append({k: step[k][0] for k in keys})
        if step["is_last"][0] and len(steps) > 1:
            break
    driver.close()
    return {k: np.stack([s[k] for s in steps]) for k in keys}


@torch.no_grad()
def dream(agent, traj: dict[str, np.ndarray], start: int, context: int, horizon: int,
          seed: int) -> dict[str, np.ndarray]:
    """Reconstruct ``context`` real steps from ``start`` and imagine ``horizon`` more (open loop).

    Returns frames aligned with ``traj['obs'][start : start + context + horizon]``: the decoded
    posteriors of the context and the decoded imagined states, their value saliency, the critic's
    values and the predicted rewards.
    """
    wm, device = agent.wm, next(agent.parameters()).device
    T = len(traj["obs"])
    t0 = start + context - 1                                     # last observed step
    H = min(horizon, T - 1 - t0)
    batch = {k: torch.as_tensor(v, device=device)[None] for k, v in traj.items()}
    torch.manual_seed(seed)
    ob = wm.observe(batch)
    actions = batch["action"][0, t0:t0 + H + 1]
    actions = torch.cat([actions, actions[-1:].expand(H + 1 - len(actions), -1)])[:, None]
    first = tree_map(lambda t: t[torch.tensor([t0], device=device)], ob.start)
    im = wm.imagine(first, ReplayActions(actions), H)
    feat = torch.cat([ob.post[0, start:t0], im.feat[:, 0]])      # [context + H, F]
    frames = wm.decode(feat)
    sal = value_saliency(wm.decode, agent.ac.value, feat)
    return {"model": frames.float().cpu().numpy(), "saliency": sal.float().cpu().numpy(),
            "value": agent.ac.value(feat).float().cpu().numpy(),
            "reward_pred": im.reward[1:, 0].float().cpu().numpy(), "horizon": H}


# ---------------------------------------------------------------------------- pictures
def to_rgb(obs: np.ndarray) -> np.ndarray:
    """[C, H, W] in [0, 255] -> [H, W, 3] in [0, 1]; C other than 1 or 3 (MinAtar's object
    channels) is drawn with one fixed colour per channel."""
    x = np.clip(obs.astype(np.float32) / 255.0, 0, 1)
    if x.shape[0] == 3:
        return x.transpose(1, 2, 0)
    if x.shape[0] == 1:
        return np.repeat(x[0][..., None], 3, -1)
    colours = np.random.default_rng(0).integers(64, 256, (x.shape[0], 3)) / 255.0
    return (x[..., None] * colours[:, None, None]).max(0)


def grid_view(env: str, frames: np.ndarray) -> np.ndarray | None:
    """MinAtar's vector observations ([T, 100*C] 0/1 grid, HWC order) as images [T, C, 10, 10] in
    [0, 255], so they are drawn like pixel envs; None for other vector envs."""
    if not env.startswith("minatar:") or frames.ndim != 2 or frames.shape[1] % 100:
        return None
    T, C = len(frames), frames.shape[1] // 100
    return frames.reshape(T, 10, 10, C).transpose(0, 3, 1, 2) * 255.0


def _frame_error(model: np.ndarray, truth: np.ndarray, image: bool) -> np.ndarray:
    """Per-frame mean squared error ([0, 1] pixel units for images, raw units for vectors)."""
    scale = 255.0 if image else 1.0
    d = (model.astype(np.float64) - truth.astype(np.float64)) / scale
    return (d ** 2).reshape(len(d), -1).mean(1)


def plot_images(out: Path, truth: np.ndarray, runs: list[dict], context: int, every: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = list(range(0, len(truth), every))
    grid: list[tuple[str, list, str | None]] = []
    for r in runs:
        grid.append((f"{r['label']}: model", [to_rgb(f) for f in r["model"]], None))
        sal = r["saliency"].sum(1)                                # [N, H, W]
        grid.append((f"{r['label']}: value saliency", list(sal / (sal.reshape(len(sal), -1)
                     .max(1)[:, None, None] + 1e-12)), "inferno"))
    grid.append(("ground truth", [to_rgb(f) for f in truth], None))
    fig, axes = plt.subplots(len(grid), len(cols), squeeze=False,
                             figsize=(1.1 * len(cols) + 1.5, 1.2 * len(grid) + 0.4))
    for i, (name, imgs, cmap) in enumerate(grid):
        for j, t in enumerate(cols):
            ax = axes[i, j]
            ax.imshow(imgs[t], cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if t >= context:
                for s in ax.spines.values():
                    s.set_edgecolor("tab:red")
            if i == 0:
                ax.set_title(f"t{t - context + 1:+d}" if t >= context else f"ctx {t + 1}", fontsize=7)
        axes[i, 0].set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle("observed context, then open-loop imagination (red frames) with the real actions",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_vectors(out: Path, truth: np.ndarray, runs: list[dict], context: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    D = min(truth.shape[1], 8)
    fig, axes = plt.subplots(D + len(runs), 1, squeeze=False, sharex=True,
                             figsize=(7, 1.3 * D + 1.1 * len(runs) + 0.6))
    t = np.arange(len(truth))
    for d in range(D):
        ax = axes[d, 0]
        ax.plot(t, truth[:, d], "k-", lw=1.5, label="ground truth")
        for r in runs:
            ax.plot(t, r["model"][:, d], "--", lw=1.2, label=r["label"])
        ax.axvline(context - 0.5, color="tab:red", lw=0.8)
        ax.set_ylabel(f"obs[{d}]", fontsize=8)
    axes[0, 0].legend(fontsize=7, ncol=len(runs) + 1)
    for i, r in enumerate(runs):
        ax = axes[D + i, 0]
        ax.imshow(r["saliency"][:, :D].T, aspect="auto", cmap="inferno",
                  extent=(-0.5, len(truth) - 0.5, D - 0.5, -0.5))
        ax.axvline(context - 0.5, color="tab:red", lw=0.8)
        ax.set_ylabel(f"{r['label']}\nsaliency", fontsize=7)
    axes[-1, 0].set_xlabel("step (context left of the red line, imagination right of it)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_error(out: Path, runs: list[dict], context: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    for r in runs:
        ax.plot(np.arange(len(r["mse"])) - context + 1, r["mse"], marker=".", label=r["label"])
    ax.axvline(0.5, color="tab:red", lw=0.8)
    ax.set_xlabel("step relative to the last observed one")
    ax.set_ylabel("MSE to ground truth")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------- command
def load_run(run_dir: Path, device: torch.device):
    from vawm.agent import Agent
    from vawm.checkpoint import load_latest as load_ckpt
    from vawm.config import load_config_file
    from vawm.envs import env_info
    from vawm.train import CKPT

    if not (run_dir / "config.yaml").exists():
        raise ImagineError(f"{run_dir} is not a vawm run directory (no config.yaml)")
    cfg = load_config_file(str(run_dir / "config.yaml"))
    from vawm.worldmodels import BACKBONES
    if not BACKBONES[cfg.backbone].has_decoder:
        raise ImagineError(f"{run_dir}: the {cfg.backbone} backbone has no decoder, so there is "
                           "nothing to picture; vawm imagine needs rssm, tssm or vae-lstm runs")
    sd = load_ckpt(run_dir / CKPT)
    agent = Agent(cfg, env_info(cfg.env, cfg.env_cfg)).to(device)
    agent.load_state_dict(sd["agent"])
    agent.eval()
    return cfg, agent, int(sd["policy_steps"])


def _labels(dirs: list[Path], cfgs: list) -> list[str]:
    labels = [c.backbone + (f"+{c.objective}" if c.objective != "none" else "") for c in cfgs]
    if len(set(labels)) < len(labels):
        labels = [f"{lab} ({d.name})" for lab, d in zip(labels, dirs, strict=True)]
    return labels


def main(argv: list[str] | None = None) -> int:
    from vawm.agent import resolve_device
    from vawm.checkpoint import CheckpointError
    from vawm.config import ConfigError
    from vawm.envs import UnknownEnvError

    p = argparse.ArgumentParser(prog="vawm imagine", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run directories (same env); the first one's policy acts")
    p.add_argument("--out", help="output directory (default: FIRST_RUN/imagine)")
    p.add_argument("--context", type=int, default=5, help="observed steps before imagining")
    p.add_argument("--horizon", type=int, default=15, help="imagined steps")
    p.add_argument("--start", type=int, default=0, help="episode step where the context begins")
    p.add_argument("--policy", choices=("agent", "random"), default="agent")
    p.add_argument("--every", type=int, default=1, help="draw every k-th frame (image strips)")
    p.add_argument("--seed", type=int, default=0, help="env seed offset and imagination sampling")
    p.add_argument("--labels", help="comma-separated names for the runs in the figures")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    try:
        if args.context < 1 or args.horizon < 1 or args.start < 0 or args.every < 1:
            raise ImagineError("--context, --horizon and --every must be >= 1, --start >= 0")
        device = resolve_device(args.device)
        dirs = [Path(r) for r in args.runs]
        loaded = [load_run(d, device) for d in dirs]
        cfgs = [c for c, _, _ in loaded]
        if len({c.env for c in cfgs}) > 1:
            raise ImagineError("the runs are on different envs: "
                               + ", ".join(f"{d}: {c.env}" for d, c in zip(dirs, cfgs, strict=True)))
        labels = args.labels.split(",") if args.labels else _labels(dirs, cfgs)
        if len(labels) != len(dirs):
            raise ImagineError(f"--labels has {len(labels)} names for {len(dirs)} runs")
    except (ImagineError, ConfigError, UnknownEnvError, CheckpointError) as e:
        print(f"vawm imagine: {e}", file=sys.stderr)
        return 2
    cfg0, agent0, _ = loaded[0]
    seed = cfg0.seed + 20_000 + args.seed
    torch.manual_seed(seed)                         # the posterior samples while acting
    traj = collect(agent0, cfg0, device, args.start + args.context + args.horizon, seed, args.policy)
    if len(traj["obs"]) < args.start + args.context + 1:
        print(f"vawm imagine: the episode ended after {len(traj['obs'])} steps, before the context "
              f"did; use a smaller --start or --context", file=sys.stderr)
        return 2
    image = traj["obs"].ndim == 4
    runs = []
    for (_, agent, steps), label, d in zip(loaded, labels, dirs, strict=True):
        r = dream(agent, traj, args.start, args.context, args.horizon, args.seed)
        n = len(r["model"])
        r.update(label=label, run=str(d), env_steps=steps,
                 mse=_frame_error(r["model"], traj["obs"][args.start:args.start + n], image))
        runs.append(r)
    n = len(runs[0]["model"])
    truth = traj["obs"][args.start:args.start + n]
    out = Path(args.out) if args.out else dirs[0] / "imagine"
    out.mkdir(parents=True, exist_ok=True)
    grid = None if image else grid_view(cfg0.env, truth)
    if image:
        plot_images(out / "imagine.png", truth, runs, args.context, args.every)
    elif grid is not None:                          # MinAtar vectors drawn as their grids
        gruns = [{**r, "model": grid_view(cfg0.env, r["model"]),
                  "saliency": grid_view(cfg0.env, r["saliency"])} for r in runs]
        plot_images(out / "imagine.png", grid, gruns, args.context, args.every)
    else:
        plot_vectors(out / "imagine.png", truth, runs, args.context)
    plot_error(out / "imagine_error.png", runs, args.context)
    t0 = args.start + args.context - 1
    real_rewards = traj["reward"][t0 + 1:t0 + 1 + runs[0]["horizon"]]
    (out / "imagine.json").write_text(json.dumps({
        "env": cfg0.env, "policy": args.policy, "env_seed": seed, "start": args.start,
        "context": args.context, "horizon": runs[0]["horizon"], "image": image,
        "real_reward": real_rewards.tolist(),
        "runs": [{"label": r["label"], "run": r["run"], "env_steps": r["env_steps"],
                  "mse_context": r["mse"][:args.context].tolist(),
                  "mse_imagined": r["mse"][args.context:].tolist(),
                  "reward_pred": r["reward_pred"].tolist(), "value": r["value"].tolist()}
                 for r in runs]}, indent=1))
    for r in runs:
        print(f"{r['label']}: reconstruction MSE {r['mse'][:args.context].mean():.4g}, imagined "
              f"MSE {r['mse'][args.context:].mean():.4g} over {r['horizon']} steps")
    print(f"written: {out}/imagine.png, imagine_error.png, imagine.json")
    return 0
