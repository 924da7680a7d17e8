"""The agent: world model + objective + actor-critic, and the update that ties them together.

    observe batch -> objective contribution -> world-model step -> actor-critic in imagination

The objective sees what the backbone exposes (``Observed``) and a :class:`Context`; it returns
loss terms and/or per-step weights (``Contribution``) that this update composes with the
backbone's own loss.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from vawm.agents.actor_critic import ActorCritic
from vawm.agents.dreamerv2 import DreamerV2ActorCritic
from vawm.agents.td import TDLearner
from vawm.graphs import GraphedStep
from vawm.nets.layers import MLP, compile_hot_modules
from vawm.nets.onehot import clear_onehot_cache
from vawm.nets.optim import Optim
from vawm.objectives import Context, build_objective
from vawm.settings import ConfigError
from vawm.worldmodels import build_backbone


class NonFiniteLossError(RuntimeError):
    pass


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run.device=cuda but no CUDA device is available; use run.device=cpu")
    return torch.device(name)


#: ``run.precision=auto`` autocasts to bf16 from this actor-critic width up. Measured on the 2-core
#: AVX512-BF16 CPU (benchmarks/throughput.py --compare run.precision=bf16, 2026-11-30): XS (256
#: units) 0.43x the fp32 time, the cpu preset (128) 0.74x, smoke (64) 0.99x; 128 would pay too,
#: but the default job's learning rows were measured in fp32 and must be re-run before it moves
#: (README, "Speed switches")
AUTO_BF16_MIN_UNITS = 256


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 matmuls natively (CUDA with bf16; a CPU with
    AVX512-BF16 or AMX), not by emulation."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported()
                                     or torch.cpu._is_amx_tile_supported())


def uses_bf16(precision: str, units: int, device: torch.device) -> bool:
    """``run.precision`` resolved: bf16 / fp32 as asked; auto = bf16 where the device computes
    it natively and the networks are at least ``AUTO_BF16_MIN_UNITS`` wide (DreamerV3's own
    code computes in bf16), else fp32."""
    if precision != "auto":
        return precision == "bf16"
    return units >= AUTO_BF16_MIN_UNITS and native_bf16(device)


AUTO_GATHER_MIN_WIDTH = 1024    # run.onehot_gather=auto: the one-hot block's S*C from here


def uses_onehot_gather(setting: str, layout: tuple[int, int, int] | None) -> bool:
    """Whether ``run.onehot_gather`` (auto | on | off) gathers for a backbone's one-hot layout."""
    if layout is None or setting == "off":
        return False
    return setting == "on" or layout[1] * layout[2] >= AUTO_GATHER_MIN_WIDTH


