"""The (m,b)-VAML family on finite MDPs (Voelcker et al. 2025 §3–4), as small pure functions.

Notation (Voelcker et al. 2025 §2–4; Farahmand 2018; Schrittwieser et al. 2020):
    P       true transition kernel, rows are the data's (state[, action]) pairs      [..., R, n]
    P_hat   model kernel, same rows                                                   [..., R, n]
    P_pi    policy-conditioned kernels (the lab's chain); equal to P when R = n       [..., n, n]
    V       value being learned; V_bar its target network (Mnih et al. 2013)          [..., n]
    sg(.)   stop-gradient; in the *expected* forms below the caller passes detached
            tensors where the paper writes sg().

Two forms of every model loss:
  * sample forms (``*_samples``) take values of sampled model states, V(x_hat_k), k = 1..n, and
    targets built from a sampled environment trajectory: the losses exactly as written in
    Voelcker et al. 2025;
  * expected forms (``*_expected``) are their exact expectations over the model's samples for a
    categorical model, with the environment target replaced by its conditional mean (the
    environment's own sampling only adds a term that depends on neither model nor value). They
    are what the lab trains on: an infinitely large batch of the sample loss.
The tests check each expected form against a Monte-Carlo average of its sample form.

Readings where Voelcker et al. 2025's extracted text lost symbols (docs/faithfulness.md):
  * eq. 2 sums j = 0..m; the j = 0 term is the value at the real start state (MuZero's k = 0),
    so (m, b) = (0, 1) is model-free TD as the paper says, and (1, 0) is sample IterVAML.
  * the bootstrapped target of step j is
        y_j = sum_{i=j}^{j+b-1} gamma^(i-j) r(x_i) + gamma^b V_bar(x_{j+b})
    with rewards r(x) of the state (and first action) the step starts from, so that
    V = r + gamma P V.
  * with rows = (state, action) pairs (cliff-walk), the j = 0 term averages over states with the
    policy's action, the j >= 1 terms over all rows (first action from the data, then the policy).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _mv(M: Tensor, v: Tensor) -> Tensor:
    """Batched matrix-vector product.  M: [..., R, n], v: [..., n] -> [..., R]."""
    return (M @ v.unsqueeze(-1)).squeeze(-1)


def value_moments(M: Tensor, V: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance of V(x) for x ~ M(row, .).  M: [..., R, n], V: [..., n] -> 2 x [..., R]."""
    mom = M @ torch.stack([V, V * V], dim=-1)                        # [..., R, 2]
    mean = mom[..., 0]
    return mean, mom[..., 1] - mean * mean


def sample_variance(v: Tensor) -> Tensor:
    """Unbiased sample variance over the last dim (n >= 2).  v: [..., n] -> [...]."""
    if v.shape[-1] < 2:
        raise ValueError("the sample variance needs at least 2 samples")
    return v.var(dim=-1, unbiased=True)


# --------------------------------------------------------------------------- maximum likelihood
def kl_loss(P: Tensor, logits: Tensor) -> Tensor:
    """MLE baseline: mean over rows of KL(P(row, .) || softmax(logits)(row, .)).

    KL = sum_s' P log P - sum_s' P log P_hat; entries with P = 0 contribute 0.
    P, logits: [..., R, n] -> [...]
    """
    logq = torch.log_softmax(logits, dim=-1)
    cross = torch.where(P > 0, P * logq, torch.zeros_like(logq)).sum(-1)
    return (torch.xlogy(P, P).sum(-1) - cross).mean(-1)


# --------------------------------------------------------------------------- IterVAML
def itervaml_expectation(P_hat: Tensor, P: Tensor, V: Tensor) -> Tensor:
    """IterVAML, expectation form (Voelcker et al. 2025 eq. 1; Farahmand 2018):

        L(P_hat) = mean_rows ( E_{x'~P_hat}[V(x')] - E_{x'~P}[V(x')] )^2,   V = sg(V)

    Its zero set is the value-equivalent models for V (Voelcker et al. 2025 Prop. 1).
    P_hat, P: [..., R, n]; V: [..., n] -> [...]
    """
    return ((_mv(P_hat, V) - _mv(P, V)) ** 2).mean(-1)


