"""Dream critic, ``dream-critic`` (anon. 2026, §3.2, §4.1–4.2).

A latent critic V_phi whose TD loss is added to the world-model loss, so that its gradient
shapes the encoder and the dynamics. §3.2: imagined trajectories are generated from encoded
states, the critic evaluates every imagined state, and the gap to targets from *actual*
experience trains it (and, through the imagined states, the dynamics). With ``loss=dream`` (the
default) the world model rolls H steps along the *replayed* actions from every encoded state s_t:

    s^_{t,0} = s_t,   s^_{t,k+1} = f(s^_{t,k}, a_{t+k})                 (the dynamics, with gradient)
    y_{t+k}  = r_{t+k+1} + gamma (1 - term_{t+k+1}) sg(V_phi(s_{t+k+1}))   (real reward, real next state)
    L_critic = mean over valid (t, k), k = 0..H, of (V_phi(s^_{t,k}) - y_{t+k})^2
    L_dream  = L_base + lambda L_critic,   lambda = 0.5

(k = 0 is the plain TD error on the posterior state; a pair is valid while t+k+1 lies in the
replayed chunk and in s_t's episode). ``loss=posterior`` keeps only k = 0 (the TD loss on real
posterior features: no gradient reaches the prior/dynamics).

V_phi's parameters are returned by :meth:`DreamCritic.wm_parameters`, so they train with the world
model's optimiser; it is a separate network from the actor-critic's critic.

Indexing: our replay stores with step t the reward r_t received on *arriving* at o_t, so the
reward of z_t -> z_{t+1} is ``reward[:, t+1]``; no transition crosses an episode start, and a
terminal z_{t+1} is not bootstrapped. Readings and switches (input features, semi-gradient
target, the imagined-rollout diagnostics): docs/faithfulness.md.

Logged every update: ``dream_critic/loss`` (L_critic), ``dream_critic/value`` (mean V_phi on the
replayed states) and, through the loop, ``dream_critic/weighted`` (lambda L_critic).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from torch import Tensor, nn

from vawm.agents.actor_critic import lambda_returns
from vawm.nets.layers import MLP
from vawm.objectives.base import Context, Contribution, Objective, register_objective
from vawm.settings import Min, Range, section
from vawm.state import tree_map
from vawm.worldmodels.base import Observed


@section("dream_critic")
class DreamCriticConfig:
    """Dream critic (anon. 2026, §3.2, §4.1)."""
    scale: Annotated[float, Min(0)] = 0.5     # lambda in L_dream = L_base + lambda L_critic
    gamma: Annotated[float, Range(0, 1, lo_open=True)] = 0.99
    units: Annotated[int, Min(1)] = 64        # 2-layer MLP of 64 units, ReLU (anon. 2026, §4.1)
    layers: Annotated[int, Min(0)] = 2
    act: Literal["silu", "elu", "relu", "tanh", "gelu"] = "relu"
    norm: Literal["layer", "rms", "none"] = "none"
    target: Literal["sg", "full"] = "sg"      # sg: semi-gradient TD | full: residual gradient
    features: Literal["post", "latent"] = "post"  # post: V_phi on the posterior feature | z_t only
    loss: Literal["dream", "posterior"] = "dream"  # dream: TD on rollouts along replayed actions
    starts: Annotated[int, Min(0)] = 0        # loss=dream: start states per update (0 = all B*T)
    imagine: bool = True        # evaluate policy rollouts with V_phi (diagnostics, no gradient)
    horizon: Annotated[int, Min(0)] = 15      # H of the rollouts (anon. 2026, §4.2)
    imag_starts: Annotated[int, Min(0)] = 64  # posterior start states per rollout (0 = all B*T)
    imag_every: Annotated[int, Min(1)] = 1    # rollout every k world-model updates


# ---------------------------------------------------------------------------- pure math
def td_errors(value: Tensor, reward: Tensor, is_first: Tensor, is_terminal: Tensor, gamma: float,
              stop_grad: bool = True) -> tuple[Tensor, Tensor]:
    """One-step TD errors along replayed sequences and the mask of real transitions.

    value, reward, is_first, is_terminal: [B, T] (reward[t]: received on arriving at step t).
    Returns delta [B, T-1] = r_{t+1} + gamma (1 - term_{t+1}) V_{t+1} - V_t and mask [B, T-1]
    (0 where is_first[t+1]: no transition crosses an episode start).
    """
    nxt = value[:, 1:].detach() if stop_grad else value[:, 1:]
    cont = 1.0 - is_terminal[:, 1:].to(value.dtype)
    target = reward[:, 1:].to(value.dtype) + gamma * cont * nxt
    if stop_grad:
        target = target.detach()
    delta = target - value[:, :-1]
    mask = (~is_first[:, 1:].bool()).to(value.dtype)
    return delta, mask


def dream_targets(value: Tensor, reward: Tensor, is_first: Tensor, is_terminal: Tensor,
                  gamma: float, horizon: int) -> tuple[Tensor, Tensor]:
    """TD targets from actual experience for the states imagined k = 0..H steps after each start.

    value (V_phi at the real posterior states), reward, is_first, is_terminal: [B, T]. Returns
    target [H+1, B, T] with target[k, b, t] = r_{j+1} + gamma (1 - term_{j+1}) V_{j+1}, j = t+k,
    and mask [H+1, B, T]: 1 where j+1 < T and no episode starts in (t, j+1].
    """
    B, T = value.shape
    dev = value.device
    j1 = torch.arange(T, device=dev)[None] + torch.arange(horizon + 1, device=dev)[:, None] + 1
    inside = j1 < T                                                     # [H+1, T]
    j1 = j1.clamp(max=T - 1)
    seg = torch.cumsum(is_first.long(), 1)                              # [B, T] episode index
    same = seg[:, j1] == seg[:, None, :]                                # [B, H+1, T]
    cont = 1.0 - is_terminal.to(value.dtype)
    target = reward.to(value.dtype)[:, j1] + gamma * cont[:, j1] * value[:, j1]   # [B, H+1, T]
    mask = (same & inside[None]).to(value.dtype)
    return target.transpose(0, 1), mask.transpose(0, 1)


def td_loss(value: Tensor, reward: Tensor, is_first: Tensor, is_terminal: Tensor, gamma: float,
            stop_grad: bool = True) -> Tensor:
    """L_critic = mean over real transitions of (V(z_t) - (r_{t+1} + gamma V(z_{t+1})))^2."""
    delta, mask = td_errors(value, reward, is_first, is_terminal, gamma, stop_grad)
    return (mask * delta.pow(2)).sum() / mask.sum().clamp(min=1.0)


# ---------------------------------------------------------------------------- the objective
@register_objective("dream-critic")
class DreamCritic(Objective):
    """anon. 2026's dream critic: a latent TD critic whose loss trains the world model too."""

    Config = DreamCriticConfig

    @classmethod
    def from_config(cls, cfg, backbone) -> DreamCritic:
        return cls(cfg.dream_critic, backbone.feat_dim, backbone.latent_slice)

    def __init__(self, cfg: DreamCriticConfig, feat_dim: int, latent_slice: slice | None = None):
        super().__init__()
        self.cfg = cfg
        whole = slice(0, feat_dim)
        self.select = (latent_slice or whole) if cfg.features == "latent" else whole
        din = len(range(feat_dim)[self.select])
        self.net = MLP(din, 1, cfg.layers, cfg.units, cfg.norm, cfg.act)

    def wm_parameters(self) -> list[nn.Parameter]:
        return list(self.net.parameters())

    def value(self, feat: Tensor) -> Tensor:
        return self.net(feat[..., self.select]).squeeze(-1)             # [..., F] -> [...]

    def contribute(self, obs: Observed, ctx: Context) -> Contribution:
        c, b = self.cfg, ctx.batch
        v = self.value(obs.post)                                        # [B, T]
        metrics = {"dream_critic/value": v.detach().mean()}
        if c.loss == "dream" and c.horizon > 0:
            loss, metrics["dream_critic/loss_real"] = self.dream_loss(obs, ctx, v)
        else:
            loss = td_loss(v, b["reward"], b["is_first"], b["is_terminal"], c.gamma,
                           stop_grad=c.target == "sg")
        metrics["dream_critic/loss"] = loss.detach()
        if c.imagine and c.horizon > 0 and ctx.update % max(1, c.imag_every) == 0:
            metrics.update(self.evaluate_dreams(obs, ctx))
        return Contribution(losses={"weighted": c.scale * loss}, metrics=metrics)

    def dream_loss(self, obs: Observed, ctx: Context, v_post: Tensor) -> tuple[Tensor, Tensor]:
        """L_critic over rollouts of H steps along the replayed actions (module docstring);
        also returns its k = 0 part (the TD error on the real posterior states)."""
        c, b = self.cfg, ctx.batch
        B, T = v_post.shape
        H = c.horizon
        target, mask = dream_targets(v_post if c.target == "full" else v_post.detach(),
                                     b["reward"], b["is_first"].bool(), b["is_terminal"], c.gamma,
                                     H)                                 # [H+1, B, T]
        idx = torch.arange(B * T, device=v_post.device)
        if c.starts and c.starts < B * T:
            idx = torch.randperm(B * T, device=v_post.device)[: c.starts]
        t = idx % T
        steps = (t[None] + torch.arange(H, device=idx.device)[:, None]).clamp(max=T - 1)
        actions = b["action"].float()[idx // T][torch.arange(len(idx)), steps]   # [H, N, A]
        start = tree_map(lambda x: x[idx], obs.start)
        feat = ctx.backbone.rollout(start, actions)                     # [H+1, N, F]
        v_img = self.value(feat)                                        # [H+1, N]
        target, mask = target.flatten(1)[:, idx], mask.flatten(1)[:, idx]
        err = mask * (v_img - target).pow(2)
        loss = err.sum() / mask.sum().clamp(min=1.0)
        real = (err[0].sum() / mask[0].sum().clamp(min=1.0)).detach()
        return loss, real

    @torch.no_grad()
    def evaluate_dreams(self, obs: Observed, ctx: Context) -> dict[str, Tensor]:
        """Roll the world model out H steps from posterior states and score the dream with V_phi."""
        c = self.cfg
        n_all = obs.post.shape[0] * obs.post.shape[1]
        start = obs.start
        if c.imag_starts and c.imag_starts < n_all:
            idx = torch.randperm(n_all, device=obs.post.device)[: c.imag_starts]
            start = tree_map(lambda t: t[idx], start)
        imag = ctx.backbone.imagine(start, lambda f: ctx.agent.policy(f).sample(), c.horizon)
        v = self.value(imag.feat)                                       # [H+1, N]
        cont = imag.cont                                                # [H+1, N]
        alive = torch.cumprod(torch.cat([torch.ones_like(cont[:1]), cont[1:-1]], 0), 0)  # [H, N]
        delta = imag.reward[1:] + c.gamma * cont[1:] * v[1:] - v[:-1]  # [H, N]
        ret = lambda_returns(imag.reward, cont, v, c.gamma, 1.0)[0]    # H-step return, [N]
        return {"dream_critic/imag_value": v.mean(),
                "dream_critic/imag_td": (alive * delta.pow(2)).sum() / alive.sum().clamp(min=1e-8),
                "dream_critic/imag_gap": (ret - v[0]).abs().mean()}
