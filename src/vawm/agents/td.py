"""Behaviour learning of the ``latent`` backbone: TD3-style twin critics and a deterministic actor
trained on a mix of real and model-generated transitions (MAD-TD, Voelcker et al. 2025 App. C.1),
acting through MPC (Hansen et al. 2022) or the actor alone.

Per update, after the world model's step (``Agent.train_step``), on the first transition
(o_0, a_0, r_1, o_1) of every replayed sequence:

  critic   rows [0, n_real) keep the real next latent z-bar(o_1) and reward r_1; rows [n_real, B)
           are replaced by the model: a = pi(z_0), z' = f(z_0, a), r = R(z_0, a) (on-policy model
           data; n_real = int(B * proportion_real)). Target y = r + gamma (1 - term) min_i
           Q-bar_i(z', pi(z')) (Fujimoto et al. 2018, no target-policy noise, as MAD-TD); loss
           sum_i mean (Q_i(z_0, a) - y)^2 with z_0 = h(o_0) re-encoded after the model step.
  actor    maximise min_i Q_i(sg z_0, pi(sg z_0)) of the target critic (MAD-TD's code;
           ``actor_critic=online`` uses the online critic).
  encoder  trained by the model losses only. ``encoder_td=true``: the real transitions' TD loss,
           through z_0 = h(o_0) with the critic frozen, joins the world-model loss (MAD-TD's
           ``update_encoder_with_critic_loss``; ``model_losses``). Off by default: with this
           MSE critic (LayerNorm input, so scale-invariant in z) and unnormalised latents, its
           gradient only grows |z| (orthogonal to z), the actor saturates and the critic
           diverges (docs/faithfulness.md gives the runs). MAD-TD bounds z by SimNorm
           (``latent.simnorm``) and uses a binned critic.
  targets  Q-bar <- (1 - tau) Q-bar + tau Q after each critic step.

Critic gradients an objective leaves (the MuZero setting of ``vaml`` trains the value at
predicted latents) are kept and stepped together with the TD loss's.

MPC (``mpc=true``; MAD-TD's ``get_mpc_action``, Hansen et al. 2022's MPPI on the first action):
K Gaussian perturbations of the actor's action plus the action itself, each scored by
sum_{k<H} gamma^k R(z_k, a_k) + gamma^H mean_i Q_i(z_H, pi(z_H)) along a model rollout that
follows the actor after the first step; for ``iterations`` rounds the mean and std are refit to
the softmax(values / temperature)-weighted top ``elites`` (std clipped to [min_std, max_std]);
the executed action is one elite drawn by those weights. Batched over envs and candidates.
"""

from __future__ import annotations

import copy
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vawm.nets.layers import MLP, make_act
from vawm.nets.optim import Optim, OptimConfig
from vawm.settings import Min, Range, section
from vawm.worldmodels.base import Backbone, Observed

Pos = Annotated[int, Min(1)]


@section("td")
class TDConfig:
    """TD3 critics + deterministic actor with MAD-TD data mixing and MPC (Voelcker et al. 2025,
    Table 2; learning rates, eps and clip: optim.actor_lr / critic_lr / ac_eps / ac_clip)."""
    units: Pos = 512
    layers: Pos = 2             # hidden layers of critic and actor MLPs
    act: Literal["elu", "silu", "relu"] = "elu"
    gamma: Annotated[float, Range(0, 1)] = 0.99
    tau: Annotated[float, Range(0, 1)] = 0.01   # target critic EMA rate (MAD-TD's tau 0.99 kept)
    proportion_real: Annotated[float, Range(0, 1)] = 0.9   # Table 2 (§7's text: half; see docs)
    actor_critic: Literal["target", "online"] = "target"
    encoder_td: bool = False    # the real TD loss trains the encoder, critic frozen (MAD-TD)
    encoder_td_scale: Annotated[float, Min(0)] = 1.0   # its weight (MAD-TD: 1)
    expl_noise: Annotated[float, Min(0)] = 0.1   # Gaussian acting noise without MPC (MAD-TD)
    mpc: bool = True
    mpc_samples: Pos = 512
    mpc_iterations: Pos = 6
    mpc_elites: Pos = 64
    mpc_temperature: Annotated[float, Min(0, strict=True)] = 0.5
    mpc_horizon: Pos = 1
    mpc_std: Annotated[float, Min(0)] = 0.3      # initial std around the actor's action
    mpc_min_std: Annotated[float, Min(0)] = 0.05
    mpc_max_std: Annotated[float, Min(0)] = 0.3
    mpc_value: Literal["mean", "min"] = "mean"   # how the twin critics score a candidate