def itervaml_samples(v_model: Tensor, y: Tensor) -> Tensor:
    """IterVAML, n-sample form (Voelcker et al. 2025 eq. 1 with the inner expectation sampled):

        L = ( 1/n sum_k V(x_hat_k) - y )^2,   x_hat_k ~ P_hat(.|x) iid,  y = V(x'), x' ~ P(.|x)

    In expectation over the model samples this is the expectation form plus Var_{P_hat}[V] / n
    (Voelcker et al. 2025 eq. 3, Prop. 2): uncalibrated, it prefers low-variance models.
    v_model: [..., n] values of the model samples; y: [...] -> [...]
    """
    return (v_model.mean(-1) - y) ** 2


def cvaml_samples(v_model: Tensor, y: Tensor) -> Tensor:
    """Calibrated IterVAML (CVAML, Voelcker et al. 2025 §4.2, Prop. 3), n >= 2 model samples:

        L = ( 1/n sum_k V(x_hat_k) - y )^2 - s^2 / n,   s^2 = 1/(n-1) sum_k (V(x_hat_k) - mean)^2

    s^2 / n is unbiased for Var[mean], so E[L] = (E_{P_hat} V - y)^2: the target loss.
    v_model: [..., n]; y: [...] -> [...]
    """
    return itervaml_samples(v_model, y) - sample_variance(v_model) / v_model.shape[-1]


def itervaml_expected(P_hat: Tensor, y: Tensor, V: Tensor, n_samples: int,
                      calibrated: bool) -> Tensor:
    """Exact expectation of ``itervaml_samples`` / ``cvaml_samples`` over the model's n samples:

        E = mean_rows ( (P_hat V - y)^2 + [not calibrated] Var_{P_hat}[V] / n )     (eq. 3)

    P_hat: [..., R, n]; y: [..., R] target (e.g. P V); V: [..., n] -> [...]
    """
    mean, var = value_moments(P_hat, V)
    loss = (mean - y) ** 2
    if calibrated:
        _check_calibrated(n_samples)
    else:
        loss = loss + var / n_samples
    return loss.mean(-1)


# --------------------------------------------------------------------------- (m,b)-VAML
def bootstrap_targets(rewards: Tensor, v_bar: Tensor, m: int, b: int, gamma: float) -> Tensor:
    """Targets of (m,b)-VAML from one environment trajectory x_0 .. x_{m+b} (Voelcker et al. 2025 eq. 2):

        y_j = sum_{i=j}^{j+b-1} gamma^(i-j) r(x_i) + gamma^b V_bar(x_{j+b}),   j = 0..m

    rewards: [..., m+b] r(x_0..x_{m+b-1}); v_bar: [..., m+b+1] V_bar(x_0..x_{m+b}) -> [..., m+1]
    """
    ys = []
    for j in range(m + 1):
        y = gamma ** b * v_bar[..., j + b]
        for i in range(j, j + b):
            y = y + gamma ** (i - j) * rewards[..., i]
        ys.append(y)
    return torch.stack(ys, dim=-1)


def mb_vaml_samples(v_model: Tensor, targets: Tensor, calibrated: bool) -> Tensor:
    """(m,b)-VAML (Voelcker et al. 2025 eq. 2) with n model rollouts, and its calibrated version (CVAML):

        L = sum_{j=0}^{m} ( 1/n sum_k V(x_hat_j^k) - y_j )^2  [ - s_j^2 / n  if calibrated ]

    x_hat_j^k is step j of the k-th model rollout from x_0 (x_hat_0^k = x_0), y_j the bootstrap
    targets of ``bootstrap_targets``. b = 0: IterVAML (trains the model only); b >= 1: the MuZero
    loss (trains model and value).
    v_model: [..., m+1, n] values V(x_hat_j^k); targets: [..., m+1] -> [...]
    """
    n = v_model.shape[-1]
    loss = (v_model.mean(-1) - targets) ** 2                          # [..., m+1]
    if calibrated:
        loss = loss - sample_variance(v_model) / n
    return loss.sum(-1)


