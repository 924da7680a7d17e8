"""The one training loop every backbone x objective combination shares.

    collect (policy steps in E envs) -> replay -> [train-ratio many] updates:
        observe batch -> objective contribution -> world-model step -> actor-critic in imagination
    -> log / checkpoint -> final evaluation -> summary

Step accounting (as DreamerV3 and sheeprl count): ``policy_steps`` is the number of agent steps
summed over all E environments (one vector step adds E), ``env_steps`` = policy_steps x action
repeat (frames). ``cfg.steps``, ``run.prefill``, ``log_every``, ``checkpoint_every``, ``eval_every``,
the logged ``env_step`` and the progress bar all count env steps. The train ratio counts replayed
steps (B x T per update) per agent step of each environment, whatever the action repeat, so the
number of updates per env step does not depend on E.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vawm import checkpoint
from vawm.agents.actor_critic import ActorCritic
from vawm.config import Config, save_config, to_dict
from vawm.driver import Driver
from vawm.envs import DEFAULT_ACTION_REPEAT, env_info, parse_env_id
from vawm.nets.layers import compile_hot_modules
from vawm.nets.optim import Optim
from vawm.objectives import Context, build_objective
from vawm.replay import Replay
from vawm.worldmodels import build_backbone

CKPT = "checkpoints/latest.pt"
# Test hook: SIGKILL this process when it reaches this many policy steps (resume tests).
_KILL_AT = int(os.environ.get("VAWM_TEST_KILL_AT_STEP", "-1"))
# Test hook: sleep this many seconds after each periodic checkpoint (sweep interruption tests).
_PAUSE_AFTER_CKPT = float(os.environ.get("VAWM_TEST_PAUSE_AFTER_CHECKPOINT", "0"))


class NonFiniteLossError(RuntimeError):
    pass


class RunInterrupted(RuntimeError):
    """Raised after a SIGTERM/SIGINT once the run has checkpointed at a step boundary."""

    def __init__(self, signum: int, env_steps: int):
        super().__init__(f"stopped by {signal.Signals(signum).name} at env step {env_steps}; "
                         "checkpoint written")
        self.signum = signum


class _StopFlag:
    """Turns SIGTERM and SIGINT into a flag the loop checks between steps (main thread only)."""

    def __init__(self):
        self.signum: int | None = None
        self._old = {}
        import threading
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:      # a second signal: stop at once
            raise KeyboardInterrupt
        self.signum = signum

    def restore(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run.device=cuda but no CUDA device is available; use run.device=cpu")
    return torch.device(name)


def suite_action_repeat(env_id: str, cfg) -> int:
    if cfg.env_cfg.action_repeat:
        return cfg.env_cfg.action_repeat
    return DEFAULT_ACTION_REPEAT.get(parse_env_id(env_id)[0], 1)


class Agent(torch.nn.Module):
    """World model + objective + actor-critic, and the update that ties them together."""

    def __init__(self, cfg: Config, info: dict):
        super().__init__()
        self.cfg = cfg
        self.discrete, self.act_dim = info["discrete"], info["action_dim"]
        self.wm = build_backbone(cfg, info)
        self.objective = build_objective(cfg, self.wm)
        self.ac = ActorCritic(self.wm.feat_dim, self.act_dim, self.discrete, cfg.agent, cfg.optim)
        o = cfg.optim
        self.wm_params = list(self.wm.parameters()) + list(self.objective.wm_parameters())
        self.wm_opt = Optim(self.wm_params, o.kind, o.model_lr, o.model_eps, o.model_clip)
        self.updates = 0
        self.profile = False    # benchmarks: time the world-model step (observe..optimiser)
        if cfg.run.compile:
            compile_hot_modules(self)

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        if self.profile:
            _sync(batch["reward"].device)
            t0 = time.perf_counter()
        with self.amp():
            obs = self.wm.observe(batch)
            ctx = Context(self.wm, self.ac, self.updates, batch, self.wm_params,
                          self.cfg.optim.model_lr)
            contrib = self.objective.contribute(obs, ctx)
            wm_loss, metrics = self.wm.loss(obs, contrib.weights)
            total = wm_loss + sum(contrib.losses.values(), torch.zeros((), device=wm_loss.device))
        if not torch.isfinite(total):
            bad = {k: float(v) for k, v in {"wm": wm_loss, **contrib.losses}.items()}
            raise NonFiniteLossError(
                f"non-finite world-model loss at update {self.updates}: {bad}; the last checkpoint "
                "is intact — lower optim.model_lr or check the objective's settings, then --resume")
        self.wm_opt.zero_grad()
        total.backward()
        metrics["wm/gradnorm"] = self.wm_opt.step()
        if self.profile:                    # everything an objective adds happens before here
            _sync(batch["reward"].device)
            metrics["time/wm_step_s"] = time.perf_counter() - t0
        metrics["wm/loss"] = total.detach()
        metrics.update({f"{self.objective.log_name}/{k}": v.detach() for k, v in contrib.losses.items()})
        metrics.update(contrib.metrics)
        metrics.update(self.ac.train_step(self.wm, obs, batch, self.amp))
        self.updates += 1
        return {k: float(v) for k, v in metrics.items()}

    def amp(self):
        """The update's forward passes under ``run.precision=bf16``: bfloat16 autocast on the
        parameters' device (matmuls and convolutions in bf16; parameters, optimiser state,
        recurrent states, distributions and losses stay float32). A disabled context at fp32.
        Acting and evaluation always run in float32."""
        device = self.wm_params[0].device.type
        return torch.autocast(device, torch.bfloat16, enabled=self.cfg.run.precision == "bf16")

    @torch.no_grad()
    def act(self, carry, obs: torch.Tensor, prev_action: torch.Tensor, is_first: torch.Tensor,
            mode: bool = False):
        carry, feat = self.wm.act_step(carry, obs, prev_action, is_first)
        pol = self.ac.policy(feat)
        a = pol.mode() if mode else pol.sample()
        if not self.discrete:
            a = a.clamp(-1, 1)
        return carry, a

    def opt_state(self) -> dict:
        return {"wm": self.wm_opt.state_dict(), "actor": self.ac.actor_opt.state_dict(),
                "critic": self.ac.critic_opt.state_dict()}

    def load_opt_state(self, sd: dict) -> None:
        self.wm_opt.load_state_dict(sd["wm"])
        self.ac.actor_opt.load_state_dict(sd["actor"])
        self.ac.critic_opt.load_state_dict(sd["critic"])


class MetricLogger:
    """metrics.jsonl + TensorBoard; averages scalars between log steps."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "metrics.jsonl"
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        from torch.utils.tensorboard import SummaryWriter
        self.tb = SummaryWriter(str(run_dir / "tb"))

    def add(self, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1

    def write(self, env_step: int, update: int, wall: float, extra: dict | None = None) -> dict:
        row = {"env_step": env_step, "update": update, "wall_clock_s": round(wall, 3)}
        row.update({k: self.sums[k] / self.counts[k] for k in sorted(self.sums)})
        row.update(extra or {})
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        for k, v in row.items():
            if k not in ("env_step",) and isinstance(v, (int, float)):
                self.tb.add_scalar(k, v, env_step)
        self.tb.flush()
        self.sums, self.counts = {}, {}
        return row

    def truncate_after(self, env_step: int) -> None:
        """On resume: drop rows logged after the checkpoint (they will be logged again)."""
        if not self.path.exists():
            return
        rows = [ln for ln in self.path.read_text().splitlines()
                if ln.strip() and json.loads(ln)["env_step"] <= env_step]
        self.path.write_text("".join(r + "\n" for r in rows))

    def close(self) -> None:
        self.tb.close()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def versions() -> dict:
    import gymnasium

    import vawm
    return {"vawm": vawm.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "gymnasium": gymnasium.__version__, "python": platform.python_version()}


class Trainer:
    def __init__(self, cfg: Config, run_dir: str | Path, progress: bool = True):
        self.cfg, self.run_dir, self.progress = cfg, Path(run_dir), progress
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        seed_everything(cfg.seed)
        # CPU runs are bit-reproducible as they are; on CUDA, deterministic cuDNN kernels
        # (run.deterministic) or autotuned ones (faster, not reproducible)
        torch.backends.cudnn.deterministic = cfg.run.deterministic
        torch.backends.cudnn.benchmark = not cfg.run.deterministic
        self.device = resolve_device(cfg.run.device)
        self.info = env_info(cfg.env, cfg.env_cfg)
        self.repeat = suite_action_repeat(cfg.env, cfg)
        self.agent = Agent(cfg, self.info).to(self.device)
        r = cfg.run
        obs_dtype = np.uint8 if self.info["obs_kind"] == "image" else np.float32
        chunks = self.run_dir / "replay" if r.replay_persist == "chunks" else None
        self.replay = Replay(r.replay_capacity, r.num_envs, tuple(self.info["obs_shape"]), obs_dtype,
                             self.info["action_dim"], r.batch_length, seed=cfg.seed,
                             chunk_dir=chunks, chunk=r.replay_chunk)
        self.driver = Driver(cfg.env, r.num_envs, cfg.seed, cfg.env_cfg, r.parallel_envs)
        self.policy_steps = 0
        self.update_credit = 0.0
        self.wall_before = 0.0
        self.episodes: list[tuple[int, float]] = []   # (env_step, return) of finished episodes
        self.next_log = r.log_every
        self.next_ckpt = r.checkpoint_every
        self.next_eval = r.eval_every or math.inf
        self.pending = None   # the next observation step (from the driver)
        self.carry = None
        self.prev_action = None
        save_config(cfg, str(self.run_dir / "config.yaml"))
        self.logger = MetricLogger(self.run_dir)

    @property
    def env_steps(self) -> int:
        return self.policy_steps * self.repeat

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "agent": self.agent.state_dict(), "opt": self.agent.opt_state(),
            "updates": self.agent.updates, "replay": self.replay.state_dict(),
            "driver": self.driver.get_state(), "policy_steps": self.policy_steps,
            "steps_summed_over_envs": True,
            "update_credit": self.update_credit, "episodes": self.episodes,
            "wall": self.wall_before + time.time() - self.t0,
            "next": [self.next_log, self.next_ckpt, self.next_eval],
            "pending": {k: torch.from_numpy(np.asarray(v)) for k, v in self.pending.items()
                        if k != "episodes"},
            "carry": _carry_to_tensors(self.carry), "prev_action": self.prev_action,
            "rng": {"torch": torch.get_rng_state(), "numpy": rng_state_legacy(),
                    "python": list(random.getstate()[1]), "python_pos": random.getstate()[2]},
        }

    def save_checkpoint(self) -> None:
        checkpoint.save(self.state_dict(), self.run_dir / CKPT)
        self.replay.prune()                 # chunks the new checkpoint no longer needs

    def load_checkpoint(self) -> None:
        sd = checkpoint.load(self.run_dir / CKPT)
        self.agent.load_state_dict(sd["agent"])
        self.agent.load_opt_state(sd["opt"])
        self.agent.updates = int(sd["updates"])
        self.replay.load_state_dict(sd["replay"])
        self.driver.set_state(sd["driver"])
        self.policy_steps = int(sd["policy_steps"])
        if not sd.get("steps_summed_over_envs", False) and self.cfg.run.num_envs > 1:
            # checkpoints before the fix counted vector steps: convert to agent steps of all envs
            E = self.cfg.run.num_envs
            self.policy_steps *= E
            sd["episodes"] = [(s * E, ret) for s, ret in sd["episodes"]]
            print(f"vawm: warning: {CKPT} counted vector steps of {E} envs; converted to "
                  f"{self.env_steps} env steps summed over envs", file=sys.stderr)
        self.update_credit = float(sd["update_credit"])
        self.episodes = [tuple(e) for e in sd["episodes"]]
        self.wall_before = float(sd["wall"])
        self.next_log, self.next_ckpt, self.next_eval = sd["next"]
        self.pending = {k: v.numpy() for k, v in sd["pending"].items()}
        self.pending["episodes"] = []
        self.carry = _carry_from_tensors(self.agent.wm, sd["carry"], self.device)
        self.prev_action = sd["prev_action"].to(self.device)
        torch.set_rng_state(sd["rng"]["torch"])
        set_rng_state_legacy(sd["rng"]["numpy"])
        random.setstate((3, tuple(sd["rng"]["python"]), sd["rng"]["python_pos"]))
        self.logger.truncate_after(self.env_steps)

    # ------------------------------------------------------------------ loop
    def _obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(obs, device=self.device)

    def collect_step(self) -> None:
        """One policy step in every env; stores the current observation step in replay."""
        p, r = self.pending, self.cfg.run
        random_phase = self.env_steps < r.prefill
        carry, a = self.agent.act(self.carry, self._obs_tensor(p["obs"]), self.prev_action,
                                  torch.as_tensor(p["is_first"], device=self.device))
        if random_phase:
            a = self._random_actions(r.num_envs)
        self.carry, self.prev_action = carry, a
        action = a.cpu().numpy().astype(np.float32)
        terminal = np.logical_or(p["is_terminal"], p["life_loss"])   # life loss as continuation signal
        self.replay.add({"obs": p["obs"], "action": action, "reward": p["reward"],
                         "is_first": p["is_first"], "is_last": p["is_last"], "is_terminal": terminal})
        self.pending = self.driver.step(action)
        self.policy_steps += r.num_envs
        for _, ret, _length in self.pending["episodes"]:
            self.episodes.append((self.env_steps, float(ret)))
            self.logger.add({"train/episode_return": ret})

    def _random_actions(self, n: int) -> torch.Tensor:
        A = self.info["action_dim"]
        if self.info["discrete"]:
            idx = torch.randint(0, A, (n,))
            return torch.nn.functional.one_hot(idx, A).float().to(self.device)
        return (torch.rand(n, A) * 2 - 1).to(self.device)

    def train(self, resume: bool = False) -> dict:
        cfg, r = self.cfg, self.cfg.run
        self.t0 = time.time()
        if resume and (self.run_dir / CKPT).exists():
            self.load_checkpoint()
        else:
            self.replay.clear_chunks()      # a fresh start in an old run directory
            self.pending = self.driver.step(np.zeros((r.num_envs, self.info["action_dim"]), np.float32))
            self.carry = self.agent.wm.initial_carry(r.num_envs)
            self.carry = _carry_to(self.carry, self.device)
            self.prev_action = torch.zeros(r.num_envs, self.info["action_dim"], device=self.device)
        per_update = r.batch_size * r.batch_length
        stop = _StopFlag()
        bar = _progress(self.progress, cfg.steps, self.env_steps)
        t_upd, n_upd = time.time(), 0
        last_ret = float("nan")
        try:
            while self.env_steps < cfg.steps:
                if stop.signum is not None:     # SIGTERM / Ctrl-C: checkpoint at a step boundary
                    self.save_checkpoint()
                    raise RunInterrupted(stop.signum, self.env_steps)
                self.collect_step()
                if self.env_steps >= r.prefill and self.replay.can_sample():
                    # train ratio: replayed steps per agent step of each env (E agent steps here)
                    self.update_credit += r.train_ratio * r.num_envs / per_update
                    while self.update_credit >= 1.0:
                        self.update_credit -= 1.0
                        batch = self.replay.sample(r.batch_size, self.device)
                        self.logger.add(self.agent.train_step(batch))
                        n_upd += 1
                if self.episodes:
                    last_ret = self.episodes[-1][1]
                if self.env_steps >= self.next_eval:
                    ev = self.evaluate(r.eval_episodes)
                    self.logger.add({"eval/return_mean": ev["eval_return_mean"]})
                    self.next_eval += r.eval_every
                if self.env_steps >= self.next_log and self.env_steps < cfg.steps:
                    ups = n_upd / max(time.time() - t_upd, 1e-9)
                    t_upd, n_upd = time.time(), 0
                    self.logger.write(self.env_steps, self.agent.updates, self.wall(),
                                      {"perf/updates_per_s": ups})
                    self.next_log += r.log_every
                    if bar is not None:
                        bar.set_postfix(updates=self.agent.updates, ups=f"{ups:.2f}",
                                        ret=f"{last_ret:.1f}")
                if self.env_steps >= self.next_ckpt:
                    self.save_checkpoint()
                    self.next_ckpt += r.checkpoint_every
                    if _PAUSE_AFTER_CKPT > 0:     # test hook: hold a resumable state a while
                        time.sleep(_PAUSE_AFTER_CKPT)
                if 0 <= _KILL_AT <= self.policy_steps:   # test hook: simulate `kill -9` here
                    os.kill(os.getpid(), signal.SIGKILL)
                if bar is not None:
                    bar.update(min(self.env_steps, cfg.steps) - bar.n)
        finally:
            stop.restore()
            if bar is not None:
                bar.close()
        self.save_checkpoint()
        ev = self.evaluate(r.eval_episodes)
        self.logger.write(self.env_steps, self.agent.updates, self.wall(),
                          {"eval/return_mean": ev["eval_return_mean"]})
        summary = self.write_summary(ev)
        self.logger.close()
        self.driver.close()
        return summary

    def wall(self) -> float:
        return self.wall_before + time.time() - self.t0

    def evaluate(self, episodes: int) -> dict:
        return evaluate_policy(self.agent, self.cfg, self.device, episodes)

    def write_summary(self, ev: dict) -> dict:
        cfg = self.cfg
        summary = {"status": "finished", **ev, "env_steps": self.env_steps,
                   "policy_steps": self.policy_steps, "updates": self.agent.updates,
                   "wall_clock_s": round(self.wall(), 2), "env": cfg.env, "backbone": cfg.backbone,
                   "objective": cfg.objective, "preset": cfg.preset, "seed": cfg.seed,
                   "action_repeat": self.repeat, "num_envs": cfg.run.num_envs,
                   "train_ratio": cfg.run.train_ratio,
                   "env_cfg": to_dict(cfg.env_cfg), "device": str(self.device),
                   "versions": versions()}
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        plot_returns(self.run_dir, self.episodes, ev)
        return summary