class TwinQ(nn.Module):
    """Two Q-functions Q_i(z, a) evaluated as one batched network (stacked weights, bmm).

    TD-MPC's Q: Linear -> LayerNorm -> Tanh, then ``layers - 1`` x (Linear -> act), Linear -> 1
    (zero-initialised output). Returns [2, ...].
    """

    def __init__(self, din: int, units: int, layers: int, act: str, heads: int = 2):
        super().__init__()
        dims = [din] + [units] * layers + [1]
        self.w = nn.ParameterList()
        self.b = nn.ParameterList()
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            w = torch.empty(heads, a, b)
            for h in range(heads):          # nn.Linear's default init, per head
                lin = nn.Linear(a, b)
                w[h] = lin.weight.detach().T
            bias = torch.zeros(heads, 1, b)
            if i == len(dims) - 2:
                w.zero_()
            self.w.append(nn.Parameter(w))
            self.b.append(nn.Parameter(bias))
        self.ln_w = nn.Parameter(torch.ones(heads, 1, units))     # a LayerNorm per head
        self.ln_b = nn.Parameter(torch.zeros(heads, 1, units))
        self.act = make_act(act)

    def forward(self, z: Tensor, a: Tensor, params: dict | None = None) -> Tensor:
        x = torch.cat([z, a.to(z.dtype)], -1)
        lead = x.shape[:-1]
        x = x.reshape(1, -1, x.shape[-1]).expand(len(self.w[0]), -1, -1)
        n = len(self.w)
        for i in range(n):
            x = torch.baddbmm(self.b[i], x, self.w[i])
            if i == 0:
                x = torch.tanh(F.layer_norm(x, x.shape[-1:]) * self.ln_w + self.ln_b)
            elif i < n - 1:
                x = self.act(x)
        return x.squeeze(-1).reshape(-1, *lead)


class DeterministicPolicy:
    """pi(z) with Gaussian exploration noise, clipped to the action box; the interface of the
    imagination policies (``sample``/``rsample``/``mode``/``entropy``)."""

    def __init__(self, mean: Tensor, std: float):
        self.mean, self.std = mean, std

    def sample(self) -> Tensor:
        return (self.mean + self.std * torch.randn_like(self.mean)).clamp(-1, 1)

    def rsample(self) -> Tensor:
        return self.sample()

    def mode(self) -> Tensor:
        return self.mean

    def entropy(self) -> Tensor:
        return torch.zeros(self.mean.shape[:-1], device=self.mean.device)


