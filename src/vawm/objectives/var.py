"""Value-alignment regularisation, ``var`` (VaR, anon. 2025, §4.2, eq. 2–5).

The critic's value distribution V(v | s) (a 255-bin symlog twohot categorical) is evaluated at the
posterior state s_t = (h_t, z_t ~ q) and at the prior state s~_t = (h_t, z~_t ~ p), and the two
are pulled together with a KL in the dyn/rep split of the world model's own KL loss:

    L_var  = beta_dyn KL[sg(V(s_t)) || V(s~_t)] + beta_rep KL[V(s_t) || sg(V(s~_t))]       (eq. 4)
    beta_var = 1 / max(1, sg(KL[q(z_t | h_t, o_t) || p(z_t | h_t)]))                    (eq. 5)
    L_world += 1[update >= warmup] * beta_var * L_var,   averaged over (b, t)            (eq. 2)

The critic's parameters get no gradient from L_var (it is called through
``torch.func.functional_call`` with detached parameters); during warm-up the term is evaluated
without gradient and logged only. Readings and switches: docs/faithfulness.md.

Both critic evaluations run as one batched call on [2B, T, F], and eq. 4's two terms as one
fused KL with analytic gradients (:func:`value_alignment`; :func:`value_kl_split` is the plain
autograd reference the tests compare it with).

Logged every update: ``var/loss`` (L_var of eq. 4, mean over samples, before beta_var),
``var/kl_dyn`` (the value KL KL[V(s_t) || V(s~_t)], mean; the dyn and rep terms share this
value), ``var/beta`` (mean beta_var), ``var/active`` (0 during warm-up, 1 after) and, through the
loop, ``var/weighted`` (the scalar added to the world-model loss). The backbone's own L_dyn is
``wm/loss_dyn``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from torch import Tensor
from torch.func import functional_call

from vawm.objectives.base import Context, Contribution, Objective, register_objective
from vawm.settings import ConfigError, Min, section
from vawm.worldmodels.base import Observed

DIRECTIONS = ("post_prior", "prior_post")
NonNeg = Annotated[float, Min(0)]


@section("var")
class VarConfig:
    """Value-alignment regularisation (VaR, anon. 2025, eq. 2-5)."""
    scale: NonNeg = 1.0         # extra factor on beta_var * L_var (1 in VaR (anon. 2025))
    warmup: Annotated[int, Min(0)] = 10_000   # world-model updates with L_var off (eq. 2: 1e4)
    weight: Literal["adaptive", "static"] = "adaptive"   # adaptive: 1/max(1, sg(KL)) (eq. 5)
    static_beta: NonNeg = 0.5   # Table 3 ablation: 0.5; App. D "large" weight: 50
    per_sample: bool = True     # eq. 5 per (batch, time) sample; False: 1/max(1, batch-mean KL)
    kl_floor: Annotated[float, Min(0, strict=True)] = 1.0   # the 1 in max(1, KL) of eq. 5
    # eq. 4 reuses eq. 3's beta_dyn / beta_rep: None takes the backbone's (rssm/tssm ``beta_dyn``,
    # ``beta_rep``; 0.5 / 0.1, DreamerV3 2023's, for a backbone without them)
    beta_dyn: NonNeg | None = None   # dyn side: KL[sg(V(s)) || V(s~)], trains the prior state
    beta_rep: NonNeg | None = None   # rep side: KL[V(s) || sg(V(s~))], trains the posterior state
    direction: Literal["post_prior", "prior_post"] = "post_prior"  # eq. 4 | swapped arguments
    critic: Literal["critic", "slow"] = "critic"   # V_theta of eq. 4: online (VaR, anon. 2025) | EMA critic
    # the two critic passes under run.precision=bf16: fp32 (ours: eq. 4 is a KL between two nearly
    # equal value distributions, which bf16-rounded logits blur) | autocast (bf16 like the update)
    precision: Literal["fp32", "autocast"] = "fp32"


# ---------------------------------------------------------------------------- pure math
def value_kl(ref_logits: Tensor, other_logits: Tensor) -> Tensor:
    """KL[P || Q] of categoricals from raw logits [..., K] (P: ``ref_logits``) -> [...]."""
    logp = torch.log_softmax(ref_logits, -1)
    logq = torch.log_softmax(other_logits, -1)
    return (logp.exp() * (logp - logq)).sum(-1)


def value_kl_split(post_logits: Tensor, prior_logits: Tensor, direction: str = "post_prior"
                   ) -> tuple[Tensor, Tensor]:
    """The two terms of eq. 4 per sample: (dyn, rep), each [...] from value logits [..., K].

    dyn = KL[sg(V(s)) || V(s~)]  -- gradient reaches the prior side only
    rep = KL[V(s) || sg(V(s~))]  -- gradient reaches the posterior side only
    Both have the same value. ``direction=prior_post`` computes KL[V(s~) || V(s)] instead.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; valid: {', '.join(DIRECTIONS)}")
    lp, lq = torch.log_softmax(post_logits, -1), torch.log_softmax(prior_logits, -1)  # once each
    lp_sg, lq_sg = lp.detach(), lq.detach()
    if direction == "post_prior":                                   # KL[P || Q]
        p, p_sg = lp.exp(), lp_sg.exp()
        return (p_sg * (lp_sg - lq)).sum(-1), (p * (lp - lq_sg)).sum(-1)
    q, q_sg = lq.exp(), lq_sg.exp()                                 # KL[Q || P]
    return (q * (lq - lp_sg)).sum(-1), (q_sg * (lq_sg - lp)).sum(-1)


