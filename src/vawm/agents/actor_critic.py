"""Dreamer behaviour learning in imagination (VaR, anon. 2025, §4.3 eq. 6–9; DreamerV3).

    R^lambda_t = r_{t+1} + gamma c_{t+1} ((1 - lambda) v_{t+1} + lambda R^lambda_{t+1}),  R_H = v_H   (eq. 7)
    L_critic   = -ln p(sg(R^lambda_t) | s_t)  + slowreg * -ln p(sg(v_slow(s_t)) | s_t)
                 (``slow_target=return``, STORM: the second target is R^lambda_t computed with v_slow)
    L_actor    = -sg(A_t) ln pi(a_t | s_t) - eta H[pi(. | s_t)]                                (eq. 8)
    A_t        = (R^lambda_t - v(s_t)) / max(1, S),  S = EMA(Per(R, 95) - Per(R, 5), 0.99)    (eq. 9)

Both losses are weighted by the imagined continuation product prod_{k<=t} c_k (DreamerV3;
``cont_weight=false``: plain means, as STORM's code). STORM's lambda-return bootstraps the step
t -> t+1 with v_t rather than v_{t+1} in its code; that indexing is not reproduced.

For continuous actions the 2023 default backpropagates the return through the dynamics
(``actor_grad=dynamics``); REINFORCE is used for discrete actions and by the 2025 preset.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Annotated, Literal

import torch
from torch import Tensor, nn

from vawm.nets.dist import (
    BoundedNormal,
    MSEHead,
    OneHotPolicy,
    TruncNormal,
    TwoHotSymlog,
    twohot_head,
)
from vawm.nets.layers import MLP
from vawm.nets.normalize import PercentileScale
from vawm.nets.optim import Optim, OptimConfig
from vawm.settings import Min, Range, section
from vawm.state import tree_map
from vawm.worldmodels.base import Backbone, Imagined, Observed

Unit = Annotated[float, Range(0, 1)]
NonNeg = Annotated[float, Min(0)]


@section("agent")
class AgentConfig:
    """Dreamer actor-critic in imagination (VaR, anon. 2025, §4.3 eq. 6-9, Table 15)."""
    horizon: Annotated[int, Min(1)] = 15
    gamma: Annotated[float, Range(0, 1, lo_open=True)] = 0.997   # 1 - 1/333
    lam: Unit = 0.95
    units: Annotated[int, Min(1)] = 256
    layers: Annotated[int, Min(0)] = 2
    norm: Literal["layer", "rms", "none"] = "layer"
    act: Literal["silu", "elu", "relu", "tanh", "gelu"] = "silu"
    actor_ent: NonNeg = 3e-4    # eta; 2025 table: 1e-3
    actor_unimix: Annotated[float, Range(0, 1, hi_open=True)] = 0.01
    # auto: reinforce for discrete, dynamics (backprop through the model) for continuous actions
    actor_grad: Literal["auto", "reinforce", "dynamics"] = "auto"
    min_std: Annotated[float, Min(0, strict=True)] = 0.1
    max_std: Annotated[float, Min(0, strict=True)] = 1.0
    critic_scale: NonNeg = 1.0
    actor_scale: NonNeg = 1.0
    slow_decay: Unit = 0.98     # critic EMA decay
    slowreg: NonNeg = 1.0       # critic EMA regulariser
    repval_scale: NonNeg = 0.0  # replay value loss (2025: 0.3)
    repval_grad: bool = True    # its gradient reaches the world model (2025's code; REINFORCE only)
    retnorm_decay: Unit = 0.99
    retnorm_limit: Annotated[float, Min(0, strict=True)] = 1.0
    imag_starts: Annotated[int, Min(0)] = 0   # 0 = imagine from all B*T posterior states
    # STORM's agent (Zhang et al. 2023, its public code) differs from DreamerV3's in two places;
    # preset ``storm-agent`` selects both: the slow critic's regulariser target is the
    # lambda-return computed with the slow critic's values (``return``) instead of its value, and
    # the losses are plain means instead of weighted by the imagined continuation product.
    slow_target: Literal["value", "return"] = "value"   # value (DreamerV3) | return (STORM)
    cont_weight: bool = True    # weight actor/critic losses by prod c (DreamerV3); STORM: false
    # imagined continuation: mode (DreamerV3's cont head mode(), STORM's termination > 0.5) | prob
    imag_cont: Literal["mode", "prob"] = "mode"
    weight_discount: bool = True   # weights cumprod(gamma c) / gamma (DreamerV3) | cumprod(c)
    # the imagined continuation already carries the discount (DreamerV3 2025's contdisc, with the
    # backbone's continuation target gamma): returns and weights use c alone
    cont_disc: bool = False
    init: Literal["dreamer", "torch"] = "dreamer"   # zero critic / 0.01 actor outputs | PyTorch's
    # imagination starts: the observed states of this update | re-encoded in eval mode after the
    # world-model step (STORM's code)
    restart: Literal["observed", "reencode"] = "observed"
    # separate: an optimiser each for actor and critic (DreamerV3 2023) | joint: one optimiser over
    # both, one clip on the joint gradient norm (STORM's code; actor settings: optim.actor_lr)
    opt: Literal["separate", "joint"] = "separate"
    twohot: Literal["symlog", "symexp"] = "symlog"   # critic bins (DreamerV3 2025: symexp-spaced)
    # ---- DreamerV2 (Hafner et al. 2021, its public code; presets dreamerv2-atari, dreamerv2-dmc)
    # the behaviour learner: DreamerV3's (this module) | DreamerV2's (agents/dreamerv2.py: target
    # critic, its lambda-return indexing, no return normalisation)
    recipe: Literal["dreamerv3", "dreamerv2"] = "dreamerv3"
    # continuous policy: Normal(tanh mu, std in [min_std, max_std]) (DreamerV3) | truncated to
    # [-1, 1] with std 2 sigmoid(s / 2) + min_std (DreamerV2's trunc_normal)
    actor_dist: Literal["normal", "trunc_normal"] = "normal"
    critic_dist: Literal["twohot", "mse"] = "twohot"   # mse: unit-variance Normal (DreamerV2)
    target_every: Annotated[int, Min(1)] = 100   # dreamerv2: the target critic copies every k updates


def lambda_returns(reward: Tensor, cont: Tensor, value: Tensor, gamma: float, lam: float) -> Tensor:
    """Bootstrapped lambda-returns (eq. 7), time-major.

    reward, cont, value: [H+1, N] where reward[t]/cont[t] are predicted on arriving at state t.
    Returns R: [H, N] for the states 0..H-1; the last state bootstraps with its value.
    """
    H = value.shape[0] - 1
    out = []
    last = value[H]
    for t in reversed(range(H)):
        last = reward[t + 1] + gamma * cont[t + 1] * ((1 - lam) * value[t + 1] + lam * last)
        out.append(last)
    return torch.stack(out[::-1], 0)


class Critic(nn.Module):
    def __init__(self, din: int, cfg: AgentConfig, bins: int = 255):
        super().__init__()
        self.mse = cfg.critic_dist == "mse"
        self.net = MLP(din, 1 if self.mse else bins, cfg.layers, cfg.units, cfg.norm, cfg.act,
                       zero_out=cfg.init == "dreamer")
        self.twohot, b = twohot_head(cfg.twohot, bins)
        self.register_buffer("bins", b, persistent=False)

    def forward(self, feat: Tensor) -> TwoHotSymlog | MSEHead:
        return MSEHead(self.net(feat)) if self.mse else self.twohot(self.net(feat), self.bins)


class Actor(nn.Module):
    def __init__(self, din: int, act_dim: int, discrete: bool, cfg: AgentConfig):
        super().__init__()
        self.discrete, self.cfg = discrete, cfg
        self.net = MLP(din, act_dim if discrete else 2 * act_dim, cfg.layers, cfg.units, cfg.norm,
                       cfg.act, out_scale=0.01 if cfg.init == "dreamer" else 1.0)

    def forward(self, feat: Tensor):
        out = self.net(feat)
        if self.discrete:
            return OneHotPolicy(out, self.cfg.actor_unimix)
        if self.cfg.actor_dist == "trunc_normal":
            return TruncNormal(out, self.cfg.min_std)
        return BoundedNormal(out, self.cfg.min_std, self.cfg.max_std)


class ActorCritic(nn.Module):
    """Actor, critic, slow critic and return normaliser, with their optimisers."""

    def __init__(self, feat_dim: int, act_dim: int, discrete: bool, cfg: AgentConfig,
                 ocfg: OptimConfig):
        super().__init__()
        self.cfg, self.discrete = cfg, discrete
        self.actor = Actor(feat_dim, act_dim, discrete, cfg)
        self.critic = Critic(feat_dim, cfg)
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.retnorm = PercentileScale(cfg.retnorm_decay, cfg.retnorm_limit)
        grad = cfg.actor_grad
        self.actor_grad = ("reinforce" if discrete else "dynamics") if grad == "auto" else grad
        if discrete and self.actor_grad == "dynamics":
            raise ValueError("actor_grad=dynamics needs continuous actions; use reinforce")
        self.disc = 1.0 if cfg.cont_disc else cfg.gamma    # the imagination's discount
        # the replay-value loss trains the world model too when nothing else of this step does
        # (REINFORCE imagines without gradient, as DreamerV3 2025 always does)
        self.repval_grad = cfg.repval_scale > 0 and cfg.repval_grad and \
            self.actor_grad == "reinforce"
        lr_a, lr_c = ocfg.actor_lr, ocfg.critic_lr
        opt = lambda params, lr: Optim(params, ocfg.kind, lr, ocfg.ac_eps, ocfg.ac_clip,  # noqa: E731
                                       ocfg.warmup, ocfg.weight_decay)
        if cfg.opt == "joint":                  # STORM: one Adam, one clip over both
            params = list(self.actor.parameters()) + list(self.critic.parameters())
            self.actor_opt = self.critic_opt = opt(params, lr_a)
        else:
            self.actor_opt = opt(list(self.actor.parameters()), lr_a)
            self.critic_opt = opt(list(self.critic.parameters()), lr_c)

    def value(self, feat: Tensor, slow: bool = False) -> Tensor:
        return (self.slow_critic if slow else self.critic)(feat).mean

    def policy(self, feat: Tensor):
        return self.actor(feat)

    def act(self, wm: Backbone, feat: Tensor, mode: bool = False) -> Tensor:
        """The environment action for features [N, F]: the policy's mode or a sample."""
        pol = self.policy(feat)
        return pol.mode() if mode else pol.sample()

    def model_losses(self, wm: Backbone, obs: Observed, batch: dict[str, Tensor]
                     ) -> dict[str, Tensor]:
        """Terms this learner adds to the world-model loss (none: imagination learns from the
        model's states, not into them)."""
        return {}

    @torch.no_grad()
    def update_slow(self) -> None:
        d = self.cfg.slow_decay
        for s, p in zip(self.slow_critic.parameters(), self.critic.parameters(), strict=True):
            s.mul_(d).add_((1 - d) * p)

    def train_step(self, wm: Backbone, obs: Observed, batch: dict[str, Tensor],
                   amp=contextlib.nullcontext) -> dict[str, Tensor]:
        """One actor and one critic update in imagination; ``amp()`` wraps the forward passes
        (the agent's bf16 autocast under ``run.precision=bf16``), backward passes run outside."""
        cfg = self.cfg
        dyn_grad = self.actor_grad == "dynamics"
        with amp():
            imag, cont, is_terminal = self.imagine(wm, obs, batch)
            feat = imag.feat                                        # [H+1, N, F]
            cont[0] = 1.0 - is_terminal                             # the start state's real flag
            weight = self.loss_weights(cont)
            values = self.critic(feat)                              # [H+1, N]
            value = values.mean
            ret = lambda_returns(imag.reward, cont, value, self.disc, cfg.lam)  # [H, N]
            # ---- actor (eq. 8, 9)
            self.retnorm.update(ret)
            scale = self.retnorm.scale()
            adv = (ret - value[:-1]) / scale
            pol = self.actor(feat[:-1].detach())
            ent = pol.entropy()
            if dyn_grad:
                actor_obj = adv
            else:
                actor_obj = pol.log_prob(imag.action[:-1].detach()) * adv.detach()
            actor_loss = -(weight[:-1] * (actor_obj + cfg.actor_ent * ent)).mean() * cfg.actor_scale
        if cfg.opt == "separate":
            actor_gn = self.descend(self.actor_opt, actor_loss)
        # ---- critic (eq. 7) with the slow-critic regulariser
        with amp():
            fd = feat[:-1].detach()
            # without dynamics gradients the imagined features carry no gradient, so the value
            # forward above is the critic's forward on fd: its logits are reused, not recomputed
            dist = self.critic(fd) if dyn_grad or self.critic.mse else \
                type(values)(values.logits[:-1], values.bins)
            target = ret.detach()
            with torch.no_grad():
                if cfg.slow_target == "return":                     # STORM
                    slow = lambda_returns(imag.reward, cont, self.slow_critic(feat).mean,
                                          self.disc, cfg.lam)
                else:                                               # DreamerV3
                    slow = self.slow_critic(fd).mean
            critic_loss = -dist.log_prob(target) - cfg.slowreg * dist.log_prob(slow)
            critic_loss = (weight[:-1] * critic_loss).mean() * cfg.critic_scale
            if cfg.repval_scale > 0:
                critic_loss = critic_loss + cfg.repval_scale * self._repval_loss(obs, batch, ret)
        if cfg.opt == "joint":                  # one loss, one step (STORM)
            actor_gn = critic_gn = self.descend(self.critic_opt, actor_loss + critic_loss)
        else:
            critic_gn = self.descend(self.critic_opt, critic_loss)
        self.update_slow()
        return {
            "agent/actor_loss": actor_loss.detach(), "agent/critic_loss": critic_loss.detach(),
            "agent/entropy": ent.mean().detach(), "agent/return": ret.mean().detach(),
            "agent/value": value.mean().detach(), "agent/retnorm_scale": scale.detach(),
            "agent/adv_std": adv.std().detach(), "agent/actor_gradnorm": actor_gn,
            "agent/critic_gradnorm": critic_gn, "agent/imag_reward": imag.reward[1:].mean().detach(),
        }

    @staticmethod
    def descend(opt: Optim, loss: Tensor) -> Tensor:
        """One optimiser step on ``loss``; returns the gradient norm before clipping."""
        opt.zero_grad()
        loss.backward()
        return opt.step()

    def imagine(self, wm: Backbone, obs: Observed, batch: dict[str, Tensor]
                ) -> tuple[Imagined, Tensor, Tensor]:
        """Imagine ``horizon`` steps from the observed states (``imag_starts`` of them at random
        when set; with the dynamics' gradient under ``actor_grad=dynamics``). Returns the rollout,
        its continuation (a copy; Bernoulli mode under ``imag_cont=mode``) and the starts' real
        terminal flags."""
        cfg = self.cfg
        start = obs.start
        is_terminal = batch["is_terminal"].reshape(-1).float()
        if cfg.imag_starts and cfg.imag_starts < is_terminal.shape[0]:
            idx = torch.randperm(is_terminal.shape[0], device=is_terminal.device)[: cfg.imag_starts]
            start = tree_map(lambda t: t[idx], start)
            is_terminal = is_terminal[idx]
        with torch.enable_grad() if self.actor_grad == "dynamics" else torch.no_grad():
            imag = wm.imagine(start, self._imagine_policy, cfg.horizon)
        cont = imag.cont.clone()
        if cfg.imag_cont == "mode":                                 # Bernoulli mode
            cont = (cont > 0.5).to(cont.dtype)
        return imag, cont, is_terminal

    def _imagine_policy(self, feat: Tensor) -> Tensor:
        """Imagined actions: reparameterised samples (continuous ones in the action box)."""
        a = self.actor(feat).rsample()
        return a if self.discrete else a / a.abs().clamp(min=1).detach()

    def loss_weights(self, cont: Tensor) -> Tensor:
        """[H+1, N] weights of the imagined steps: cumprod(gamma c) / gamma (DreamerV3), the plain
        product (``weight_discount=false``) or ones (``cont_weight=false``, STORM)."""
        cfg = self.cfg
        if not cfg.cont_weight:
            return torch.ones_like(cont)
        disc = self.disc if cfg.weight_discount else 1.0
        return (torch.cumprod(disc * cont, 0) / disc).detach()

    def _repval_loss(self, obs: Observed, batch: dict[str, Tensor], imag_ret: Tensor) -> Tensor:
        """DreamerV3 2025's replay value loss (its current code): lambda-returns along the
        *replayed* trajectory, bootstrapped at every step from that state's imagined return and
        cut at episode ends, regressed by the critic on the posterior features together with the
        slow-critic regulariser; last steps are masked out. With ``repval_grad`` the features keep
        their graph, so the loss's gradient reaches the world model (the agent steps the world
        model after this). Only used when every posterior state started an imagination.

            live_t = gamma (1 - term_{t+1}),  c_t = lam (1 - last_{t+1})
            R_{T-1} = boot_{T-1},  R_t = r_{t+1} + (1 - c_t) live_t boot_{t+1} + live_t c_t R_{t+1}
        """
        cfg = self.cfg
        B, T = batch["reward"].shape
        if imag_ret.shape[1] != B * T:
            return torch.zeros(())
        boot = imag_ret[0].reshape(B, T).detach()                   # R^lambda from each start
        feat = obs.post if self.repval_grad else obs.post.detach()
        rew = batch["reward"].float()
        live = cfg.gamma * (1.0 - batch["is_terminal"].float()[:, 1:])     # [B, T-1]
        cont = cfg.lam * (1.0 - batch["is_last"].float()[:, 1:])
        interm = rew[:, 1:] + (1.0 - cont) * live * boot[:, 1:]
        rets = [boot[:, -1]]
        for t in reversed(range(T - 1)):
            rets.append(interm[:, t] + live[:, t] * cont[:, t] * rets[-1])
        target = torch.stack(rets[::-1], 1)[:, :-1].detach()        # [B, T-1]
        dist = self.critic(feat[:, :-1])
        with torch.no_grad():
            slow = self.slow_critic(feat[:, :-1].detach()).mean
        weight = 1.0 - batch["is_last"].float()[:, :-1]
        per = -dist.log_prob(target) - cfg.slowreg * dist.log_prob(slow)
        return (weight * per).mean()