class Agent(torch.nn.Module):
    """World model + objective + actor-critic, and the update that ties them together."""

    def __init__(self, cfg, info: dict):
        super().__init__()
        self.cfg = cfg
        self.discrete, self.act_dim = info["discrete"], info["action_dim"]
        self.wm = build_backbone(cfg, info)
        self.objective = build_objective(cfg, self.wm)
        if self.wm.behaviour == "td":      # latent backbone: TD3 critics, data mixing, MPC
            if self.discrete:
                raise ConfigError(f"--backbone {cfg.backbone} learns a deterministic TD3 actor and "
                                  f"needs continuous actions, but {cfg.env} has discrete ones; "
                                  "use a continuous-control env (e.g. dmc:cheetah-run)")
            self.ac = TDLearner(self.wm.feat_dim, self.act_dim, self.discrete, cfg.td, cfg.optim)
        else:
            learner = DreamerV2ActorCritic if cfg.agent.recipe == "dreamerv2" else ActorCritic
            self.ac = learner(self.wm.feat_dim, self.act_dim, self.discrete, cfg.agent, cfg.optim)
        o = cfg.optim
        groups = self.wm.param_groups(o.model_lr)
        groups[-1]["params"] = groups[-1]["params"] + list(self.objective.wm_parameters())
        self.wm_params = [p for g in groups for p in g["params"]]
        self.wm_opt = Optim(groups, o.kind, o.model_lr, o.model_eps, o.model_clip, o.warmup,
                            o.weight_decay)
        self.updates = 0
        self._bf16: dict[str, bool] = {}        # device type -> run.precision resolved
        self.profile = False    # benchmarks: time the world-model step (observe..optimiser)
        if uses_onehot_gather(cfg.run.onehot_gather, self.wm.onehot_layout):
            self._gather_onehot(self.wm.onehot_layout)
        if cfg.run.compile:
            compile_hot_modules(self)
        self.graphed: GraphedStep | None = None
        if cfg.run.cuda_graph:      # capture the whole update (vawm.graphs); Adam keeps its
            for opt in self.optimisers():               # step counts on the device
                opt.capturable()
            self.graphed = GraphedStep(self.update_tensors, lambda: self.objective.phase(self.updates))

    def _gather_onehot(self, layout: tuple[int, int, int]) -> None:
        """``run.onehot_gather``: the MLPs that read the backbone's features (reward, continuation,
        actor, critic, slow critic) gather the one-hot block's weight rows for inputs that need no
        gradient; rssm's sequence-model input layer does the same in imagination."""
        wm_heads = [getattr(self.wm, "reward_head", None), getattr(self.wm, "cont_head", None)]
        for m in [*wm_heads, *self.ac.modules()]:
            if isinstance(m, MLP) and m.body and m.body[0].linear.in_features == self.wm.feat_dim:
                m.onehot = layout
        if hasattr(self.wm, "onehot_core"):     # rssm's joint [z, a] input layer (core decides)
            self.wm.onehot_core = True

    def optimisers(self) -> list[Optim]:
        return list(dict.fromkeys([self.wm_opt, self.ac.actor_opt, self.ac.critic_opt]))

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One update; returns its metrics as floats (``run.cuda_graph``: a graph replay)."""
        if self.graphed is None:
            out = self.update_tensors(batch)
        else:
            out = self.graphed(batch)
            if not torch.isfinite(out["wm/loss"]):      # after the replay: captured, no sync
                raise NonFiniteLossError(
                    f"non-finite world-model loss at update {self.updates}; the last checkpoint "
                    "is intact — lower optim.model_lr or check the objective's settings, then "
                    "--resume")
        self.updates += 1
        return {k: float(v) for k, v in out.items()}

    def update_tensors(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The update itself, its metrics as tensors. Nothing in it synchronises with the host
        except the eager non-finite check (and ``profile``'s timers), so ``run.cuda_graph`` can
        capture it (``tests/test_graphs.py``)."""
        if self.profile:
            _sync(batch["reward"].device)
            t0 = time.perf_counter()
        with self.amp():
            obs = self.wm.observe(batch, self.updates)
            ctx = Context(self.wm, self.ac, self.updates, batch, self.cfg.optim.model_lr)
            contrib = self.objective.contribute(obs, ctx)
            wm_loss, metrics = self.wm.loss(obs, contrib.weights)
            # the behaviour learner's own terms of the world-model loss (td: the encoder's TD loss)
            own = self.ac.model_losses(self.wm, obs, batch)
            rest = sum([*contrib.losses.values(), *own.values()],
                       torch.zeros((), device=wm_loss.device))
            total = wm_loss + rest
        if self.graphed is None and not torch.isfinite(total):
            bad = {k: float(v) for k, v in {"wm": wm_loss, **contrib.losses}.items()}
            raise NonFiniteLossError(
                f"non-finite world-model loss at update {self.updates}: {bad}; the last checkpoint "
                "is intact — lower optim.model_lr or check the objective's settings, then --resume")
        self.wm_opt.zero_grad()
        # DreamerV3 2025 trains everything from one loss: the replay-value loss's gradient joins
        # the world model's before its step (the actor-critic step below adds it)
        joint = self.ac.repval_grad
        if contrib.wm_grads is None:
            total.backward(retain_graph=joint)
        else:       # the objective already has d wm_loss / d theta (TEMPO's one backward)
            if rest.requires_grad:
                rest.backward(retain_graph=joint)
            for p, g in contrib.wm_grads:
                p.grad = g if p.grad is None else p.grad + g
        if not joint:
            metrics["wm/gradnorm"] = self.wm_opt.step()
            self.wm.after_update()
        if self.profile:                    # everything an objective adds happens before here
            _sync(batch["reward"].device)
            metrics["time/wm_step_s"] = time.perf_counter() - t0
        metrics["wm/loss"] = total.detach()
        metrics.update({f"{self.objective.log_name}/{k}": v.detach() for k, v in contrib.losses.items()})
        metrics.update(contrib.metrics)
        metrics.update({f"wm/{k}": v.detach() for k, v in own.items()})
        if self.cfg.agent.restart == "reencode":   # STORM: starts from the updated model, eval mode
            obs = dataclasses.replace(obs, start=self._reencoded_starts(batch))
        metrics.update(self.ac.train_step(self.wm, obs, batch, self.amp))
        if joint:
            metrics["wm/gradnorm"] = self.wm_opt.step()
            self.wm.after_update()
        clear_onehot_cache()                # release the imagined features it holds
        return {k: torch.as_tensor(v) for k, v in metrics.items()}

    @torch.no_grad()
    def _reencoded_starts(self, batch: dict[str, torch.Tensor]):
        was = self.wm.training
        self.wm.eval()
        try:
            with self.amp():
                return self.wm.observe(batch, self.updates).start
        finally:
            self.wm.train(was)

    def amp(self):
        """The update's forward passes under bfloat16 autocast where :meth:`bf16` says so
        (``run.precision``), on the parameters' device (matmuls and convolutions in bf16;
        parameters, optimiser state, recurrent states, distributions and losses stay float32).
        A disabled context at fp32.
        Acting and evaluation always run in float32."""
        device = self.wm_params[0].device
        # a CUDA-graph capture cannot keep autocast's weight-cast cache (PyTorch's CUDA-graph notes)
        return torch.autocast(device.type, torch.bfloat16, enabled=self.bf16(device),
                              cache_enabled=self.graphed is None)

    def bf16(self, device: torch.device | None = None) -> bool:
        """Whether the update autocasts to bf16 on ``device`` (default: the parameters')."""
        device = device or self.wm_params[0].device
        if device.type not in self._bf16:
            # auto's threshold was measured for the imagination agents; the latent backbone's TD
            # learner (not measured in bf16) stays in fp32 unless run.precision=bf16 asks
            units = self.cfg.agent.units if self.wm.behaviour == "imagination" else 0
            self._bf16[device.type] = uses_bf16(self.cfg.run.precision, units, device)
        return self._bf16[device.type]

    @torch.no_grad()
    def act(self, carry, obs: torch.Tensor, prev_action: torch.Tensor, is_first: torch.Tensor,
            mode: bool = False):
        carry, feat = self.wm.act_step(carry, obs, prev_action, is_first)
        a = self.ac.act(self.wm, feat, mode)
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
