"""The theory of Voelcker et al. 2025 §4 on small finite problems: calibration of the sample losses
(Prop. 2-3), the deterministic-model corner case, and the MuZero value bias (Prop. 4).

Monte-Carlo checks compare against exact closed forms with a tolerance of a few standard errors;
each also asserts the effect it is about is far larger than that tolerance, so it can fail.
"""

import pytest
import torch

from vawm.garnet import losses
from vawm.garnet.models import deterministic_model, softmax_model

DT = torch.float64


def _setup(n=6, rows=5, seed=0, sharp=1.5):
    g = torch.Generator().manual_seed(seed)
    P_hat = softmax_model(sharp * torch.randn(rows, n, generator=g, dtype=DT))  # stochastic
    V = 3.0 * torch.randn(n, generator=g, dtype=DT)
    y = torch.randn(rows, generator=g, dtype=DT)
    return g, P_hat, V, y


def _step(P_hat, x, g):
    """One model step from each entry of x (state indices) -> next states, same shape."""
    out = torch.empty_like(x)
    for s in range(P_hat.shape[0]):
        mask = x == s
        out[mask] = torch.multinomial(P_hat[s], int(mask.sum()), replacement=True, generator=g)
    return out


def _draw(P_hat, n_draws, n_samples, g):
    """Model samples: [rows, draws, n_samples] state indices."""
    rows = P_hat.shape[0]
    idx = torch.multinomial(P_hat, n_draws * n_samples, replacement=True, generator=g)
    return idx.view(rows, n_draws, n_samples)


@pytest.mark.parametrize("n_samples", [2, 5])
def test_calibrated_loss_is_unbiased_uncalibrated_exceeds_by_var_over_n(n_samples):
    g, P_hat, V, y = _setup()
    mean, var = losses.value_moments(P_hat, V)                       # exact, per row
    target = (mean - y) ** 2                                          # expectation-form loss
    v = V[_draw(P_hat, 200_000, n_samples, g)]                        # [rows, draws, n]
    unc = losses.itervaml_samples(v, y.unsqueeze(-1))                 # [rows, draws]
    cal = losses.cvaml_samples(v, y.unsqueeze(-1))
    se_u = unc.std(-1) / unc.shape[-1] ** 0.5
    se_c = cal.std(-1) / cal.shape[-1] ** 0.5
    # Prop. 3: E[calibrated] = target loss
    assert ((cal.mean(-1) - target).abs() < 4 * se_c).all()
    # Prop. 2 / eq. 3: E[uncalibrated] = target + Var/n, and that gap is really there
    assert ((unc.mean(-1) - target - var / n_samples).abs() < 4 * se_u).all()
    assert ((var / n_samples) > 20 * se_u).all()
    assert ((unc.mean(-1) - target) > 10 * se_u).all()
    # the closed form the lab trains on is this expectation
    exp_u = losses.itervaml_expected(P_hat, y, V, n_samples, calibrated=False)
    exp_c = losses.itervaml_expected(P_hat, y, V, n_samples, calibrated=True)
    assert torch.allclose(exp_u, (target + var / n_samples).mean())
    assert torch.allclose(exp_c, target.mean())


def test_deterministic_model_makes_both_losses_coincide():
    g, P_hat, V, y = _setup()
    D = deterministic_model(P_hat)
    assert torch.equal(D.sum(-1), torch.ones(5, dtype=DT)) and torch.equal(D.max(-1).values,
                                                                            torch.ones(5, dtype=DT))
    v = V[_draw(D, 1000, 4, g)]
    unc = losses.itervaml_samples(v, y.unsqueeze(-1))
    cal = losses.cvaml_samples(v, y.unsqueeze(-1))
    assert torch.equal(unc, cal)                                      # sample variance is 0
    exact = ((D @ V) - y) ** 2
    assert torch.allclose(unc, exact.unsqueeze(-1).expand_as(unc))
    assert torch.allclose(losses.itervaml_expected(D, y, V, 4, False),
                          losses.itervaml_expected(D, y, V, 4, True))


def test_expectation_form_zero_iff_value_equivalent():
    g, P_hat, V, _ = _setup(rows=6)
    P = P_hat.clone()
    assert losses.itervaml_expectation(P_hat, P, V) == 0
    # a different model with the same expected values is value-equivalent (Prop. 1) ...
    d = torch.randn(6, 6, generator=g, dtype=DT)
    basis = torch.stack([torch.ones(6, dtype=DT), V])                # directions to keep fixed
    d = d - d @ torch.linalg.pinv(basis) @ basis                      # d 1 = 0 and d V = 0
    P2 = P + 1e-3 * d
    assert (P2 > 0).all() and losses.itervaml_expectation(P2, P, V) < 1e-20
    # ... while the KL still sees the difference
    assert losses.kl_loss(P, torch.log(P2)) > 1e-9
    assert abs(float(losses.kl_loss(P, torch.log(P)))) < 1e-12


