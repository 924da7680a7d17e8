"""Joint gradient descent on a low-rank model and a tabular value, batched over problems.

One call trains a batch of G independent problems (seeds x temperatures x ...) with one loss and
one rank: every tensor carries the batch dim G first and every loss is summed over it, so the
gradients (and Adam's per-element updates) of different problems never mix.

Who trains what (Voelcker et al. 2025 §5):
  * ``mle``:       model by KL(P || P_hat); value by model-based TD.
  * ``itervaml``:  model by IterVAML, expectation form (eq. 1); value by model-based TD.
  * ``vaml-M-0``, ``cvaml-M-0`` (IterVAML family, b = 0): model only, value by model-based TD;
    both sides of the model loss use sg(V), as in eq. 1.
  * ``vaml-M-B``, ``cvaml-M-B`` with B >= 1 (MuZero family): the (C)VAML loss trains model *and*
    value; there is no separate value loss.
Bootstrap targets use a target network V_bar, copied from V every ``target_every`` steps.
Every loss is its exact expectation over the model's samples and the environment's next states
(the ``*_expected`` forms of ``losses.py``): full-batch gradient descent on the population loss,
whose minimisers are what calibration is about (Voelcker et al. 2025 Def. 1).

Two ways to get the gradients, same numbers (``tests/test_garnet_train.py`` checks it):
  * ``autograd`` on ``loss_terms``, which calls the pure losses of ``losses.py``; any M.
  * ``fused`` for M = 1 (every default loss): the loss depends on P_hat only through the row
    moments mu = P_hat V, nu = P_hat V^2 (and the KL), so the backward pass through the softmax is
    written out: dL/dlogits = P_hat * (g1 (V - mu) + g2 (V^2 - nu)) [+ (P_hat - P)/R for KL]
    with g1 = dL/dmu, g2 = dL/dnu. About half the passes over the [G, R, n] tensors of autograd,
    and a softmax shifted by the last step's log-normaliser (``shifted_softmax``).
"""

from __future__ import annotations

import functools
import math
import re
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor

from vawm.garnet import losses
from vawm.garnet.models import low_rank_logits, policy_mix, softmax_model

LOSS_HELP = "mle | itervaml | vaml-M-B | cvaml-M-B  (M >= 1 rollout steps, B bootstrap steps)"


@dataclass(frozen=True)
class LossSpec:
    """A parsed loss name: ``mle``, ``itervaml``, ``vaml-M-B`` or ``cvaml-M-B``."""
    name: str
    kind: str                   # "mle" | "itervaml" | "mb"
    m: int = 1
    b: int = 0
    calibrated: bool = False

    @property
    def trains_value(self) -> bool:
        """MuZero family (b >= 1): the loss itself trains the value."""
        return self.kind == "mb" and self.b >= 1

    @property
    def label(self) -> str:
        if self.kind == "mle":
            return "MLE (KL)"
        if self.kind == "itervaml":
            return "IterVAML (expectation)"
        return f"({self.m},{self.b})-{'CVAML' if self.calibrated else 'VAML'}"


def parse_loss(name: str) -> LossSpec:
    """``mle`` | ``itervaml`` | ``vaml-M-B`` | ``cvaml-M-B`` -> LossSpec; ValueError otherwise."""
    if name in ("mle", "itervaml"):
        return LossSpec(name, name)
    match = re.fullmatch(r"(c?)vaml-(\d+)-(\d+)", name)
    if not match:
        raise ValueError(f"unknown loss {name!r}; expected {LOSS_HELP}")
    m, b = int(match.group(2)), int(match.group(3))
    if m < 1:
        raise ValueError(f"loss {name!r}: M must be >= 1 (M = 0 uses no model)")
    return LossSpec(name, "mb", m, b, calibrated=bool(match.group(1)))


