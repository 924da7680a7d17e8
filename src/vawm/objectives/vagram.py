"""Value-gradient weighted model loss, ``vagram`` (Voelcker et al. 2022, VaGraM; the value-aware
baseline of VaR, anon. 2025, Fig. 2).

The model's prediction error is weighted per dimension by the critic's value gradient at the real
next state (the diagonal "scaling" form the VaGraM code trains with):

    L = mean_{b,t} sum_d (g_d (x^_d - sg(x_d)))^2,   g = grad_x V(x) at x = sg(x_real)

with the stabilisers of its public code: rows whose gradient norm exceeds the batch's 0.95
quantile are scaled down to it, and g is divided by a running mean of its norm (EMA 0.999, from 1).

What "prediction" and "state" are, per backbone (both are the backbone's feature vectors, so the
same critic reads them):
  * rssm / tssm / vae-lstm: x^ = the prior feature at step t (the dynamics' prediction of z_t from
    the past, straight-through sample; h_t is shared, so only the latent columns differ) and x =
    the posterior feature (the encoded real observation). The gradient reaches the prior (dynamics)
    and, through h_t, the sequence model and the earlier steps' posterior samples that fed it; the
    posterior at t is a fixed target.
  * latent: x^ = the model's prediction of z_j (j = 1..rollout) and x = the encoder's latent of the
    real o_j; the other steps have x^ = x and add nothing.
V is the behaviour learner's value of a feature (``agent.value``: the critic's mean for the
imagination learner, min of the twin Q at pi(x) for the TD learner); the critic gets no gradient.
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor

from vawm.objectives.base import Context, Contribution, Objective, register_objective
from vawm.settings import Min, Range, section
from vawm.worldmodels.base import Observed


@section("vagram")
class VagramConfig:
    """VaGraM (Voelcker et al. 2022): diagonal value-gradient weighting of the model error."""
    scale: Annotated[float, Min(0)] = 1.0       # weight of L in the world-model loss
    quantile: Annotated[float, Range(0, 1)] = 0.95   # clip gradient norms at this batch quantile
    norm_decay: Annotated[float, Range(0, 1, hi_open=True)] = 0.999   # EMA of the mean norm


def value_gradient(value_fn, x: Tensor) -> Tensor:
    """grad_x V(x) for every row of x, V summed over rows (rows are independent).  [..., F]"""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(value_fn(x).sum(), x)
    return g


def clip_to_quantile(g: Tensor, q: float) -> tuple[Tensor, Tensor]:
    """Scale rows of g whose norm exceeds the q-quantile of the batch's norms down to it; returns
    (clipped g, the rows' norms before clipping).  [N, F]"""
    norms = g.norm(dim=-1, keepdim=True)
    if q >= 1.0:
        return g, norms
    bound = torch.quantile(norms.squeeze(-1).float(), q).to(g.dtype)
    return torch.where(norms <= bound, g, g * (bound / norms.clamp(min=1e-12))), norms


def vagram_loss(pred: Tensor, target: Tensor, g: Tensor) -> Tensor:
    """mean over rows of sum_d (g_d (pred_d - target_d))^2.  [N, F] x 3 -> scalar"""
    return (g * (pred - target.detach())).pow(2).sum(-1).mean()


@register_objective("vagram")
class Vagram(Objective):
    Config = VagramConfig

    @classmethod
    def from_config(cls, cfg, backbone) -> Vagram:
        return cls(cfg.vagram)

    def __init__(self, cfg: VagramConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("norm_avg", torch.ones(()))    # running mean norm (the code's 1.)

    def contribute(self, obs: Observed, ctx: Context) -> Contribution:
        # obs.post, obs.prior: [B, T, F]
        pred, target = obs.prior.flatten(0, 1), obs.post.flatten(0, 1).detach()
        g = value_gradient(ctx.agent.value, target)
        g, norms = clip_to_quantile(g, self.cfg.quantile)
        with torch.no_grad():
            m = norms.mean()
            self.norm_avg.lerp_(m, 1 - self.cfg.norm_decay)
        g = (g / self.norm_avg).detach()
        loss = vagram_loss(pred, target, g)
        return Contribution(losses={"weighted": self.cfg.scale * loss},
                            metrics={"vagram/loss": loss.detach(), "vagram/grad_norm": m.detach(),
                                     "vagram/norm_avg": self.norm_avg.clone()})


__all__ = ["Vagram", "VagramConfig", "value_gradient", "clip_to_quantile", "vagram_loss"]