def test_mb_vaml_expected_matches_monte_carlo_rollouts():
    """(m,b) = (2,1): n model rollouts of 2 steps; expected targets y_j (model sampling only)."""
    g = torch.Generator().manual_seed(1)
    n, m, b, gamma, n_samples = 5, 2, 1, 0.8, 3
    P = softmax_model(torch.randn(n, n, generator=g, dtype=DT))
    P_hat = softmax_model(torch.randn(n, n, generator=g, dtype=DT))
    r, V, V_bar = (torch.randn(n, generator=g, dtype=DT) for _ in range(3))
    y0 = losses.bellman_b(P, r, V_bar, b, gamma)
    Y = torch.stack([y0, P @ y0, P @ P @ y0], dim=-1)                 # [n starts, m+1]
    for calibrated in (False, True):
        exact = losses.mb_vaml_expected(V, V_bar, P_hat, P, P_hat, P, r, m, b, gamma,
                                        n_samples, calibrated)
        draws = 100_000
        x1 = _draw(P_hat, draws, n_samples, g)                        # [n, draws, k]
        x2 = _step(P_hat, x1, g)
        x0 = torch.arange(n).view(n, 1, 1).expand_as(x1)
        v = torch.stack([V[x0], V[x1], V[x2]], dim=-2)                # [n, draws, m+1, k]
        mc = losses.mb_vaml_samples(v, Y.unsqueeze(1), calibrated)    # [n, draws]
        se = (mc.var(-1) / draws).sum().sqrt() / n
        assert abs(mc.mean() - exact) < 4 * se, (calibrated, mc.mean(), exact)
    gap = (losses.mb_vaml_expected(V, V_bar, P_hat, P, P_hat, P, r, m, b, gamma, n_samples,
                                   False)
           - losses.mb_vaml_expected(V, V_bar, P_hat, P, P_hat, P, r, m, b, gamma, n_samples,
                                     True))
    assert gap > 50 * se                                              # the variance terms


def test_environment_sampling_adds_only_a_model_independent_constant():
    """(1,0)-VAML with sampled environment targets y = V(x'), x' ~ P: E = expected + Var_P[V]."""
    g, P_hat, V, _ = _setup(n=6, rows=6)
    P = softmax_model(torch.randn(6, 6, generator=g, dtype=DT))
    draws = 200_000
    xs = _draw(P_hat, draws, 2, g)
    xe = torch.multinomial(P, draws, replacement=True, generator=g)   # [rows, draws]
    v = torch.stack([V.view(6, 1, 1).expand(6, draws, 2), V[xs]], dim=-2)   # j = 0, 1
    targets = torch.stack([V.view(6, 1).expand(6, draws), V[xe]], dim=-1)
    mc = losses.mb_vaml_samples(v, targets, calibrated=True).mean(-1).mean()
    _, env_var = losses.value_moments(P, V)
    exact = losses.mb_vaml_expected(V, V, P_hat, P, P_hat, P, torch.zeros(6, dtype=DT), 1, 0,
                                    0.9, 2, True)
    assert abs(mc - exact - env_var.mean()) < 0.02 * env_var.mean()
    assert env_var.mean() > 0.5


def test_bootstrap_targets_by_hand():
    rewards = torch.tensor([1.0, 2.0, 3.0])                           # r(x0), r(x1), r(x2)
    v_bar = torch.tensor([10.0, 20.0, 30.0, 40.0])                    # V_bar(x0..x3)
    y = losses.bootstrap_targets(rewards, v_bar, m=1, b=2, gamma=0.5)
    assert torch.allclose(y, torch.tensor([1 + 0.5 * 2 + 0.25 * 30, 2 + 0.5 * 3 + 0.25 * 40]))
    y = losses.bootstrap_targets(rewards, v_bar, m=3, b=0, gamma=0.5)
    assert torch.equal(y, v_bar)


def test_calibration_needs_two_samples():
    with pytest.raises(ValueError):
        losses.cvaml_samples(torch.ones(3, 1), torch.zeros(3))
    with pytest.raises(ValueError):
        losses.itervaml_expected(torch.eye(3, dtype=DT), torch.zeros(3, dtype=DT),
                                 torch.ones(3, dtype=DT), 1, calibrated=True)


def _fixed_point(loss_fn, n, iters=400):
    """Iterate V <- argmin_V loss(V, V_bar = V_old): the loss is quadratic in V with a Hessian
    that does not depend on V_bar, so each argmin is one Newton step."""
    V = torch.zeros(n, dtype=DT)
    H = torch.autograd.functional.hessian(lambda x: loss_fn(x, V), V)
    for _ in range(iters):
        Vr = V.clone().requires_grad_(True)
        grad = torch.autograd.grad(loss_fn(Vr, V), Vr)[0]
        V = V - torch.linalg.solve(H, grad)
    return V


def test_muzero_value_is_biased_with_a_stochastic_model_calibrated_is_not():
    """Voelcker et al. 2025 Prop. 4: with the *true* stochastic kernel as the model, the fixed point of the
    uncalibrated (1,1) MuZero value loss is not V; the calibrated one recovers V exactly."""
    g = torch.Generator().manual_seed(3)
    n, gamma = 8, 0.9
    P = softmax_model(torch.randn(n, n, generator=g, dtype=DT))
    r = torch.randn(n, generator=g, dtype=DT)
    V_true = torch.linalg.solve(torch.eye(n, dtype=DT) - gamma * P, r)

    def loss(calibrated, n_samples):
        return lambda V, V_bar: losses.mb_vaml_expected(V, V_bar, P, P, P, P, r, 1, 1, gamma,
                                                        n_samples, calibrated)
    V_cal = _fixed_point(loss(True, 2), n)
    V_unc = _fixed_point(loss(False, 1), n)
    err = lambda V: float((V - V_true).norm() / V_true.norm())        # noqa: E731
    assert err(V_cal) < 1e-8
    assert err(V_unc) > 1e-2
    # the bias shrinks with more samples (Var / n)
    assert err(_fixed_point(loss(False, 16), n)) < err(V_unc) / 4
    # a deterministic environment and model: no bias
    D = deterministic_model(P)
    V_det = torch.linalg.solve(torch.eye(n, dtype=DT) - gamma * D, r)
    V_d = _fixed_point(lambda V, V_bar: losses.mb_vaml_expected(V, V_bar, D, D, D, D, r, 1, 1,
                                                                gamma, 1, False), n)
    assert float((V_d - V_det).norm()) < 1e-8