class _SplitKL(torch.autograd.Function):
    """(s_ref + s_other) KL[R || O] with the gradient of the KL scaled by s_ref on the ``ref``
    logits and by s_other on the ``other`` logits: eq. 4's two terms in one pass. Analytic
    gradients (R, O the softmaxes, d = log R - log O, kl = sum R d):
    dKL/d ref = R (d - kl),  dKL/d other = O - R."""

    @staticmethod
    def forward(ctx, ref: Tensor, other: Tensor, s_ref: float, s_other: float):
        lr, lo = torch.log_softmax(ref, -1), torch.log_softmax(other, -1)
        r, d = lr.exp(), lr - lo
        kl = (r * d).sum(-1)
        ctx.save_for_backward(r, lo, d, kl)
        ctx.s_ref, ctx.s_other = s_ref, s_other
        ctx.mark_non_differentiable(kl)
        return (s_ref + s_other) * kl, kl

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: Tensor, _g_kl: Tensor):
        r, lo, d, kl = ctx.saved_tensors
        g = g.unsqueeze(-1)
        g_ref = (g * ctx.s_ref) * r * (d - kl.unsqueeze(-1)) if ctx.needs_input_grad[0] else None
        g_other = (g * ctx.s_other) * (lo.exp() - r) if ctx.needs_input_grad[1] else None
        return g_ref, g_other, None, None


def value_alignment(post_logits: Tensor, prior_logits: Tensor, beta_dyn: float, beta_rep: float,
                    direction: str = "post_prior") -> tuple[Tensor, Tensor]:
    """L_var of eq. 4 per sample and the value KL, [...] each, from value logits [..., K].

    Same value and gradients as ``beta_dyn * dyn + beta_rep * rep`` of :func:`value_kl_split`
    (the readable reference), in one fused pass: about half the elementwise work.
    """
    if direction == "post_prior":                   # ref = posterior: its gradient is the rep side
        return _SplitKL.apply(post_logits, prior_logits, beta_rep, beta_dyn)
    if direction == "prior_post":                   # ref = prior: its gradient is the dyn side
        return _SplitKL.apply(prior_logits, post_logits, beta_dyn, beta_rep)
    raise ValueError(f"unknown direction {direction!r}; valid: {', '.join(DIRECTIONS)}")