@torch.no_grad()
def evaluate_policy(agent: Agent, cfg: Config, device: torch.device, episodes: int) -> dict:
    """Run ``episodes`` full episodes of the current policy in fresh evaluation envs.

    Each of up to 8 parallel envs gets a fixed quota of episodes (no bias towards short
    episodes). The torch RNG is restored afterwards, so evaluating never changes a training run.
    """
    n = max(1, min(episodes, 8))
    devrng = torch.get_rng_state()
    driver = Driver(cfg.env, n, cfg.seed + 10_000, cfg.env_cfg, False, training=False)
    A = agent.act_dim
    pending = driver.step(np.zeros((n, A), np.float32))
    carry = _carry_to(agent.wm.initial_carry(n), device)
    prev = torch.zeros(n, A, device=device)
    quota = np.array([episodes // n + (i < episodes % n) for i in range(n)])
    done = np.zeros(n, int)
    returns: list[float] = []
    while (done < quota).any():
        carry, a = agent.act(carry, torch.as_tensor(pending["obs"], device=device), prev,
                             torch.as_tensor(pending["is_first"], device=device),
                             mode=cfg.run.eval_mode == "mode")
        prev = a
        pending = driver.step(a.cpu().numpy().astype(np.float32))
        for i, ret, _ in pending["episodes"]:
            if done[i] < quota[i]:
                returns.append(float(ret))
                done[i] += 1
    driver.close()
    torch.set_rng_state(devrng)
    return {"eval_return_mean": float(np.mean(returns)), "eval_return_std": float(np.std(returns)),
            "eval_episodes": len(returns), "eval_returns": returns}


def plot_returns(run_dir: Path, episodes: list, ev: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if episodes:
        x, y = zip(*episodes, strict=True)
        ax.plot(x, y, ".", alpha=0.3, label="training episodes")
        k = max(1, len(y) // 20)
        ys = np.convolve(y, np.ones(k) / k, mode="valid")
        ax.plot(x[k - 1:], ys, label=f"moving mean ({k})")
        ax.errorbar([x[-1]], [ev["eval_return_mean"]], [ev["eval_return_std"]], fmt="o", color="k",
                    label=f"final eval ({ev['eval_episodes']} ep.)")
    else:
        ax.text(0.5, 0.5, "no finished training episode yet", ha="center", transform=ax.transAxes)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("return")
    if episodes:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(run_dir / "returns.png", dpi=100)
    plt.close(fig)


def _progress(enabled: bool, total: int, initial: int):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, mininterval=1.0)


def _carry_to(carry, device):
    s, a = carry
    return (type(s)(*(getattr(s, f).to(device) for f in s.__dataclass_fields__)), a.to(device))


def _carry_to_tensors(carry) -> dict:
    s, a = carry
    return {"state": {f: getattr(s, f).detach().cpu() for f in s.__dataclass_fields__}, "action": a.cpu()}


def _carry_from_tensors(wm, d: dict, device):
    s0, _ = wm.initial_carry(1)
    s = type(s0)(**{k: v.to(device) for k, v in d["state"].items()})
    return (s, d["action"].to(device))


def rng_state_legacy() -> dict:
    st = np.random.get_state()
    return {"keys": torch.from_numpy(st[1].astype(np.int64)), "pos": int(st[2]),
            "has_gauss": int(st[3]), "cached": float(st[4])}


def set_rng_state_legacy(d: dict) -> None:
    np.random.set_state(("MT19937", d["keys"].numpy().astype(np.uint32), d["pos"], d["has_gauss"],
                         d["cached"]))


__all__ = ["Trainer", "Agent", "NonFiniteLossError", "RunInterrupted", "evaluate_policy"]