class TDLearner(nn.Module):
    """Twin critics + deterministic actor of the ``latent`` backbone (see module docstring)."""

    def __init__(self, feat_dim: int, act_dim: int, discrete: bool, cfg: TDConfig,
                 ocfg: OptimConfig):
        super().__init__()
        if discrete:
            raise ValueError("the td behaviour learner needs continuous actions")
        self.cfg, self.act_dim = cfg, act_dim
        self.critic = TwinQ(feat_dim + act_dim, cfg.units, cfg.layers, cfg.act)
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor = MLP(feat_dim, act_dim, cfg.layers, cfg.units, "none", cfg.act)
        self.actor_opt = Optim(list(self.actor.parameters()), ocfg.kind, ocfg.actor_lr,
                               ocfg.ac_eps, ocfg.ac_clip, weight_decay=ocfg.weight_decay)
        self.critic_opt = Optim(list(self.critic.parameters()), ocfg.kind, ocfg.critic_lr,
                                ocfg.ac_eps, ocfg.ac_clip, weight_decay=ocfg.weight_decay)
        self.repval_grad = False

    # ------------------------------------------------------------------ views
    def pi(self, z: Tensor) -> Tensor:
        return torch.tanh(self.actor(z))

    def policy(self, feat: Tensor) -> DeterministicPolicy:
        return DeterministicPolicy(self.pi(feat), self.cfg.expl_noise)

    def q(self, z: Tensor, a: Tensor, slow: bool = False) -> Tensor:
        """Both critics' values [2, ...]."""
        return (self.slow_critic if slow else self.critic)(z, a)

    def value(self, feat: Tensor, slow: bool = False) -> Tensor:
        """V(z) = min_i Q_i(z, pi(z)) (the actor reads a stop-gradient state)."""
        return self.q(feat, self.pi(feat.detach()), slow).min(0).values

    # ------------------------------------------------------------------ learning
    def _frozen_q(self, z: Tensor, a: Tensor) -> Tensor:
        params = {k: v.detach() for k, v in self.critic.named_parameters()}
        return torch.func.functional_call(self.critic, params, (z, a))

    def td_target(self, z1: Tensor, reward: Tensor, live: Tensor) -> Tensor:
        with torch.no_grad():
            return reward + self.cfg.gamma * live * self.value(z1, slow=True)

    def model_losses(self, wm: Backbone, obs: Observed, batch: dict[str, Tensor]
                     ) -> dict[str, Tensor]:
        """The real transitions' TD loss through the encoder, critic frozen (joins the world-
        model loss)."""
        if not self.cfg.encoder_td:
            return {}
        z1 = obs.extras["target"][:, 0]                               # z-bar(o_1), no gradient
        y = self.td_target(z1, batch["reward"][:, 1].float(), self._live(batch))
        q = self._frozen_q(obs.post[:, 0], batch["action"][:, 0])
        valid = 1.0 - batch["is_first"][:, 1].float()
        return {"encoder_td": self.cfg.encoder_td_scale * ((q - y).pow(2) * valid).mean(-1).sum()}

    @staticmethod
    def _live(batch: dict[str, Tensor]) -> Tensor:
        return 1.0 - batch["is_terminal"][:, 1].float()

    def mixed_batch(self, wm: Backbone, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The critic's batch (see module docstring): z0, action, reward, z1, live, valid, and
        ``model`` (1 on rows from the model)."""
        obs, B = batch["obs"], batch["action"].shape[0]
        n_real = B if wm.model_free else int(B * self.cfg.proportion_real)
        with torch.no_grad():
            z0 = wm.encode(obs[:, 0])
            z1 = wm.encode(obs[:n_real, 1], target=True)
            action, reward = batch["action"][:, 0].float(), batch["reward"][:, 1].float()
            live, valid = self._live(batch), 1.0 - batch["is_first"][:, 1].float()
            model = torch.zeros(B, device=z0.device)
            if n_real < B:
                zm = z0[n_real:]
                am = self.pi(zm)
                z1 = torch.cat([z1, wm.next_latent(zm, am)], 0)
                action = torch.cat([action[:n_real], am], 0)
                reward = torch.cat([reward[:n_real], wm.reward_of(zm, am)], 0)
                live = torch.cat([live[:n_real], torch.ones(B - n_real, device=z0.device)])
                valid = torch.cat([valid[:n_real], torch.ones(B - n_real, device=z0.device)])
                model[n_real:] = 1.0
        return {"z0": z0, "action": action, "reward": reward, "z1": z1, "live": live,
                "valid": valid, "model": model}

    def train_step(self, wm: Backbone, obs: Observed, batch: dict[str, Tensor], amp
                   ) -> dict[str, Tensor]:
        cfg = self.cfg
        with amp():
            mb = self.mixed_batch(wm, batch)
            y = self.td_target(mb["z1"], mb["reward"], mb["live"])
            q = self.critic(mb["z0"], mb["action"])                    # [2, B]
            critic_loss = ((q - y).pow(2) * mb["valid"]).mean(-1).sum()
        critic_loss.backward()                  # adds to an objective's critic gradients
        critic_gn = self.critic_opt.step()
        self.critic_opt.zero_grad()
        with torch.no_grad():
            for t, p in zip(self.slow_critic.parameters(), self.critic.parameters(), strict=True):
                t.lerp_(p, cfg.tau)
        with amp():
            z = mb["z0"]
            a = self.pi(z)
            q_pi = self.q(z, a, slow=cfg.actor_critic == "target").min(0).values
            actor_loss = -q_pi.mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        actor_gn = self.actor_opt.step()
        self.actor_opt.zero_grad()
        self.critic_opt.zero_grad()
        return {"agent/critic_loss": critic_loss.detach(), "agent/actor_loss": actor_loss.detach(),
                "agent/value": q.mean().detach(), "agent/target": y.mean().detach(),
                "agent/actor_gradnorm": actor_gn, "agent/critic_gradnorm": critic_gn,
                "agent/model_rows": mb["model"].mean()}

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, wm: Backbone, feat: Tensor, mode: bool = False) -> Tensor:
        if self.cfg.mpc and not wm.model_free:
            return self.plan(wm, feat)
        pol = self.policy(feat)
        return pol.mode() if mode else pol.sample()

    @torch.no_grad()
    def plan(self, wm: Backbone, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """MPC action for latents z [N, L] -> [N, A] (see module docstring)."""
        cfg = self.cfg
        N, K, E = z.shape[0], cfg.mpc_samples, min(cfg.mpc_elites, cfg.mpc_samples + 1)
        a_pi = self.pi(z)                                             # [N, A]
        mean, std = a_pi, torch.full_like(a_pi, cfg.mpc_std)
        zc = z.unsqueeze(1).expand(N, K + 1, z.shape[-1])             # [N, K+1, L]
        for _ in range(cfg.mpc_iterations):
            noise = torch.randn(N, K, self.act_dim, device=z.device, generator=generator)
            cand = torch.cat([a_pi.unsqueeze(1), mean.unsqueeze(1) + std.unsqueeze(1) * noise],
                             1).clamp(-1, 1)                          # [N, K+1, A]
            value = self.score(wm, zc, cand)                          # [N, K+1]
            ev, ei = value.topk(E, dim=1)                             # [N, E]
            w = torch.softmax(ev / cfg.mpc_temperature, 1).unsqueeze(-1)
            elites = cand.gather(1, ei.unsqueeze(-1).expand(N, E, self.act_dim))
            mean = (w * elites).sum(1)
            std = ((w * (elites - mean.unsqueeze(1)).pow(2)).sum(1)).sqrt().clamp(
                cfg.mpc_min_std, cfg.mpc_max_std)
        pick = torch.multinomial(w.squeeze(-1), 1, generator=generator)   # [N, 1]
        return elites.gather(1, pick.unsqueeze(-1).expand(N, 1, self.act_dim)).squeeze(1)

    def score(self, wm: Backbone, z: Tensor, a: Tensor) -> Tensor:
        """Model return of first actions a from z, following the actor afterwards.  [..., L],
        [..., A] -> [...]"""
        cfg = self.cfg
        ret = torch.zeros(a.shape[:-1], device=a.device)
        for k in range(cfg.mpc_horizon):
            ret = ret + cfg.gamma ** k * wm.reward_of(z, a)
            z = wm.next_latent(z, a)
            a = self.pi(z)
        q = self.q(z, a)
        q = q.mean(0) if cfg.mpc_value == "mean" else q.min(0).values
        return ret + cfg.gamma ** cfg.mpc_horizon * q


__all__ = ["TDConfig", "TDLearner", "TwinQ", "DeterministicPolicy"]