def bellman_b(P_pi: Tensor, r_pi: Tensor, V_bar: Tensor, b: int, gamma: float) -> Tensor:
    """b-step Bellman operator of the environment: sum_{i<b} gamma^i P^i r + gamma^b P^b V_bar.

    E[y_0 | x_0] of ``bootstrap_targets``.  P_pi: [..., n, n]; r_pi, V_bar: [..., n] -> [..., n]
    """
    y = V_bar
    for _ in range(b):                                  # Horner: r + gamma P (r + gamma P (...))
        y = r_pi + gamma * _mv(P_pi, y)
    return y


def mb_vaml_expected(V: Tensor, V_bar: Tensor, P_hat: Tensor, P: Tensor, P_hat_pi: Tensor,
                     P_pi: Tensor, r_pi: Tensor, m: int, b: int, gamma: float, n_samples: int,
                     calibrated: bool) -> Tensor:
    """Exact expectation of ``mb_vaml_samples`` over n model rollouts (eq. 2 and eq. 3, §4.2-4.3):

        L = mean_s (V(s) - y_0(s))^2
            + sum_{j=1}^{m} mean_rows [ (M_j V - Y_j)^2 + [not calibrated] Var_{M_j}[V] / n ]
        M_j = P_hat P_hat_pi^(j-1)   (distribution of the model's step-j state)
        Y_j = P P_pi^(j-1) y_0,      y_0 = bellman_b(P_pi, r_pi, V_bar, b)

    The uncalibrated variance term pulls V towards equal values on states the model mixes
    (Voelcker et al. 2025 Prop. 4): the MuZero loss is biased for the value with a stochastic model.
    V, V_bar, r_pi: [..., n]; P_hat, P: [..., R, n]; P_hat_pi, P_pi: [..., n, n] -> [...]
    """
    if m < 0 or b < 0:
        raise ValueError("m and b must be >= 0")
    if calibrated:
        _check_calibrated(n_samples)
    y0 = bellman_b(P_pi, r_pi, V_bar, b, gamma)                       # [..., n]
    loss = ((V - y0) ** 2).mean(-1)                                   # j = 0
    M, Y = P_hat, P
    for j in range(1, m + 1):
        if j > 1:
            M, Y = M @ P_hat_pi, Y @ P_pi
        mean, var = value_moments(M, V)
        term = (mean - _mv(Y, y0)) ** 2
        if not calibrated:
            term = term + var / n_samples
        loss = loss + term.mean(-1)
    return loss


# --------------------------------------------------------------------------- value learning
def model_td_loss(V: Tensor, P_hat_pi: Tensor, r_pi: Tensor, V_bar: Tensor,
                  gamma: float) -> Tensor:
    """Model-based TD for the value (Voelcker et al. 2025 §5):
    mean_s (V(s) - r(s) - gamma (P_hat V_bar)(s))^2.

    The caller passes a detached P_hat_pi: this loss trains the value only. Expected over the
    model's next state; sampling it would change the loss by a constant, not its gradient.
    V, r_pi, V_bar: [..., n]; P_hat_pi: [..., n, n] -> [...]
    """
    return ((V - r_pi - gamma * _mv(P_hat_pi, V_bar)) ** 2).mean(-1)


def _check_calibrated(n_samples: int) -> None:
    if n_samples < 2:
        raise ValueError("calibrated losses need n_samples >= 2 (the sample variance)")
