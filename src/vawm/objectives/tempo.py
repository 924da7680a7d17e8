"""TEMPO: bi-level meta weighting of the world model's per-step losses (Yuan et al. 2023 §2.2–2.3, Alg. 1).

  w_t = 0.5 sigmoid(N_alpha(h_t, s_t^post, s_t^prior, V(s_t^post), V(s_t^prior))) + 0.75  (eq. 5)
  lower:  theta minimises L_lower = mean_t w_t l_t,  l_t = -ELBO_t (the backbone's terms)  (eq. 6)
  upper:  alpha minimises L_upper = mean_t |V(s_t^post) - V(s_t^prior)|^2, normalised V   (eq. 4)
  look-ahead  theta' = theta - eta dL_lower/dtheta                                         (eq. 7)
  dL_upper(theta')/dalpha ~ -(eta / N) sum_t c_t dw_t/dalpha,  c_t = g_up . dl_t/dtheta   (eq. 8-9)

with g_up = dL_upper/dtheta over the encoder + dynamics parameters, taken at the pre-update theta
(eq. 9 evaluates it at theta instead of theta'), and N = B x T because our world model minimises
the *mean* of its per-step terms. Yuan et al. 2023 writes the lower level as an ELBO to *maximise*
(theta' = theta + eta dL/dtheta), so its eq. 9 reads alpha <- alpha - lambda g_up . d2L/dtheta
dalpha; as a loss to minimise the look-ahead gradient carries a minus sign: descending L_upper
*raises* w_t where c_t > 0 (a step on l_t alone would lower L_upper). The public code applies
+g_up . d2(loss)/dtheta dalpha, i.e. the opposite sign; ``sign=public_code`` reproduces it.

What multiplies what: the weights returned in ``Contribution.weights`` (detached) multiply every
head's log-likelihood and both KL terms per time step *before* free bits (the backbone does this in
``loss(obs, weights)``). So l_t, the derivative of the backbone's summed loss w.r.t. w_t, is each
step's terms after the backbone's scales, with a KL term counted only where w_t KL_t exceeds the
free bits. We never rebuild l_t by hand: both meta-gradients differentiate ``backbone.loss`` itself,
so TEMPO runs on every backbone whose ``loss`` takes per-step weights.

Meta-gradient (``meta_grad``; the machinery is ``vawm.objectives.tempo_meta``):
  exact        c_t = d/dw_t [g_up . dL_lower/dtheta] by double backward on the existing graph of
               this update (the same states, the same sampling noise, the straight-through
               gradients of the backbone); equal to a forward-mode JVP of l along g_up.
  finite_diff  c_t ~ |g_up| (l_t(theta + e u) - l_t(theta - e u)) / (2 e), u = g_up / |g_up|,
               e = ``fd_eps``: two re-runs of ``observe`` without a graph (perturbed parameters
               swapped in by ``functional_call``, so the real ones and this update's graph are
               untouched), the torch RNG state saved before and restored for each re-run and after,
               so both see the same noise and the training stream is unchanged. It measures the
               derivative of the *sampled* loss at fixed noise: a straight-through sample adds
               nothing (its value is a one-hot), so on backbones with discrete latents it differs
               from ``exact`` (cpu preset: ~12% relative, correlation 0.99); on smooth backbones
               they agree. A sample whose argmax flips between the re-runs would make l_t jump by
               O(1); such steps (and the rest of their sequence) get c_t = 0 (``tempo/fd_masked``).
               Keep e small (1e-4: no flips on the cpu preset; 1e-2 masks half the steps).
Scale: Adam is invariant to the meta gradient's scale except through its eps. The look-ahead
gradient carries eta / N (~1e-9..1e-5 per element at initialisation on the tiny presets), which
App. C's eps 1e-5 would swamp (a nearly frozen weighter); Alg. 1 line 8 has neither factor, so
``tempo-paper`` (eps 1e-5) uses ``meta_scale=alg1`` and the code-following default keeps eps 1e-8.

Cost: a meta step adds the weighter's forward/backward, one backward for g_up and the mixed
product, whose first pass is also the world-model step's gradient (``one_backward``: the agent
then skips its own backward of L_lower); ``every=k`` amortises all but the weighter's forward
over k updates. Where the paper and
its public code differ (weighter depth and BatchNorm, value source and normalisation, the sign,
L_upper as a mean, the weighter's input), defaults follow the code: docs/faithfulness.md.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from torch import Tensor, nn

from vawm.nets.dist import full_precision
from vawm.nets.layers import make_act, make_norm
from vawm.nets.normalize import MovingMoments
from vawm.objectives.base import Context, Contribution, Objective, register_objective
from vawm.objectives.tempo_meta import (
    flat_dot,
    meta_surrogate,
    mixed_product_exact,
    mixed_product_fd,
    step_losses,
)
from vawm.settings import ConfigError, Min, Range, section
from vawm.worldmodels.base import Observed

Pos = Annotated[float, Min(0, strict=True)]


@section("tempo")
class TempoConfig:
    """TEMPO meta weighting (Yuan et al. 2023, §2.2-2.3, Alg. 1, App. C); defaults follow the
    public code. Preset ``tempo-paper`` (configs/tempo.yaml) switches to the paper's text."""
    layers: Annotated[int, Min(0)] = 4   # hidden dense layers (code 4, + output = 5 dense)
    units: Annotated[int, Min(1)] = 400
    out_norm: bool = True       # BatchNorm on the output layer too (code); paper: hidden only
    act: Literal["elu", "silu", "relu", "tanh"] = "elu"     # hidden activation (Fig. 6 ablation)
    norm: Literal["batch", "layer", "none"] = "batch"       # hidden normalisation (Fig. 6)
    lr: Pos = 1e-4              # Adam of the meta weighter (App. C)
    eps: Pos = 1e-8             # Adam epsilon (the meta gradient carries the small factor eta)
    clip: Pos = 100.0           # global-norm clip of the meta gradient (public code)
    wd: Annotated[float, Range(0, 1, hi_open=True)] = 1e-6   # alpha <- (1 - wd) alpha per step
    w_low: float = 0.75         # w = 0.5 * sigmoid(out) + 0.75
    w_range: Pos = 0.5
    meta_grad: Literal["exact", "finite_diff"] = "exact"   # double backward | theta +- eps g re-runs
    fd_eps: Pos = 1e-4          # finite_diff: norm of the parameter step along g_up / |g_up|
    lookahead_lr: Annotated[float, Min(0)] = 0.0   # eta of the look-ahead; 0 = the model's lr
    every: Annotated[int, Min(1)] = 1   # meta step every k world-model updates (weights: every)
    value_source: Literal["slow", "critic"] = "slow"   # target critic (public code) | critic
    value_norm: Literal["batch", "moving"] = "batch"   # post + prior together | moving (§2.3)
    norm_decay: Annotated[float, Range(0, 1, hi_open=True)] = 0.99   # moving: EMA decay
    sign: Literal["lookahead", "public_code"] = "lookahead"   # descend dL_upper(theta')/dalpha
    # lookahead: the first-order look-ahead gradient -(eta/N) sum_t c_t dw_t/dalpha; alg1: Alg. 1
    # line 8's product g_up . d2(sum_t w_t l_t)/dtheta dalpha, without eta and 1/N (N/eta larger;
    # it matters only through Adam's eps)
    meta_scale: Literal["lookahead", "alg1"] = "lookahead"
    # exact meta-gradient: the double backward's first pass (dL_lower/dtheta with create_graph,
    # over all backbone parameters) is also the world-model step's gradient (same theta, same
    # weights), so the agent skips its own backward of L_lower (#17). Off: two backward passes
    one_backward: bool = True
    # Yuan et al. 2023 §3.4's baseline: ``naive`` weights each step by its task-aware loss
    # u_t = (V(s_post) - V(s_prior))^2, normalised by a moving mean and variance, plus 1 (no
    # weighter, no meta step); ``meta`` is TEMPO. Both log tempo/naive_pearson (App. G Table 2)
    weighting: Literal["meta", "naive"] = "meta"
    # the weighter's inputs (Yuan et al. 2023 §3.5, Fig. 5b): any of D (the deterministic part of
    # the post and prior features), S (their stochastic latents), V (V_post, V_prior)
    inputs: str = "DSV"


