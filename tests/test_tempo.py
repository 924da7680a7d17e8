"""TEMPO (Yuan et al. 2023): weight range, weights before free bits, the exact look-ahead meta-gradient
against brute force, finite differences against it, the sign of the meta step, a frozen critic, and
a short training run."""

import copy
import dataclasses
import json

import pytest
import torch
from torch.func import functional_call

import vawm.worldmodels.rssm as rssm_mod
from vawm.agents.actor_critic import ActorCritic
from vawm.cli import main
from vawm.config import ConfigError, build_config
from vawm.nets.dist import symlog
from vawm.objectives import Context
from vawm.objectives.tempo import (
    MetaWeighter,
    Tempo,
    meta_surrogate,
    mixed_product_exact,
    mixed_product_fd,
    step_losses,
    upper_loss,
)
from vawm.worldmodels.base import Observed
from vawm.worldmodels.rssm import RSSM


def _batch(B=3, T=5, D=4, A=2, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    act = torch.nn.functional.one_hot(torch.randint(0, A, (B, T), generator=g), A).to(dtype)
    z = torch.zeros(B, T, dtype=torch.bool)
    return {"obs": torch.randn(B, T, D, generator=g, dtype=dtype), "action": act,
            "reward": torch.randn(B, T, generator=g, dtype=dtype), "is_first": z.clone(),
            "is_last": z.clone(), "is_terminal": z.clone()}


def _setup(*sets, dtype=torch.float32, batch_seed=1):
    """Tiny RSSM + actor-critic (critic made non-trivial) + TEMPO, and a Context for update 0."""
    cfg = build_config("tiny", sets=["tempo.units=16", "tempo.layers=2", *sets])
    torch.manual_seed(0)
    wm = RSSM(cfg.rssm, (4,), 2, False).to(dtype)
    ac = ActorCritic(wm.feat_dim, 2, True, cfg.agent, cfg.optim).to(dtype)
    with torch.no_grad():                      # the critic's head starts at zero: give it a slope
        torch.nn.init.normal_(ac.critic.net.out.weight, std=0.5)
    ac.slow_critic.load_state_dict(ac.critic.state_dict())
    tempo = Tempo(cfg.tempo, wm.feat_dim).to(dtype)
    b = _batch(dtype=dtype, seed=batch_seed)
    return cfg, wm, ac, tempo, b, Context(wm, ac, 0, b, cfg.optim.model_lr)


@pytest.fixture
def smooth(monkeypatch):
    """Make the RSSM a smooth deterministic function of theta (soft latents instead of samples,
    float64-safe encoder), so look-ahead, finite differences and autograd all see one function."""
    monkeypatch.setattr(rssm_mod, "sample_categorical_st", lambda logits: logits.exp())
    monkeypatch.setattr(RSSM, "encode", lambda self, obs: self.encoder(symlog(obs)))


def _lookahead_upper(wm, tempo, ctx, b, w, eta, seed=None):
    """L_upper after one SGD step of the world model on its weighted loss (eq. 7), brute force;
    ``seed`` fixes the sampling noise of both observes."""
    m = copy.deepcopy(wm)
    if seed is not None:
        torch.manual_seed(seed)
    loss, _ = m.loss(m.observe(b), w)
    params = list(m.parameters())
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            if g is not None:
                p -= eta * g
    if seed is not None:
        torch.manual_seed(seed)
    return upper_loss(*tempo.values(m.observe(b), ctx)).item()


def _prepare(tempo, wm, ctx, b):
    obs = wm.observe(b)
    v_post, v_prior = tempo.values(obs, ctx)
    return obs, v_post, v_prior, upper_loss(v_post, v_prior)


# ---------------------------------------------------------------------------- weights
def test_weight_range_and_contribution():
    torch.manual_seed(0)
    net = MetaWeighter(10, 8, 2, out_norm=False)
    with torch.no_grad():
        net.net[-1].weight.mul_(100.0)                            # saturate the sigmoid
    x = torch.randn(64, 10)
    w = net(x)
    assert w.shape == (64,) and w.min() >= 0.75 and w.max() <= 1.25
    assert (w < 0.8).any() and (w > 1.2).any()                    # the range is actually used
    cfg, wm, ac, tempo, b, ctx = _setup()
    contrib = tempo.contribute(wm.observe(b), ctx)
    w = contrib.weights
    assert w.shape == (3, 5) and not w.requires_grad
    assert w.min() >= 0.75 and w.max() <= 1.25
    assert not contrib.losses
    assert {"tempo/upper_loss", "tempo/w_mean", "tempo/w_std", "tempo/meta_gradnorm"} <= set(
        contrib.metrics)
    x = torch.randn(6, 2 * wm.feat_dim + 2)
    w_train = tempo.weighter(x)
    tempo.eval()                                                  # BatchNorm keeps batch statistics
    assert torch.allclose(tempo.weighter(x), w_train)


def test_weights_multiply_terms_before_free_bits():
    cfg, wm, ac, tempo, b, ctx = _setup("rssm.free_nats=0.05")
    obs = wm.observe(b)
    t, c = obs.terms, cfg.rssm
    w = torch.linspace(0.75, 1.25, 15).reshape(3, 5)
    kl = t["dyn"].detach()
    w[0, 0] = 0.9 * c.free_nats / kl[0, 0]                        # w * KL just below free bits
    pred = c.recon_scale * t["recon"] + c.reward_scale * t["reward"] + c.cont_scale * t["cont"]
    hand = (c.beta_pred * w * pred + c.beta_dyn * torch.clamp(w * t["dyn"], min=c.free_nats)
            + c.beta_rep * torch.clamp(w * t["rep"], min=c.free_nats)).mean()
    loss, _ = wm.loss(obs, w)
    assert torch.allclose(loss, hand, rtol=1e-5)
    # l_t = dL/dw_t * N: KL terms only where w_t KL_t exceeds the free bits
    on = (w * kl > c.free_nats).float()
    l_hand = c.beta_pred * pred + (c.beta_dyn + c.beta_rep) * kl * on
    assert on[0, 0] == 0 and on.sum() > 0
    detached = Observed(obs.post.detach(), obs.prior.detach(), obs.kl.detach(),
                        {k: v.detach() for k, v in t.items()}, post_logits=obs.post_logits.detach(),
                        prior_logits=obs.prior_logits.detach())
    assert torch.allclose(step_losses(wm, detached, w), l_hand.detach(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- meta-gradient
def test_exact_meta_gradient_matches_lookahead_brute_force(smooth):
    cfg, wm, ac, tempo, b, ctx = _setup("rssm.cont_scale=0", "rssm.free_nats=0.01",
                                        dtype=torch.float64)
    eta = 1e-4
    obs, v_post, v_prior, up = _prepare(tempo, wm, ctx, b)
    x = tempo.inputs(obs, v_post, v_prior)
    alpha = dict(tempo.weighter.named_parameters())
    w = tempo.weighter(x).reshape(3, 5)
    c, _, _ = tempo.mixed_product(obs, ctx, w, up)
    grads = torch.autograd.grad(meta_surrogate(w, c, eta), list(alpha.values()))
    gen = torch.Generator().manual_seed(3)
    d = {n: torch.randn(p.shape, generator=gen, dtype=p.dtype) for n, p in alpha.items()}
    predicted = sum((g * d[n]).sum() for g, n in zip(grads, alpha, strict=True)).item()

    def F(s):
        moved = {n: p.detach() + s * d[n] for n, p in alpha.items()}
        w_s = functional_call(tempo.weighter, moved, (x,)).reshape(3, 5).detach()
        return _lookahead_upper(wm, tempo, ctx, b, w_s, eta)

    h = 1e-3
    brute = (F(h) - F(-h)) / (2 * h)
    assert abs(predicted) > 1e-9
    assert brute == pytest.approx(predicted, rel=2e-2)


def test_finite_diff_agrees_with_exact(smooth):
    cfg, wm, ac, tempo, b, ctx = _setup("rssm.cont_scale=0", dtype=torch.float64)
    obs, v_post, v_prior, up = _prepare(tempo, wm, ctx, b)
    w = tempo.weights(obs, v_post, v_prior)
    params = wm.representation_parameters()
    g_up = list(torch.autograd.grad(up, params, retain_graph=True))
    exact, _ = mixed_product_exact(wm, obs, w, params, g_up)
    fd, masked = mixed_product_fd(wm, b, w, params, g_up, eps=1e-4)
    assert masked == 0 and exact.abs().max() > 1e-6
    assert torch.allclose(fd, exact, rtol=1e-4, atol=1e-6 * exact.abs().max().item())
    # and through the objective's switch, with the parameters left untouched
    before = [p.detach().clone() for p in params]
    tempo.cfg.meta_grad, tempo.cfg.fd_eps = "finite_diff", 1e-4
    c, _, _ = tempo.mixed_product(obs, ctx, w, up)
    assert torch.allclose(c, exact, rtol=1e-4, atol=1e-6 * exact.abs().max().item())
    assert all(torch.equal(p, q) for p, q in zip(params, before, strict=True))


def test_finite_diff_with_sampled_latents_keeps_noise_fixed():
    """With real straight-through samples finite differences see the sampled loss at fixed noise
    (no straight-through path), so they agree with ``exact`` only roughly; the RNG and the graph of
    the update are left intact."""
    cfg, wm, ac, tempo, b, ctx = _setup()
    torch.manual_seed(5)
    obs, v_post, v_prior, up = _prepare(tempo, wm, ctx, b)
    w = tempo.weights(obs, v_post, v_prior)
    params = wm.representation_parameters()
    g_up = list(torch.autograd.grad(up, params, retain_graph=True))
    exact, _ = mixed_product_exact(wm, obs, w, params, g_up)
    torch.manual_seed(5)                                          # the noise of ``obs``
    state = torch.get_rng_state()
    fd, _ = mixed_product_fd(wm, b, w, params, g_up, eps=1e-3)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.corrcoef(torch.stack([fd.flatten(), exact.flatten()]))[0, 1] > 0.9
    wm.loss(obs, w.detach())[0].backward()                  # the graph of the update is intact


def test_meta_step_lowers_upper_loss_after_the_world_model_step(smooth):
    """THE SIGN: L_upper measured after a world-model SGD step with the weights from after the meta
    step is lower than with the weights from before it; the public code's sign raises it."""
    results = {}
    for sign in ("lookahead", "public_code"):
        cfg, wm, ac, tempo, b, ctx = _setup("rssm.cont_scale=0", "rssm.free_nats=0.01",
                                            f"tempo.sign={sign}", "tempo.lr=1e-3",
                                            "tempo.lookahead_lr=0.01", dtype=torch.float64)
        obs, v_post, v_prior, _ = _prepare(tempo, wm, ctx, b)
        w_before = tempo.weights(obs, v_post, v_prior).detach()
        tempo.contribute(obs, ctx)                                # one meta step (Adam)
        w_after = tempo.weights(obs, v_post, v_prior).detach()
        assert not torch.equal(w_before, w_after)
        before = _lookahead_upper(wm, tempo, ctx, b, w_before, 0.01)
        after = _lookahead_upper(wm, tempo, ctx, b, w_after, 0.01)
        results[sign] = after - before
    assert results["lookahead"] < 0 < results["public_code"]


@pytest.mark.parametrize("sign", ["lookahead", "public_code"])
def test_meta_step_sign_on_ten_batches(smooth, sign):
    """At a look-ahead step small enough for the first-order expansion, the meta step lowers
    L_upper-after-the-world-model-step on every one of 10 random batches (the public code's sign
    raises it on every one): the sign does not hang on one lucky batch."""
    changes = []
    for seed in range(10):
        cfg, wm, ac, tempo, b, ctx = _setup("rssm.cont_scale=0", "rssm.free_nats=0.01",
                                            f"tempo.sign={sign}", "tempo.lr=1e-4",
                                            "tempo.lookahead_lr=1e-3", dtype=torch.float64,
                                            batch_seed=100 + seed)
        obs, v_post, v_prior, _ = _prepare(tempo, wm, ctx, b)
        w_before = tempo.weights(obs, v_post, v_prior).detach()
        tempo.contribute(obs, ctx)
        w_after = tempo.weights(obs, v_post, v_prior).detach()
        changes.append(_lookahead_upper(wm, tempo, ctx, b, w_after, 1e-3)
                       - _lookahead_upper(wm, tempo, ctx, b, w_before, 1e-3))
    assert all(c < 0 for c in changes) if sign == "lookahead" else all(c > 0 for c in changes), \
        changes


@pytest.mark.parametrize("backbone", ["rssm", "tssm", "vae-lstm"])
def test_weighter_moves_at_the_papers_settings(backbone):
    """tempo-paper (App. C: 4 hidden + output dense layers, Adam eps 1e-5, Alg. 1's meta gradient)
    moves the weighter on every backbone; Alg. 1's gradient is the look-ahead one times N/eta."""
    from vawm.agent import Agent
    from vawm.replay import random_batch
    info = {"obs_kind": "vector", "obs_shape": (4,), "discrete": True, "action_dim": 2}
    moved, norm = {}, {}
    for scale in ("alg1", "lookahead"):
        cfg = build_config("tiny,tempo-paper", {"backbone": backbone, "objective": "tempo"},
                           ["tempo.units=32", f"tempo.meta_scale={scale}"])
        assert cfg.tempo.eps == 1e-5 and cfg.tempo.layers == 4 and not cfg.tempo.out_norm
        torch.manual_seed(0)
        agent = Agent(cfg, info)
        with torch.no_grad():                  # a trained critic: values that differ by state
            torch.nn.init.normal_(agent.ac.critic.net.out.weight, std=0.5)
        agent.ac.slow_critic.load_state_dict(agent.ac.critic.state_dict())
        before = [p.detach().clone() for p in agent.objective.weighter.parameters()]
        norm[scale] = agent.train_step(random_batch(cfg, info, seed=0))["tempo/meta_gradnorm"]
        for k in range(1, 3):
            agent.train_step(random_batch(cfg, info, seed=k))
        moved[scale] = max(float((p.detach() - q).abs().max()) for p, q in
                           zip(agent.objective.weighter.parameters(), before, strict=True))
    assert moved["alg1"] > 5e-5, moved                   # ~lr per Adam step, not weight decay
    N = cfg.run.batch_size * cfg.run.batch_length
    assert norm["alg1"] == pytest.approx(norm["lookahead"] * N / cfg.optim.model_lr, rel=1e-3)


def test_meta_step_sign_with_sampled_latents():
    """The same check on the real (straight-through sampled) RSSM, noise fixed by the seed."""
    results = {}
    for sign in ("lookahead", "public_code"):
        cfg, wm, ac, tempo, b, ctx = _setup(f"tempo.sign={sign}", "tempo.lr=1e-3",
                                            "tempo.lookahead_lr=0.01")
        torch.manual_seed(0)
        obs, v_post, v_prior, _ = _prepare(tempo, wm, ctx, b)
        w_before = tempo.weights(obs, v_post, v_prior).detach()
        tempo.contribute(obs, ctx)
        w_after = tempo.weights(obs, v_post, v_prior).detach()
        results[sign] = (_lookahead_upper(wm, tempo, ctx, b, w_after, 0.01, seed=0)
                         - _lookahead_upper(wm, tempo, ctx, b, w_before, 0.01, seed=0))
    assert results["lookahead"] < 0 < results["public_code"]


# ---------------------------------------------------------------------------- plumbing
def test_critic_receives_no_gradient():
    for source in ("critic", "slow"):
        cfg, wm, ac, tempo, b, ctx = _setup(f"tempo.value_source={source}",
                                            "tempo.value_norm=moving")
        obs = wm.observe(b)
        contrib = tempo.contribute(obs, ctx)
        loss, _ = wm.loss(obs, contrib.weights)
        loss.backward()
        assert all(p.grad is None for p in ac.parameters())
        assert any(p.grad is not None for p in tempo.weighter.parameters())
        assert wm.encoder.body[0].linear.weight.grad is not None


def test_every_k_and_checkpoint_of_meta_optimiser():
    cfg, wm, ac, tempo, b, ctx = _setup("tempo.every=2")
    obs = wm.observe(b)
    p0 = [p.detach().clone() for p in tempo.weighter.parameters()]
    ctx.update = 1
    out = tempo.contribute(obs, ctx)
    assert "tempo/meta_gradnorm" not in out.metrics
    assert all(torch.equal(p, q) for p, q in zip(tempo.weighter.parameters(), p0, strict=True))
    ctx.update = 2
    tempo.contribute(obs, ctx)
    assert not all(torch.equal(p, q) for p, q in zip(tempo.weighter.parameters(), p0, strict=True))
    fresh = Tempo(cfg.tempo, wm.feat_dim)
    fresh.load_state_dict(tempo.state_dict())
    assert fresh.opt.state_dict()["state"][0]["step"] == 1
    with pytest.raises(ConfigError, match="value_norm"):
        Tempo(build_config("tiny", sets=["tempo.value_norm=ema"]).tempo, 8)


def test_tiny_training_run(tmp_path):
    run = tmp_path / "run"
    rc = main(["train", "--preset", "tiny", "--objective", "tempo", "--steps", "54", "--run-dir",
               str(run), "--no-progress", "--set", "run.eval_episodes=1"])
    assert rc == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("tempo/upper_loss" in r and 0.75 <= r["tempo/w_mean"] <= 1.25 for r in rows)


@pytest.mark.parametrize("backbone", ["rssm", "tssm", "vae-lstm"])
def test_one_backward_takes_the_two_backward_step(backbone):
    """#17: with ``tempo.one_backward`` the double backward's first pass is the world-model
    step's gradient; three updates take the same steps (every world-model, critic, actor and
    weighter parameter) and log the same meta-gradient as two backward passes, to float
    rounding (the sums run in another order)."""
    from vawm.agent import Agent
    from vawm.replay import random_batch
    info = {"obs_kind": "vector", "obs_shape": (4,), "discrete": True, "action_dim": 2}
    params, logs = {}, {}
    for one in (True, False):
        cfg = build_config("tiny", {"backbone": backbone, "objective": "tempo"},
                           ["tempo.units=32", f"tempo.one_backward={str(one).lower()}"])
        torch.manual_seed(0)
        agent = Agent(cfg, info)
        with torch.no_grad():                  # a trained critic: values that differ by state
            for p in agent.ac.critic.parameters():
                p.normal_(0, 0.3)
        agent.ac.slow_critic.load_state_dict(agent.ac.critic.state_dict())
        logs[one] = [agent.train_step(random_batch(cfg, info, seed=k)) for k in range(3)]
        params[one] = {k: v.detach().clone() for k, v in agent.named_parameters()}
    assert logs[True][0]["tempo/c_std"] > 0
    for a, b in zip(logs[True], logs[False], strict=True):
        for k in ("tempo/c_mean", "tempo/c_std", "tempo/meta_gradnorm", "wm/gradnorm"):
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-9), k
    for k, v in params[True].items():
        torch.testing.assert_close(v, params[False][k], rtol=1e-4, atol=1e-6, msg=k)


def test_naive_weights_normalise_the_task_aware_loss_plus_one():
    """Yuan et al. 2023 §3.4: w = (u - mean) / std + 1, u = (V_post - V_prior)^2 per step, with
    moving moments updated by the batch first (the first batch: its own mean and variance)."""
    from vawm.nets.normalize import MovingMoments
    from vawm.objectives.tempo import naive_weights, pearson_per_sequence
    g = torch.Generator().manual_seed(0)
    v_post, v_prior = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    m = MovingMoments(0.9)
    w = naive_weights(v_post, v_prior, m)
    u = (v_post - v_prior) ** 2
    torch.testing.assert_close(w, (u - u.mean()) / torch.sqrt(u.var(unbiased=False) + 1e-8) + 1)
    torch.testing.assert_close(w.mean(), torch.tensor(1.0))
    u2 = 4 * u                                                 # second batch: EMA moments
    w2 = naive_weights(2 * v_post, 2 * v_prior, m)
    mean = 0.9 * u.mean() + 0.1 * u2.mean()
    var = 0.9 * u.var(unbiased=False) + 0.1 * u2.var(unbiased=False)
    torch.testing.assert_close(w2, (u2 - mean) / torch.sqrt(var + 1e-8) + 1)
    # the Pearson metric: 1 for an affine copy, -1 for a negated one, per sequence
    torch.testing.assert_close(pearson_per_sequence(w, 3 * w + 2), torch.tensor(1.0))
    torch.testing.assert_close(pearson_per_sequence(w, -w), torch.tensor(-1.0))


def test_naive_weighting_trains_without_a_meta_step():
    from vawm.agent import Agent
    from vawm.replay import random_batch
    info = {"obs_kind": "vector", "obs_shape": (4,), "discrete": True, "action_dim": 2}
    cfg = build_config("tiny", {"objective": "tempo"}, ["tempo.units=16", "tempo.weighting=naive"])
    torch.manual_seed(0)
    agent = Agent(cfg, info)
    before = [p.detach().clone() for p in agent.objective.weighter.parameters()]
    m = agent.train_step(random_batch(cfg, info, seed=0))
    assert "tempo/meta_gradnorm" not in m and abs(m["tempo/w_mean"] - 1.0) < 1e-5
    assert all(torch.equal(p, q) for p, q in zip(agent.objective.weighter.parameters(), before,
                                                 strict=True))
    cfg = build_config("tiny", {"objective": "tempo"}, ["tempo.units=16", "tempo.every=1"])
    m = Agent(cfg, info).train_step(random_batch(cfg, info, seed=0))
    assert -1.0 <= m["tempo/naive_pearson"] <= 1.0


@pytest.mark.parametrize("inputs, din", [("DSV", 2 * (16 + 4 * 4) + 2), ("DV", 2 * 16 + 2),
                                         ("SV", 2 * 16 + 2), ("DS", 2 * (16 + 16)), ("V", 2)])
def test_weighter_input_subsets_remove_those_inputs(inputs, din):
    """Yuan et al. 2023 §3.5: the weighter reads only the chosen parts; changing a part it does
    not read leaves the weights unchanged, changing one it reads changes them."""
    from vawm.agent import Agent
    info = {"obs_kind": "vector", "obs_shape": (4,), "discrete": True, "action_dim": 2}
    cfg = build_config("tiny", {"objective": "tempo"},
                       ["tempo.units=16", f"tempo.inputs={inputs}", "rssm.deter=16",
                        "rssm.stoch=4", "rssm.classes=4"])
    torch.manual_seed(0)
    agent = Agent(cfg, info)
    tempo, wm = agent.objective, agent.wm
    assert tempo.weighter.net[0].in_features == din
    b = random_batch_for(cfg, info)
    obs = wm.observe(b)
    v = torch.randn(2, *obs.post.shape[:2])
    x = tempo.inputs(obs, v[0], v[1])
    D = slice(0, 16)
    for part, cols in (("D", D), ("S", wm.latent_slice)):
        post = obs.post.detach().clone()
        post[..., cols] += 1.0
        moved = tempo.inputs(dataclasses.replace(obs, post=post), v[0], v[1])
        assert torch.equal(moved, x) == (part not in inputs), part
    moved = tempo.inputs(obs, v[0] + 1.0, v[1])
    assert torch.equal(moved, x) == ("V" not in inputs)
    with pytest.raises(ConfigError, match="tempo.inputs"):
        build_config("tiny", {"objective": "tempo"}, ["tempo.inputs=DX"])


def random_batch_for(cfg, info):
    from vawm.replay import random_batch
    return random_batch(cfg, info, seed=0)


def test_weighter_activation_and_norm_switches():
    from torch import nn

    from vawm.objectives.tempo import MetaWeighter
    w = MetaWeighter(6, 8, 2, out_norm=False, act="tanh", norm="layer")
    kinds = [type(m) for m in w.net]
    assert kinds == [nn.Linear, nn.LayerNorm, nn.Tanh, nn.Linear, nn.LayerNorm, nn.Tanh, nn.Linear]
    w = MetaWeighter(6, 8, 1, out_norm=False, act="relu", norm="none")
    assert [type(m) for m in w.net] == [nn.Linear, nn.Identity, nn.ReLU, nn.Linear]
    out = w(torch.randn(5, 6))
    assert out.shape == (5,) and ((out >= 0.75) & (out <= 1.25)).all()
    with pytest.raises(ConfigError, match="out_norm"):
        build_config("tiny", {"objective": "tempo"}, ["tempo.norm=layer"])
