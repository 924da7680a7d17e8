"""The one training loop every backbone x objective combination shares.

    collect (agent steps in E envs) -> replay -> [train-ratio many] Agent.train_step
    -> log / evaluate / checkpoint -> final evaluation -> summary

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
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from vawm import checkpoint
from vawm.acting import Acting, evaluate_policy, random_actions
from vawm.agent import Agent, NonFiniteLossError, resolve_device
from vawm.config import Config, save_config, to_dict
from vawm.driver import Driver
from vawm.envs import action_repeat, env_info
from vawm.logger import MetricLogger, plot_returns, progress_bar, versions
from vawm.replay import Replay
from vawm.settings import ConfigError
from vawm.state import rng_state, seed_everything, set_rng_state

CKPT = "checkpoints/latest.pt"


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
        if cfg.run.cuda_graph and self.device.type != "cuda":
            raise ConfigError("run.cuda_graph=true needs a CUDA device (this run is on "
                              f"{self.device.type}); set run.device=cuda on a GPU machine or "
                              "run.cuda_graph=false")
        self.info = env_info(cfg.env, cfg.env_cfg)
        self.repeat = action_repeat(cfg.env, cfg.env_cfg)
        self.agent = Agent(cfg, self.info).to(self.device)
        r = cfg.run
        obs_dtype = np.uint8 if self.info["obs_kind"] == "image" else np.float32
        chunks = self.run_dir / "replay" if r.replay_persist == "chunks" else None
        self.replay = Replay(r.replay_capacity, r.num_envs, tuple(self.info["obs_shape"]), obs_dtype,
                             self.info["action_dim"], r.batch_length, seed=cfg.seed,
                             chunk_dir=chunks, chunk=r.replay_chunk)
        self.driver = Driver(cfg.env, r.num_envs, cfg.seed, cfg.env_cfg, r.parallel_envs)
        self.acting = Acting(self.agent, self.driver, self.device)
        self.policy_steps = 0
        self.update_credit = 0.0
        self.wall_before = 0.0
        self.episodes: list[tuple[int, float]] = []   # (env_step, return) of finished episodes
        self.next_log = r.log_every
        self.next_ckpt = r.checkpoint_every
        self.next_eval = r.eval_every or math.inf
        self.saved_replay_total: int | None = None   # replay.total of the last checkpoint
        save_config(cfg, str(self.run_dir / "config.yaml"))
        self.logger = MetricLogger(self.run_dir)

    @property
    def env_steps(self) -> int:
        return self.policy_steps * self.repeat

    # ------------------------------------------------------------------ hooks (tests, tools)
    def on_step(self) -> None:
        """Called after every vector step (a subclass or a test may stop or inspect the run)."""

    def on_checkpoint(self) -> None:
        """Called after every periodic checkpoint."""

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
            **self.acting.state_dict(), "rng": rng_state(),
        }

    def save_checkpoint(self) -> None:
        """Write ``latest.pt`` (the one before it becomes ``latest.previous.pt``); replay chunks
        neither of the two needs are deleted."""
        checkpoint.save(self.state_dict(), self.run_dir / CKPT, keep_previous=True)
        self.replay.prune(older_total=self.saved_replay_total)
        self.saved_replay_total = self.replay.total

    def load_checkpoint(self) -> None:
        sd = checkpoint.load_latest(self.run_dir / CKPT, repair=True)
        self.agent.load_state_dict(sd["agent"])
        self.agent.load_opt_state(sd["opt"])
        self.agent.updates = int(sd["updates"])
        self.replay.load_state_dict(sd["replay"])
        self.driver.set_state(sd["driver"])
        self.policy_steps = int(sd["policy_steps"])
        episodes = [tuple(e) for e in sd["episodes"]]
        if not sd.get("steps_summed_over_envs", False) and self.cfg.run.num_envs > 1:
            # checkpoints before the fix counted vector steps: convert to agent steps of all envs
            E = self.cfg.run.num_envs
            self.policy_steps *= E
            episodes = [(s * E, ret) for s, ret in episodes]
            print(f"vawm: warning: {CKPT} counted vector steps of {E} envs; converted to "
                  f"{self.env_steps} env steps summed over envs", file=sys.stderr)
        self.episodes = episodes
        self.update_credit = float(sd["update_credit"])
        self.wall_before = float(sd["wall"])
        self.next_log, self.next_ckpt, self.next_eval = sd["next"]
        self.acting.load_state_dict(sd)
        self.saved_replay_total = self.replay.total
        set_rng_state(sd["rng"])
        self.logger.truncate_after(self.env_steps)

    # ------------------------------------------------------------------ loop
    def collect_step(self) -> None:
        """One agent step in every env; stores the acted-on observation step in replay."""
        r = self.cfg.run
        override = None
        if self.env_steps < r.prefill:            # random actions (the policy still filters)
            override = lambda a: random_actions(r.num_envs, self.info["action_dim"],
                                                self.info["discrete"], self.device)
        step = self.acting.step(override)
        step["is_terminal"] = np.logical_or(step["is_terminal"], step.pop("life_loss"))
        self.replay.add(step)                     # life loss as the world model's terminal signal
        self.policy_steps += r.num_envs
        for _, ret, _length in self.acting.pending["episodes"]:
            self.episodes.append((self.env_steps, float(ret)))
            self.logger.add({"train/episode_return": ret})

    def update(self) -> int:
        """The updates this step's train-ratio credit pays for; returns how many ran."""
        r = self.cfg.run
        if self.env_steps < r.prefill or not self.replay.can_sample():
            return 0
        # train ratio: replayed steps per agent step of each env (E agent steps here)
        self.update_credit += r.train_ratio * r.num_envs / (r.batch_size * r.batch_length)
        n = 0
        while self.update_credit >= 1.0:
            self.update_credit -= 1.0
            self.logger.add(self.agent.train_step(self.replay.sample(r.batch_size, self.device)))
            n += 1
        return n

    def train(self, resume: bool = False) -> dict:
        cfg, r = self.cfg, self.cfg.run
        self.t0 = time.time()
        if resume and checkpoint.exists(self.run_dir / CKPT):
            self.load_checkpoint()
        else:
            self.replay.clear_chunks()      # a fresh start in an old run directory
            self.acting.reset()
        stop = _StopFlag()
        bar = progress_bar(self.progress, cfg.steps, self.env_steps)
        t_upd, n_upd = time.time(), 0
        try:
            while self.env_steps < cfg.steps:
                if stop.signum is not None:     # SIGTERM / Ctrl-C: checkpoint at a step boundary
                    self.save_checkpoint()
                    raise RunInterrupted(stop.signum, self.env_steps)
                self.collect_step()
                n_upd += self.update()
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
                        last = self.episodes[-1][1] if self.episodes else float("nan")
                        bar.set_postfix(updates=self.agent.updates, ups=f"{ups:.2f}",
                                        ret=f"{last:.1f}")
                if self.env_steps >= self.next_ckpt:
                    self.save_checkpoint()
                    self.next_ckpt += r.checkpoint_every
                    self.on_checkpoint()
                self.on_step()
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
                   "precision": "bf16" if self.agent.bf16(self.device) else "fp32",
                   "versions": versions()}
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        plot_returns(self.run_dir, self.episodes, ev)
        return summary


__all__ = ["Trainer", "Agent", "NonFiniteLossError", "RunInterrupted", "evaluate_policy", "CKPT"]