class MetaWeighter(nn.Module):
    """N_alpha: [Dense -> BatchNorm -> ELU] x layers, Dense (-> BatchNorm), 0.5 sigmoid + 0.75.

    BatchNorm always uses the statistics of the current batch (the code's ``training=True``).
    ``norm`` / ``act`` replace the hidden layers' BatchNorm / ELU (the ablations of Fig. 6).
    """

    def __init__(self, din: int, units: int = 400, layers: int = 4, out_norm: bool = True,
                 w_low: float = 0.75, w_range: float = 0.5, act: str = "elu",
                 norm: str = "batch"):
        super().__init__()
        self.w_low, self.w_range = w_low, w_range
        mods: list[nn.Module] = []
        d = din
        for _ in range(layers):
            hidden = _batchnorm(units) if norm == "batch" else make_norm(norm, units)
            mods += [nn.Linear(d, units), hidden, make_act(act)]
            d = units
        mods.append(nn.Linear(d, 1))
        if out_norm:
            mods.append(_batchnorm(1))
        self.net = nn.Sequential(*mods)
        for m in self.net:
            if isinstance(m, nn.Linear):       # Keras Dense init (glorot uniform, zero bias)
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        # x: [N, din] -> w: [N] in [w_low, w_low + w_range]
        return self.w_range * torch.sigmoid(full_precision(self.net(x)).squeeze(-1)) + self.w_low