@dataclass(frozen=True)
class Task:
    """A batch of G policy-evaluation problems.

    P_rows: [G, R, n] true P(.|row); r_rows: [G, R] reward of the row;
    policy: [G, n, A] with rows ordered (s, a), R = n A; None when rows are states (R = n).
    """
    P_rows: Tensor
    r_rows: Tensor
    policy: Tensor | None
    gamma: float

    def mix(self, x_rows: Tensor) -> Tensor:
        """sum_a pi(a|s) x(s, a).  [G, R] -> [G, n] (identity when rows are states)."""
        if self.policy is None:
            return x_rows
        return (self.policy * x_rows.unflatten(-1, self.policy.shape[-2:])).sum(-1)

    @functools.cached_property
    def _support(self) -> tuple[Tensor, Tensor]:
        """Successors and probabilities of each row, padded to the largest support.
        -> idx [G, R, k] long, prob [G, R, k]"""
        k = int((self.P_rows > 0).sum(-1).max())
        prob, idx = self.P_rows.topk(k, dim=-1)
        return idx, prob

    def sparse_mv(self, v: Tensor) -> Tensor:
        """P_rows v using only the nonzeros (Garnet rows have k of n).  [G, n] -> [G, R]"""
        idx, prob = self._support
        vals = v.unsqueeze(-2).expand(*idx.shape[:-1], v.shape[-1]).gather(-1, idx)
        return (prob * vals).sum(-1)

    @property
    def P_pi(self) -> Tensor:                                         # [G, n, n]
        return policy_mix(self.P_rows, self.policy)

    @property
    def r_pi(self) -> Tensor:                                         # [G, n]
        return self.mix(self.r_rows)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by every loss (defaults: see ``docs/garnet.md``)."""
    steps: int = 8000           # gradient steps (docs/garnet.md: the budget's convergence check)
    lr_model: float = 0.03      # Adam, model factors A and B
    lr_value: float = 0.03      # Adam, value table V
    init_std: float = 0.01      # N(0, init_std^2) entries of A and B
    target_every: int = 1       # copy V -> V_bar every this many steps
    n_samples: int = 4          # model samples n of the sample-based losses
    schedule: str = "cosine"    # learning rates: "cosine" decay to 0 over each train() call
    eps: float = 1e-3           # Adam's epsilon: steps shrink with vanishing gradients (see below)
    grads: str = "fused"        # "fused" (M = 1 only; others fall back) | "autograd"


@dataclass
class Learner:
    """Parameters of a batch of (model, value) pairs and their Adam moments."""
    A: Tensor                   # [G, R, r]
    B: Tensor                   # [G, r, n]
    V: Tensor                   # [G, n]
    V_bar: Tensor               # [G, n] target network
    moments: list[Tensor]       # Adam first/second moments of A, B, V
    log_z: Tensor               # [G, R, 1] last log-normaliser of each row (softmax shift)
    step: int = 0

    @classmethod
    def create(cls, A: Tensor, B: Tensor) -> Learner:
        V = torch.zeros(A.shape[0], B.shape[-1], dtype=A.dtype)
        params = (A, B, V)
        moments = [torch.zeros_like(p) for p in params for _ in range(2)]
        log_z = torch.zeros(A.shape[0], A.shape[1], 1, dtype=A.dtype)
        return cls(A.clone(), B.clone(), V, V.clone(), moments, log_z)

    def model(self, dtype: torch.dtype | None = None) -> Tensor:
        """Current P_hat over rows, computed in ``dtype`` (default: the parameters').  [G, R, n]"""
        dtype = dtype or self.A.dtype
        return softmax_model(low_rank_logits(self.A.to(dtype), self.B.to(dtype)))


def adam_(p: Tensor, g: Tensor, m: Tensor, v: Tensor, t: int, lr: float,
          betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
    """One Adam step in place (Kingma & Ba 2015), elementwise, so batched problems stay apart."""
    b1, b2 = betas
    m.lerp_(g, 1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    denom = (v / (1 - b2 ** t)).sqrt_().add_(eps)
    p.addcdiv_(m, denom, value=-lr / (1 - b1 ** t))


def loss_terms(spec: LossSpec, task: Task, logits: Tensor, V: Tensor, V_bar: Tensor,
               n_samples: int) -> Tensor:
    """Total loss of one step per problem, from the pure losses -> [G].

    Model loss + value loss where they are separate; autograd of its sum gives the gradients.
    """
    P_pi, r_pi, gamma = task.P_pi, task.r_pi, task.gamma
    P_hat = softmax_model(logits)                                     # [G, R, n]
    P_hat_pi = policy_mix(P_hat, task.policy)                         # [G, n, n]
    if spec.trains_value:                                             # MuZero family
        return losses.mb_vaml_expected(V, V_bar, P_hat, task.P_rows, P_hat_pi, P_pi, r_pi,
                                       spec.m, spec.b, gamma, n_samples, spec.calibrated)
    Vd = V.detach()
    if spec.kind == "mle":
        model_loss = losses.kl_loss(task.P_rows, logits)
    elif spec.kind == "itervaml":
        model_loss = losses.itervaml_expectation(P_hat, task.P_rows, Vd)
    else:                                                             # IterVAML family, b = 0
        model_loss = losses.mb_vaml_expected(Vd, Vd, P_hat, task.P_rows, P_hat_pi, P_pi, r_pi,
                                             spec.m, 0, gamma, n_samples, spec.calibrated)
    value_loss = losses.model_td_loss(V, P_hat_pi.detach(), r_pi, V_bar, gamma)
    return model_loss + value_loss


def grads_autograd(spec: LossSpec, task: Task, A: Tensor, B: Tensor, V: Tensor,
                   V_bar: Tensor, n_samples: int, shift: Tensor | None = None
                   ) -> tuple[Tensor, ...]:
    """dL/dA, dL/dB, dL/dV of ``loss_terms`` summed over the batch, by autograd (and the
    unused ``shift`` passed through, to match ``grads_fused``)."""
    A, B, V = (x.detach().requires_grad_(True) for x in (A, B, V))
    loss = loss_terms(spec, task, low_rank_logits(A, B), V, V_bar, n_samples).sum()
    dA, dB, dV = torch.autograd.grad(loss, (A, B, V), allow_unused=True)
    return dA, dB, torch.zeros_like(V) if dV is None else dV, shift


def shifted_softmax(A: Tensor, B: Tensor, shift: Tensor) -> tuple[Tensor, Tensor]:
    """softmax(A B) over rows, computed as exp(A B - shift) / sum, and the new log-normaliser.

    Any shift gives the same softmax; the last step's log-normaliser keeps exp() in range
    (the logits move little per step) and saves the row-max pass of ``torch.softmax``, which
    is several times slower on CPU at these sizes. Falls back to the row max if a row
    overflows or underflows.  A [G, R, r], B [G, r, n], shift [G, R, 1] -> [G, R, n], [G, R, 1]
    """
    e = torch.baddbmm(-shift, A, B).exp_()
    z = e.sum(-1, keepdim=True)
    if not bool(((z > 1e-30) & (z < 1e30)).all()):
        logits = A @ B
        shift = logits.amax(-1, keepdim=True)
        e = (logits - shift).exp_()
        z = e.sum(-1, keepdim=True)
    return e.div_(z), shift + z.log()


def grads_fused(spec: LossSpec, task: Task, A: Tensor, B: Tensor, V: Tensor, V_bar: Tensor,
                n_samples: int, shift: Tensor | None = None) -> tuple[Tensor, ...]:
    """The same gradients as ``grads_autograd`` for M = 1, with the softmax backward by hand.

    Shapes: A [G, R, r], B [G, r, n], V, V_bar [G, n]; shift [G, R, 1] (see shifted_softmax).
    Returns dA, dB, dV and the rows' log-normaliser (the next step's shift).
    """
    if spec.kind == "mb" and spec.m != 1:
        raise ValueError("the fused gradients cover M = 1; use grads_autograd")
    if spec.kind == "mb" and spec.calibrated:
        losses._check_calibrated(n_samples)
    P, gamma = task.P_rows, task.gamma
    n_rows, n = P.shape[-2:]
    Pv = task.sparse_mv                                               # P_rows v, by gathers
    if shift is None:
        shift = torch.zeros(*A.shape[:-1], 1, dtype=A.dtype)
    P_hat, log_z = shifted_softmax(A, B, shift)                      # [G, R, n]
    muzero = spec.trains_value
    mom = P_hat @ torch.stack([V, V * V, V_bar], dim=-1)              # [G, R, 3]
    mu, nu, P_hat_Vbar = mom.unbind(-1)                               # [G, R] each
    c = 0.0 if spec.kind != "mb" or spec.calibrated else 1.0 / n_samples   # Var / n  (eq. 3)
    # targets of the j = 1 term: y_1 = P y_0 with y_0 = sg(V) (b = 0) or T^b V_bar (b >= 1)
    if muzero:
        y0 = V_bar
        for _ in range(spec.b):                                       # Horner, as bellman_b
            y0 = task.r_pi + gamma * task.mix(Pv(y0))
    else:
        y0 = V
    y1 = Pv(y0)                                                       # [G, R]
    if spec.kind == "mle":
        g1 = torch.zeros_like(mu)
        g2 = g1
    else:                       # d/dmu, d/dnu of mean_rows (mu - y1)^2 + c (nu - mu^2)
        g1 = (2.0 * (mu - y1) - 2.0 * c * mu) / n_rows
        g2 = torch.full_like(mu, c / n_rows)
    # dL/dlogits = P_hat * (g1 (V - mu) + g2 (V^2 - nu))  (softmax Jacobian, per row)
    H = torch.stack([g1, g2, -(g1 * mu + g2 * nu)], dim=-1) @ torch.stack(
        [V, V * V, torch.ones_like(V)], dim=-2)                       # [G, R, n]
    G = H.mul_(P_hat)
    if spec.kind == "mle":                                            # d KL / dlogits
        G.add_(P_hat - P, alpha=1.0 / n_rows)
    dA = G @ B.transpose(-1, -2)
    dB = A.transpose(-1, -2) @ G
    if muzero:          # j = 0: mean_s (V - y0)^2; j = 1 through mu and nu = P_hat V^2
        back = (torch.stack([g1, g2], dim=-2) @ P_hat).unbind(-2)     # g^T P_hat: [G, n] x2
        dV = 2.0 * (V - y0) / n + back[0] + 2.0 * V * back[1]
    else:               # model-based TD: mean_s (V - r_pi - gamma P_hat_pi V_bar)^2
        dV = 2.0 * (V - task.r_pi - gamma * task.mix(P_hat_Vbar)) / n
    return dA, dB, dV, log_z


def train(task: Task, learner: Learner, spec: LossSpec, cfg: TrainConfig,
          steps: int | None = None) -> Learner:
    """Run ``steps`` (default cfg.steps) joint Adam steps on the learner, in place."""
    fused = cfg.grads == "fused" and not (spec.kind == "mb" and spec.m != 1)
    grads = grads_fused if fused else grads_autograd
    mA, vA, mB, vB, mV, vV = learner.moments
    steps = cfg.steps if steps is None else steps
    with torch.no_grad() if fused else nullcontext():
        for i in range(steps):
            if learner.step % cfg.target_every == 0:
                learner.V_bar = learner.V.clone()
            dA, dB, dV, learner.log_z = grads(spec, task, learner.A, learner.B, learner.V,
                                              learner.V_bar, cfg.n_samples, learner.log_z)
            learner.step += 1
            decay = lr_factor(cfg.schedule, i, steps)
            with torch.no_grad():
                adam_(learner.A, dA, mA, vA, learner.step, cfg.lr_model * decay, eps=cfg.eps)
                adam_(learner.B, dB, mB, vB, learner.step, cfg.lr_model * decay, eps=cfg.eps)
                adam_(learner.V, dV, mV, vV, learner.step, cfg.lr_value * decay, eps=cfg.eps)
    return learner


def lr_factor(schedule: str, i: int, steps: int) -> float:
    """Learning-rate multiplier of step i of ``steps``: "constant" 1, or "cosine" from 1 to
    0 (Loshchilov & Hutter 2017; Adam at a constant rate keeps jittering by ~lr at the optimum)."""
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * i / steps))
    raise ValueError(f"unknown schedule {schedule!r}; expected constant | cosine")


def _mv(M: Tensor, v: Tensor) -> Tensor:
    return (M @ v.unsqueeze(-1)).squeeze(-1)