def adaptive_beta(kl: Tensor, per_sample: bool = True, floor: float = 1.0) -> Tensor:
    """beta_var = 1 / max(floor, sg(KL)) (eq. 5); kl [B, T] -> [B, T] (per sample) or [] (batch)."""
    kl = kl.detach()
    if not per_sample:
        kl = kl.mean()
    return 1.0 / kl.clamp(min=floor)


# ---------------------------------------------------------------------------- the objective
@register_objective("var")
class ValueAlignment(Objective):
    """VaR (anon. 2025)'s value-alignment regulariser on any backbone that exposes post/prior features."""

    Config = VarConfig
    graph_safe = True

    def __init__(self, cfg: VarConfig, backbone_betas: tuple[float, float] = (0.5, 0.1)):
        super().__init__()
        self.cfg = cfg
        self.beta_dyn = backbone_betas[0] if cfg.beta_dyn is None else cfg.beta_dyn
        self.beta_rep = backbone_betas[1] if cfg.beta_rep is None else cfg.beta_rep

    @classmethod
    def check(cls, cfg) -> None:
        if cfg.agent.critic_dist != "twohot":
            raise ConfigError("--objective var aligns the critic's twohot value distributions; it "
                              "needs agent.critic_dist=twohot (DreamerV3's critic), not "
                              f"{cfg.agent.critic_dist!r} (DreamerV2's MSE critic)")

    @classmethod
    def from_config(cls, cfg, backbone) -> ValueAlignment:
        from vawm.worldmodels import BACKBONES
        wm = getattr(cfg, BACKBONES[cfg.backbone].config_key, None)
        betas = (getattr(wm, "beta_dyn", 0.5), getattr(wm, "beta_rep", 0.1))
        return cls(cfg.var, betas)

    def value_logits(self, critic: torch.nn.Module, post: Tensor, prior: Tensor
                     ) -> tuple[Tensor, Tensor]:
        """Critic logits at s_t and s~_t in one call through the frozen critic: [B, T, K] each.

        With ``var.precision=fp32`` the call runs outside the update's bf16 autocast (a no-op at
        fp32), so that eq. 4 compares full-precision logits."""
        # post, prior: [B, T, F]
        params = {k: p.detach() for k, p in critic.named_parameters()}
        x = torch.cat([post, prior], 0)                     # [2B, T, F]
        if self.cfg.precision == "fp32" and torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                logits = functional_call(critic, params, (x.float(),)).logits
        else:
            logits = functional_call(critic, params, (x,)).logits
        return logits.split(post.shape[0], 0)               # [2B, T, K] -> 2 x [B, T, K]

    def beta(self, obs: Observed) -> Tensor:
        c = self.cfg
        if c.weight == "static":
            return torch.full((), c.static_beta, device=obs.post.device)
        return adaptive_beta(obs.kl, c.per_sample, c.kl_floor)   # eq. 5

    def phase(self, update: int) -> bool:
        return update >= self.cfg.warmup            # the eq. 2 indicator

    def contribute(self, obs: Observed, ctx: Context) -> Contribution:
        c = self.cfg
        active = self.phase(ctx.update)                                # eq. 2 indicator
        critic = ctx.agent.slow_critic if c.critic == "slow" else ctx.agent.critic
        with torch.enable_grad() if active else torch.no_grad():
            v_post, v_prior = self.value_logits(critic, obs.post, obs.prior)
            l_var, kl = value_alignment(v_post, v_prior, self.beta_dyn, self.beta_rep,
                                        c.direction)                    # eq. 4, [B, T] each
            beta = self.beta(obs)                                       # [B, T] or []
            weighted = c.scale * (beta * l_var).mean() if active else None
        metrics = {"var/loss": l_var.detach().mean(), "var/kl_dyn": kl.mean(),
                   "var/beta": beta.detach().mean(),
                   "var/active": torch.full((), float(active), device=obs.post.device)}
        if weighted is None:                                            # warm-up: nothing added
            weighted = torch.zeros((), device=obs.post.device)
        return Contribution(losses={"weighted": weighted}, metrics=metrics)