def _batchnorm(n: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(n, eps=1e-3, track_running_stats=False)


# ---------------------------------------------------------------------------- pure math
def normalize_values(v_post: Tensor, v_prior: Tensor, eps: float = 1e-3) -> tuple[Tensor, Tensor]:
    """Normalise post and prior values *together* by their batch mean/variance (differentiable)."""
    # v_post, v_prior: [B, T]
    v = torch.cat([v_post, v_prior], 0)
    v = (v - v.mean()) / torch.sqrt(v.var(unbiased=False) + eps)
    return v[: v_post.shape[0]], v[v_post.shape[0]:]


def upper_loss(v_post: Tensor, v_prior: Tensor) -> Tensor:
    """V-VAML (eq. 4) on normalised values, mean over (b, t)."""
    return (v_post - v_prior).pow(2).mean()


def naive_weights(v_post: Tensor, v_prior: Tensor, moments: MovingMoments) -> Tensor:
    """Yuan et al. 2023 §3.4: w_t = (u_t - mean) / std + 1 with u_t = (V_post - V_prior)^2 per
    step and the moving mean/std of u (updated with this batch first). Not clipped (the paper
    does not; weights below 0 are possible).  [B, T] -> [B, T]"""
    u = (v_post - v_prior).detach().pow(2)
    moments.update(u)
    return moments.normalize(u) + 1.0


def pearson_per_sequence(a: Tensor, b: Tensor, eps: float = 1e-12) -> Tensor:
    """Mean over sequences of the Pearson correlation of a and b along time (App. G Table 2
    correlates w_1:T of one trajectory).  [B, T] x 2 -> scalar"""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    r = (a * b).sum(-1) / torch.sqrt((a * a).sum(-1) * (b * b).sum(-1) + eps)
    return r.mean()


# ---------------------------------------------------------------------------- objective
@register_objective("tempo")
class Tempo(Objective):
    """TEMPO objective: per-step weights for the world model, meta weighter trained inside."""

    Config = TempoConfig

    @classmethod
    def check(cls, cfg) -> None:
        _check_inputs(cfg.tempo.inputs)
        if cfg.tempo.out_norm and cfg.tempo.norm != "batch":
            raise ConfigError(f"tempo.norm={cfg.tempo.norm} with tempo.out_norm=true: the output "
                              "normalisation is a BatchNorm of the single output; set "
                              "tempo.out_norm=false with a hidden norm other than batch")
        if cfg.run.compile and cfg.tempo.meta_grad == "exact":
            raise ConfigError("run.compile=true cannot run tempo.meta_grad=exact: torch.compile "
                              "does not support the double backward of the exact meta-gradient; "
                              "use tempo.meta_grad=finite_diff or run.compile=false")

    @classmethod
    def from_config(cls, cfg, backbone) -> Tempo:
        return cls(cfg.tempo, backbone.feat_dim, backbone.latent_slice)

    def __init__(self, cfg: TempoConfig, feat_dim: int, latent: slice | None = None):
        super().__init__()
        self.cfg = cfg
        _check_inputs(cfg.inputs)
        # feature columns the weighter reads: the latent slice for S, the rest for D
        stoch = torch.zeros(feat_dim, dtype=torch.bool)
        stoch[latent if latent is not None else slice(0, feat_dim)] = True
        cols = (stoch & ("S" in cfg.inputs)) | (~stoch & ("D" in cfg.inputs))
        self.all_cols = bool(cols.all())
        self.register_buffer("cols", cols.nonzero().squeeze(-1), persistent=False)
        self.use_values = "V" in cfg.inputs
        din = 2 * len(self.cols) + (2 if self.use_values else 0)
        self.weighter = MetaWeighter(din, cfg.units, cfg.layers, cfg.out_norm,
                                     cfg.w_low, cfg.w_range, cfg.act, cfg.norm)
        self.moments = MovingMoments(cfg.norm_decay)
        self.naive_moments = MovingMoments(cfg.norm_decay)     # of u_t, for the naive weights
        self.opt = torch.optim.Adam(self.weighter.parameters(), lr=cfg.lr, eps=cfg.eps)

    # the meta weighter's optimiser travels in the state dict (checkpoints resume it)
    def get_extra_state(self) -> dict:
        return {"opt": self.opt.state_dict()}

    def set_extra_state(self, state: dict) -> None:
        self.opt.load_state_dict(state["opt"])

    def values(self, obs: Observed, ctx: Context) -> tuple[Tensor, Tensor]:
        """Normalised V(s_post), V(s_prior) [B, T], differentiable w.r.t. the states only.

        ``value_norm=moving`` first updates the moving mean/variance with this batch's values.
        """
        B = obs.post.shape[0]
        slow = self.cfg.value_source == "slow"
        v = ctx.agent.value(torch.cat([obs.post, obs.prior], 0), slow=slow)   # [2B, T]
        v_post, v_prior = v[:B], v[B:]
        if self.cfg.value_norm == "batch":
            return normalize_values(v_post, v_prior)
        self.moments.update(v)
        return self.moments.normalize(v_post), self.moments.normalize(v_prior)

    def inputs(self, obs: Observed, v_post: Tensor, v_prior: Tensor) -> Tensor:
        """The weighter's input [B*T, 2F + 2]: (post, prior, V_post, V_prior), detached (eq. 5);
        with ``tempo.inputs`` a subset, only those parts of the features / the values."""
        post, prior = obs.post, obs.prior
        if not self.all_cols:
            post, prior = post.index_select(-1, self.cols), prior.index_select(-1, self.cols)
        parts = [post, prior]
        if self.use_values:
            parts += [v_post.unsqueeze(-1), v_prior.unsqueeze(-1)]
        return torch.cat(parts, -1).detach().flatten(0, 1)

    def weights(self, obs: Observed, v_post: Tensor, v_prior: Tensor) -> Tensor:
        """w [B, T] = N_alpha(h, s_post, s_prior, V(s_post), V(s_prior)) (eq. 5)."""
        return self.weighter(self.inputs(obs, v_post, v_prior)).reshape(v_post.shape)

    def mixed_product(self, obs: Observed, ctx: Context, w: Tensor, upper: Tensor
                      ) -> tuple[Tensor, dict[str, Tensor], list | None]:
        """c_t = g_up . dl_t/dtheta [B, T] over ``representation_parameters()`` (eq. 9), its
        metrics, and (``one_backward``, exact) the world-model loss's gradient pairs."""
        params = [p for p in ctx.backbone.representation_parameters() if p.requires_grad]
        g_up = torch.autograd.grad(upper, params, retain_graph=True, allow_unused=True)
        g_up = [torch.zeros_like(p) if g is None else g for p, g in zip(params, g_up, strict=True)]
        metrics = {"tempo/upper_gradnorm": torch.sqrt(flat_dot(g_up, g_up)).detach()}
        if self.cfg.meta_grad == "exact":
            others = None
            if self.cfg.one_backward:
                ids = {id(p) for p in params}
                others = [p for p in ctx.backbone.parameters()
                          if p.requires_grad and id(p) not in ids]
            c, grads = mixed_product_exact(ctx.backbone, obs, w, params, g_up, others)
            return c, metrics, grads
        c, masked = mixed_product_fd(ctx.backbone, ctx.batch, w, params, g_up, self.cfg.fd_eps,
                                     step=obs.step)
        metrics["tempo/fd_masked"] = masked
        return c, metrics, None

    def meta_step(self, w: Tensor, c: Tensor, eta: float) -> Tensor:
        """One Adam step of alpha on the look-ahead gradient; returns its norm before clipping."""
        sign = 1.0 if self.cfg.sign == "lookahead" else -1.0
        self.opt.zero_grad(set_to_none=True)
        (sign * meta_surrogate(w, c, eta, self.cfg.meta_scale)).backward()
        params = list(self.weighter.parameters())
        norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.clip)
        with torch.no_grad():
            for p in params:                                          # alpha <- (1 - wd) alpha
                p.mul_(1.0 - self.cfg.wd)
        self.opt.step()
        return norm.detach()

    def contribute(self, obs: Observed, ctx: Context) -> Contribution:
        # obs.post, obs.prior: [B, T, F]
        if self.cfg.weighting == "naive":
            with torch.no_grad():
                v_post, v_prior = self.values(obs, ctx)
                w = naive_weights(v_post, v_prior, self.naive_moments)
            return Contribution(weights=w, metrics=_metrics(upper_loss(v_post, v_prior), w))
        meta = ctx.update % self.cfg.every == 0
        if not meta:
            with torch.no_grad():
                v_post, v_prior = self.values(obs, ctx)
                w = self.weights(obs, v_post, v_prior)
            return Contribution(weights=w, metrics=_metrics(upper_loss(v_post, v_prior), w))
        v_post, v_prior = self.values(obs, ctx)
        upper = upper_loss(v_post, v_prior)
        w = self.weights(obs, v_post, v_prior)                       # graph to alpha only
        c, metrics, grads = self.mixed_product(obs, ctx, w, upper)
        eta = self.cfg.lookahead_lr or ctx.wm_lr
        gn = self.meta_step(w, c, eta)
        metrics.update(_metrics(upper.detach(), w.detach()))
        metrics.update({"tempo/meta_gradnorm": gn, "tempo/c_mean": c.mean().detach(),
                        "tempo/c_std": c.std().detach()})
        with torch.no_grad():               # App. G Table 2: meta vs naive weights
            naive = naive_weights(v_post, v_prior, self.naive_moments)
            metrics["tempo/naive_pearson"] = pearson_per_sequence(w.detach(), naive)
        return Contribution(weights=w.detach(), metrics=metrics, wm_grads=grads)


def _check_inputs(inputs: str) -> None:
    if set(inputs) - set("DSV") or len(set(inputs)) != len(inputs):
        raise ConfigError(f"tempo.inputs={inputs!r}: use distinct letters of D (deterministic "
                          "state), S (stochastic latents), V (values), e.g. DSV or DV")


def _metrics(upper: Tensor, w: Tensor) -> dict[str, Tensor]:
    return {"tempo/upper_loss": upper, "tempo/w_mean": w.mean(), "tempo/w_std": w.std(),
            "tempo/w_min": w.min(), "tempo/w_max": w.max()}


__all__ = ["Tempo", "MetaWeighter", "normalize_values", "upper_loss", "step_losses",
           "naive_weights", "pearson_per_sequence",
           "mixed_product_exact", "mixed_product_fd", "meta_surrogate"]
