"""TD-MPC-style latent model (``latent``): the backbone of Voelcker et al. 2025's deep-RL half (§6–7,
App. C), after Hansen et al. 2022 (TD-MPC).

    encoder     z_t = h(o_t)                         MLP (vectors) or CNN + linear (images)
    dynamics    z^_{t+1} = f(z_t, a_t)               ``deterministic``: an MLP
                z^_{t+1} ~ N(mu(z_t, a_t), sigma(z_t, a_t))   ``gaussian``: diagonal, bounded
                                                     log-std, samples by reparameterisation (eq. 8)
    reward      r^_{t+1} = R(z_t, a_t)               MLP
    target      z-bar_t = h-bar(o_t)                 EMA copy of the encoder (no gradient)
    ``simnorm``  latents as softmaxes over groups of dims (Hansen et al. 2024; off by default)

There is no decoder and no continuation head (TD-MPC; DMC tasks do not terminate). Behaviour
learning (twin critics, actor, MAD-TD data mixing, MPC) lives in ``vawm.agents.td``; the value-
aware losses are the ``vaml`` objective. This module only learns the model:

    L = reward_scale * sum_j (R(z^_{j-1}, a_{j-1}) - r_j)^2 + aux_scale * sum_j aux_j,  j = 1..H
    aux_j = ||z^_j - sg(z-bar_j)||^2 / L          deterministic (eq. 6, MSE per latent dim)
    aux_j = -ln N(sg(z-bar_j) | mu_j, sigma_j) / L  gaussian (eq. 9, NLL per latent dim)

from z^_0 = h(o_0), the start of each replayed sequence, along the replayed actions for
H = ``rollout`` steps (Table 2: model rollout depth 1). Steps after an episode boundary inside a
sequence are masked. ``Observed.kl`` carries aux_j (the self-prediction term stands in for the KL
of the recurrent backbones); ``post`` is h(o_t) at every step, ``prior`` the model's prediction
where there is one (the posterior elsewhere); only the start h(o_0) carries the encoder's gradient
(later steps are targets). ``extras["target"]`` holds z-bar_1..z-bar_H. Readings:
docs/faithfulness.md.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from torch import Tensor, nn

from vawm.nets.conv import ConvEncoder, conv_stages
from vawm.nets.layers import MLP
from vawm.settings import ConfigError, Min, section
from vawm.worldmodels.base import Backbone, Imagined, Observed, register_backbone

Pos = Annotated[int, Min(1)]
NonNeg = Annotated[float, Min(0)]
LOG_2PI = math.log(2 * math.pi)


@section("latent")
class LatentConfig:
    """TD-MPC latent model (Hansen et al. 2022) as Voelcker et al. 2025 App. C.1 / Table 2 use it."""
    dynamics: Literal["deterministic", "gaussian"] = "deterministic"
    latent: Pos = 512           # Table 2: latent dimension
    units: Pos = 512            # hidden width of encoder, dynamics and reward MLPs
    enc_layers: Annotated[int, Min(0)] = 1    # hidden layers of the encoder MLP (TD-MPC: 1)
    layers: Annotated[int, Min(0)] = 2        # hidden layers of the dynamics / reward MLPs
    act: Literal["elu", "silu", "relu"] = "elu"   # TD-MPC: ELU
    norm: Literal["none", "layer"] = "none"       # TD-MPC: none
    min_log_std: float = -5.0   # gaussian: log sigma = min + (max - min) sigmoid(raw)
    max_log_std: float = 0.5
    rollout: Pos = 1            # Table 2: model rollout depth H of the model losses
    reward_scale: NonNeg = 1.0
    aux: bool = True            # the self-prediction loss (eq. 6 / eq. 9); off: App. C.4 Fig. 8
    aux_scale: NonNeg = 1.0
    target_tau: Annotated[float, Min(0)] = 0.01   # target encoder <- (1 - tau) target + tau online
    encoder_lr: Annotated[float, Min(0, strict=True)] = 1e-4   # Table 2 (model: optim.model_lr)
    model_free: bool = False    # TD3 baseline (App. C.4 Fig. 7): no model losses, no model data
    cnn_depth: Pos = 32         # image encoder
    simnorm: Annotated[int, Min(0)] = 0   # >0: SimNorm groups of this size on the encoder's and
    #                                       the deterministic model's latents (TD-MPC2, MAD-TD: 8)


@dataclass
class LState:
    """A latent state: the features are the latent itself."""
    z: Tensor

    def feat(self) -> Tensor:
        return self.z


@register_backbone("latent")
class LatentModel(Backbone):
    Config = LatentConfig
    behaviour = "td"
    has_decoder = False
    term_names = ("reward", "aux")

    def __init__(self, cfg: LatentConfig, obs_shape: tuple[int, ...], act_dim: int,
                 image: bool):
        super().__init__()
        self.cfg, self.act_dim, self.image = cfg, act_dim, image
        L, U, act, norm = cfg.latent, cfg.units, cfg.act, cfg.norm
        if image:
            stages = conv_stages(obs_shape[1:], 4)
            conv = ConvEncoder(obs_shape[0], cfg.cnn_depth, stages, norm, act, obs_shape[1:])
            self.encoder = nn.Sequential(conv, nn.Linear(conv.dout, L))
        else:
            self.encoder = MLP(obs_shape[0], L, cfg.enc_layers, U, norm, act)
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.gaussian = cfg.dynamics == "gaussian"
        self.dynamics = MLP(L + act_dim, 2 * L if self.gaussian else L, cfg.layers, U, norm, act)
        self.reward = MLP(L + act_dim, 1, cfg.layers, U, norm, act, zero_out=True)
        self.feat_dim = L
        self.latent_slice = slice(0, L)
        self.stochastic = self.gaussian
        self.model_free = cfg.model_free

    @classmethod
    def from_config(cls, cfg, info: dict) -> LatentModel:
        return cls(cfg.latent, info["obs_shape"], info["action_dim"],
                   info["obs_kind"] == "image")

    @classmethod
    def check(cls, cfg) -> None:
        c = cfg.latent
        if c.min_log_std >= c.max_log_std:
            raise ConfigError(f"latent.min_log_std ({c.min_log_std}) must be below "
                              f"latent.max_log_std ({c.max_log_std})")
        if c.simnorm and c.latent % c.simnorm:
            raise ConfigError(f"latent.simnorm={c.simnorm} must divide latent.latent={c.latent}")
        if cfg.run.batch_length < c.rollout + 1:
            raise ConfigError(f"latent.rollout={c.rollout} needs run.batch_length >= "
                              f"{c.rollout + 1} (got {cfg.run.batch_length})")

    # ------------------------------------------------------------------ model pieces
    def encode(self, obs: Tensor, target: bool = False) -> Tensor:
        x = obs.float() / 255.0 - 0.5 if self.image else obs.float()
        return self.norm_latent((self.target_encoder if target else self.encoder)(x))

    def norm_latent(self, z: Tensor) -> Tensor:
        """SimNorm (Hansen et al. 2024): softmax over groups of ``simnorm`` dims; identity at 0."""
        g = self.cfg.simnorm
        if not g:
            return z
        return torch.softmax(z.unflatten(-1, (-1, g)), -1).flatten(-2)

    def predict(self, z: Tensor, a: Tensor) -> tuple[Tensor, Tensor | None]:
        """Mean and log-std (None when deterministic) of z^' given (z, a).  [..., L] x 2"""
        out = self.dynamics(torch.cat([z, a.to(z.dtype)], -1))
        if not self.gaussian:
            return self.norm_latent(out), None
        mean, raw = out.chunk(2, -1)
        c = self.cfg
        return mean, c.min_log_std + (c.max_log_std - c.min_log_std) * torch.sigmoid(raw)

    def next_latent(self, z: Tensor, a: Tensor) -> Tensor:
        """One model step: the mean (deterministic) or a reparameterised sample (eq. 8)."""
        mean, log_std = self.predict(z, a)
        return mean if log_std is None else mean + log_std.exp() * torch.randn_like(mean)

    def reward_of(self, z: Tensor, a: Tensor) -> Tensor:
        """Predicted reward of taking a in z.  [..., L], [..., A] -> [...]"""
        return self.reward(torch.cat([z, a.to(z.dtype)], -1)).squeeze(-1)

    def aux_term(self, mean: Tensor, log_std: Tensor | None, target: Tensor) -> Tensor:
        """Self-prediction loss per latent dim: MSE (eq. 6) or Gaussian NLL (eq. 9).  -> [...]"""
        if log_std is None:
            return (mean - target).pow(2).mean(-1)
        return (0.5 * ((target - mean) * torch.exp(-log_std)).pow(2) + log_std
                + 0.5 * LOG_2PI).mean(-1)

    @staticmethod
    def entropy(log_std: Tensor) -> Tensor:
        """Differential entropy of a diagonal Gaussian (nats).  [..., L] -> [...]"""
        return (log_std + 0.5 * (1.0 + LOG_2PI)).sum(-1)

    # ------------------------------------------------------------------ seam
    def observe(self, batch: dict[str, Tensor], step: int = 0) -> Observed:
        obs, action = batch["obs"], batch["action"].float()
        B, T = action.shape[:2]
        H = self.cfg.rollout
        # the rollout starts from h(o_0), with gradient; later steps only serve as targets
        with torch.no_grad():
            later = self.encode(obs[:, 1:])                           # [B, T-1, L]
            target = self.encode(obs[:, 1:H + 1], target=True)        # [B, H, L]
        z = torch.cat([self.encode(obs[:, :1]), later], 1)            # [B, T, L]
        # valid_j: no episode start in 1..j (the rollout stays inside one episode)
        first = batch["is_first"][:, 1:H + 1].float()
        valid = torch.cumprod(1.0 - first, 1)                         # [B, H]
        zh, preds, means, log_stds, rewards = z[:, 0], [], [], [], []
        for j in range(H):
            a = action[:, j]
            rewards.append(self.reward_of(zh, a))
            mean, log_std = self.predict(zh, a)
            zh = mean if log_std is None else mean + log_std.exp() * torch.randn_like(mean)
            preds.append(zh)
            means.append(mean)
            log_stds.append(log_std)
        pred = torch.stack(preds, 1)                                  # [B, H, L]
        mean = torch.stack(means, 1)
        log_std = torch.stack(log_stds, 1) if self.gaussian else None
        r_hat = torch.stack(rewards, 1)                               # [B, H]
        zeros = z.new_zeros(B, T)
        reward_t, aux_t = zeros.clone(), zeros.clone()
        reward_t[:, 1:H + 1] = valid * (r_hat - batch["reward"][:, 1:H + 1].float()).pow(2)
        aux = valid * self.aux_term(mean, log_std, target)
        aux_t[:, 1:H + 1] = aux
        prior = torch.cat([z[:, :1], pred, z[:, H + 1:]], 1)
        extras = {"valid": valid, "target": target}
        if log_std is not None:
            extras["entropy"] = self.entropy(log_std)                 # [B, H]
        start = LState(z.reshape(B * T, -1))
        return Observed(z, prior, aux_t, {"reward": reward_t, "aux": aux_t}, start, step=step,
                        extras=extras)

    def loss(self, obs: Observed, weights: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        c = self.cfg
        H = c.rollout
        w = obs.terms["reward"].new_ones(obs.terms["reward"].shape) if weights is None else weights
        reward = (w * obs.terms["reward"]).sum(1).mean() / H
        aux = (w * obs.terms["aux"]).sum(1).mean() / H
        metrics = {"wm/reward_loss": reward.detach(), "wm/aux_loss": aux.detach()}
        if "entropy" in obs.extras:                                   # App. C.3, Fig. 5
            v = obs.extras["valid"]
            metrics["wm/model_entropy"] = ((obs.extras["entropy"] * v).sum()
                                           / v.sum().clamp(min=1)).detach()
        if c.model_free:
            return reward * 0.0, metrics
        total = c.reward_scale * reward + (c.aux_scale * aux if c.aux else 0.0)
        return total, metrics

    @torch.no_grad()
    def after_update(self) -> None:
        """Move the target encoder towards the encoder (EMA, Hansen et al. 2022)."""
        tau = self.cfg.target_tau
        for t, p in zip(self.target_encoder.parameters(), self.encoder.parameters(), strict=True):
            t.lerp_(p, tau)

    def param_groups(self, lr: float) -> list[dict]:
        enc = list(self.encoder.parameters())
        rest = list(self.dynamics.parameters()) + list(self.reward.parameters())
        return [{"params": enc, "lr": self.cfg.encoder_lr}, {"params": rest, "lr": lr}]

    def representation_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters()) + list(self.dynamics.parameters())

    def img_step(self, state: LState, action: Tensor) -> LState:
        return LState(self.next_latent(state.z, action))

    def imagine(self, start: LState, policy, horizon: int) -> Imagined:
        """Latent rollout under ``policy``; rewards come from (z_k, a_k), so they are computed
        along the way (index k+1: the reward of arriving at z_{k+1}); no terminations."""
        z = start.z.detach()
        feats, actions, rewards = [z], [], [z.new_zeros(z.shape[0])]
        for _ in range(horizon):
            a = policy(z.detach())
            actions.append(a)
            rewards.append(self.reward_of(z, a))
            z = self.next_latent(z, a)
            feats.append(z)
        actions.append(policy(z.detach()))
        feat = torch.stack(feats, 0)
        return Imagined(feat, torch.stack(actions, 0), torch.stack(rewards, 0),
                        torch.ones(feat.shape[:2], device=feat.device))

    def reward_mean(self, feat: Tensor) -> Tensor:
        raise NotImplementedError("the latent model's reward depends on the action: use "
                                  "reward_of(z, a) or imagine()")

    def cont_prob(self, feat: Tensor) -> Tensor:
        return torch.ones(feat.shape[:-1], device=feat.device)

    def decode(self, feat: Tensor) -> Tensor:
        raise NotImplementedError("the latent backbone has no decoder (TD-MPC)")

    def initial_carry(self, n: int) -> tuple[LState, Tensor]:
        dev = self.reward.out.weight.device
        return LState(torch.zeros(n, self.feat_dim, device=dev)), torch.zeros(n, self.act_dim,
                                                                               device=dev)

    def act_step(self, carry, obs: Tensor, prev_action: Tensor, is_first: Tensor):
        z = self.encode(obs)
        return (LState(z), prev_action), z
