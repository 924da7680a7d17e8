"""Math of the DreamerV3 distributions: symlog, twohot, unimix, KL split, free bits."""

import torch

from vawm.nets.dist import (
    TwoHotSymlog,
    categorical_kl,
    free_bits,
    kl_split,
    sample_categorical_st,
    symexp,
    symlog,
    symlog_bins,
    twohot,
    unimix_logits,
)


def test_symlog_values_and_round_trip():
    x = torch.tensor([-1000.0, -2.0, -0.5, 0.0, 0.5, 3.0, 1e4], dtype=torch.float64)
    expected = torch.sign(x) * torch.log(torch.abs(x) + 1)
    assert torch.allclose(symlog(x), expected)
    assert torch.allclose(symexp(symlog(x)), x, rtol=1e-10)
    assert symlog(torch.tensor(torch.e - 1)).item() == torch.tensor(1.0).item()


def test_twohot_expectation_and_support():
    bins = symlog_bins(255).double()
    x = torch.tensor([-19.9, -3.3, 0.0, 0.01, 7.77, 19.99], dtype=torch.float64)
    enc = twohot(x, bins)
    assert torch.allclose(enc.sum(-1), torch.ones(6, dtype=torch.float64))
    assert torch.allclose((enc * bins).sum(-1), x)          # expectation recovers the value
    assert ((enc > 0).sum(-1) <= 2).all()                    # at most two neighbouring bins
    nz = [torch.nonzero(r).flatten() for r in enc]
    assert all(len(i) == 1 or (i[1] - i[0]).item() == 1 for i in nz)
    # outside the range: clipped to the edge bin
    edge = twohot(torch.tensor([50.0, -50.0], dtype=torch.float64), bins)
    assert edge[0, -1] == 1 and edge[1, 0] == 1


def test_twohot_symlog_head_mean_and_loss():
    bins = symlog_bins(255)
    y = torch.tensor([0.0, 5.0, -123.0])
    target = twohot(symlog(y), bins)
    logits = torch.log(target + 1e-30)                        # a head that predicts the twohot
    dist = TwoHotSymlog(logits, bins)
    assert torch.allclose(dist.mean, y, rtol=1e-4, atol=1e-4)
    # log_prob is the cross-entropy against the twohot target
    lp = dist.log_prob(y)
    ce = (target * torch.log_softmax(logits, -1)).sum(-1)
    assert torch.allclose(lp, ce)
    zero = TwoHotSymlog(torch.zeros(1, 255), bins)            # zero-init head predicts 0
    assert abs(zero.mean.item()) < 1e-5


def test_unimix_floor():
    logits = torch.tensor([[50.0, 0.0, -50.0, 0.0]])
    lp = unimix_logits(logits, 0.01)
    p = lp.exp()
    assert torch.allclose(p.sum(-1), torch.ones(1))
    assert (p >= 0.01 / 4 - 1e-7).all()
    assert torch.allclose(unimix_logits(logits, 0.0), torch.log_softmax(logits, -1))


def test_straight_through_sample():
    torch.manual_seed(0)
    logits = torch.log_softmax(torch.randn(2000, 3, 5), -1).requires_grad_(True)
    s = sample_categorical_st(logits)
    assert torch.allclose(s.detach().sum(-1), torch.ones(2000, 3))   # forward: one-hot
    assert torch.allclose(s.detach(), s.detach().round(), atol=1e-6)  # one-hot up to rounding
    freq = s.detach().mean(0)
    assert torch.allclose(freq, logits.exp().mean(0).detach(), atol=0.04)  # right law
    w = torch.randn(5)
    (s * w).sum().backward()                                    # backward: d probs
    expected = logits.detach().exp() * w                       # d exp(log p) / d log p = p
    assert torch.allclose(logits.grad, expected, atol=1e-6)


def test_categorical_sample_law_with_extreme_probabilities():
    torch.manual_seed(1)
    probs = torch.tensor([[0.97, 0.02, 0.0099, 0.0001], [0.25, 0.25, 0.25, 0.25]])
    n = 200_000
    s = sample_categorical_st(probs.log().expand(n, 2, 4))
    freq = s.detach().sum(0) / n                                # [2, 4]
    std = torch.sqrt(probs * (1 - probs) / n)
    assert ((freq - probs).abs() <= 5 * std + 1e-6).all(), freq   # within 5 standard errors
    assert s.detach().sum(-1).eq(1).all()                       # exactly one class each


def test_kl_split_stop_gradients():
    torch.manual_seed(0)
    q_raw = torch.randn(4, 3, 5, requires_grad=True)
    p_raw = torch.randn(4, 3, 5, requires_grad=True)
    q, p = torch.log_softmax(q_raw, -1), torch.log_softmax(p_raw, -1)
    dyn, rep = kl_split(q, p)
    assert torch.allclose(dyn, rep)
    expected = (q.exp() * (q - p)).sum((-2, -1))
    assert torch.allclose(dyn, expected)
    assert torch.allclose(categorical_kl(q, q), torch.zeros(4), atol=1e-6)
    g_q, g_p = torch.autograd.grad(dyn.sum(), [q_raw, p_raw], allow_unused=True)
    assert g_q is None or torch.count_nonzero(g_q) == 0       # dyn trains the prior only
    assert torch.count_nonzero(g_p) > 0
    g_q, g_p = torch.autograd.grad(rep.sum(), [q_raw, p_raw], allow_unused=True)
    assert torch.count_nonzero(g_q) > 0                       # rep trains the posterior only
    assert g_p is None or torch.count_nonzero(g_p) == 0


def test_free_bits_per_sample():
    kl = torch.tensor([0.3, 0.99, 1.5, 4.0], requires_grad=True)
    out = free_bits(kl, 1.0)
    assert torch.equal(out.detach(), torch.tensor([1.0, 1.0, 1.5, 4.0]))
    (g,) = torch.autograd.grad(out.sum(), kl)
    assert torch.equal(g, torch.tensor([0.0, 0.0, 1.0, 1.0]))  # clipped samples: no gradient


def test_symexp_twohot_is_raw_space():
    """DreamerV3 2025's symexp_twohot: bins symexp(linspace(-20, 20)), twohot in raw space."""
    from vawm.nets.dist import TwoHotSymexp, symexp_bins, twohot
    bins = symexp_bins(255)
    assert bins[127] == 0 and torch.allclose(bins, -bins.flip(0))
    y = torch.tensor([0.0, 0.3, -7.0, 123.0])
    t = twohot(y, bins)
    assert torch.allclose((t * bins).sum(-1), y, rtol=1e-5, atol=1e-6)     # raw-space interpolation
    logits = torch.log(t.clamp(min=1e-30))
    assert torch.allclose(TwoHotSymexp(logits, bins).mean, y, rtol=1e-4, atol=1e-5)
    # the log-likelihood is the cross-entropy with the raw-space twohot target
    lg = torch.randn(4, 255)
    expect = (t * torch.log_softmax(lg, -1)).sum(-1)
    assert torch.allclose(TwoHotSymexp(lg, bins).log_prob(y), expect)
