"""The ``latent`` backbone, its TD behaviour learner and the ``vaml`` objective (Voelcker et al.
2025 §4, §7, App. C): the calibrated loss's expectation, who trains what, TD3 targets, data
mixing, MPC, and the config errors."""

import pytest
import torch

from vawm.agent import Agent
from vawm.config import ConfigError, build_config
from vawm.garnet.losses import mb_vaml_samples as vaml_loss
from vawm.objectives import Context
from vawm.replay import random_batch

INFO = {"obs_kind": "vector", "obs_shape": (5,), "discrete": False, "action_dim": 2}


def _agent(*sets, preset="latent-cpu,tiny"):
    cfg = build_config(preset, {"env": "dmc:cartpole-swingup"}, list(sets))
    torch.manual_seed(0)
    return cfg, Agent(cfg, INFO)


def _batch(cfg, seed=0):
    b = random_batch(cfg, INFO, seed=seed)
    b["is_first"][:] = False                 # one episode: every window is valid
    b["is_terminal"][:] = False
    return b


# ------------------------------------------------------------------ the calibrated loss
@pytest.mark.parametrize("n", [2, 4])
def test_calibrated_loss_is_unbiased_on_a_gaussian_model(n):
    """x^ ~ N(mu, sigma) (the latent model's Gaussian), V linear: E[CVAML] = (E V(x^) - y)^2 and
    E[VAML] = that + Var[V(x^)] / n (Voelcker et al. 2025 eq. 3, §4.2), by Monte Carlo over 2e5
    independent n-sample sets, within 4 standard errors."""
    torch.manual_seed(0)
    cfg, agent = _agent("latent.dynamics=gaussian", "latent.min_log_std=-1.0",
                        "latent.max_log_std=0.0")
    wm = agent.wm
    z, a = torch.randn(1, wm.feat_dim), torch.rand(1, 2) * 2 - 1
    w = torch.randn(wm.feat_dim, dtype=torch.float64)
    with torch.no_grad():
        mean, log_std = wm.predict(z, a)
        S = 200_000
        x = wm.next_latent(z.expand(S * n, -1), a.expand(S * n, -1)).double()
    v = (x @ w).reshape(S, n)                                         # V of each model sample
    ev = float(mean.double()[0] @ w)
    var = float((log_std.double()[0].exp() ** 2 * w ** 2).sum())
    y = torch.full((S, 1), ev + 0.7, dtype=torch.float64)             # a target off the mean
    cal = vaml_loss(v.unsqueeze(1), y, True)
    unc = vaml_loss(v.unsqueeze(1), y, False)
    for got, want in ((cal, 0.49), (unc, 0.49 + var / n)):
        se = float(got.std()) / S ** 0.5
        assert abs(float(got.mean()) - want) < 4 * se, (float(got.mean()), want, se)
    # per draw the two differ by exactly the sample variance / n
    torch.testing.assert_close(unc - cal, v.var(-1, unbiased=True) / n)


# ------------------------------------------------------------------ who trains what
def _trained(agent):
    """Critics as after some training (their output layers start at zero: no gradient)."""
    with torch.no_grad():
        for p in [*agent.ac.critic.parameters(), *agent.ac.slow_critic.parameters()]:
            p.normal_(0, 0.3)


def _grads(module):
    return {k: p.grad is not None and bool(p.grad.abs().sum() > 0)
            for k, p in module.named_parameters()}


@pytest.mark.parametrize("b", [0, 1])
def test_vaml_trains_model_and_only_muzero_trains_the_critic(b):
    cfg, agent = _agent(f"vaml.b={b}", "vaml.samples=4", "vaml.calibrated=true",
                        "latent.dynamics=gaussian", preset=f"latent-cpu,tiny,cvaml-1-{b}")
    _trained(agent)
    batch = _batch(cfg)
    obs = agent.wm.observe(batch)
    ctx = Context(agent.wm, agent.ac, 0, batch)
    loss = agent.objective.contribute(obs, ctx).losses["loss"]
    loss.backward()
    wm = _grads(agent.wm)
    assert any(v for k, v in wm.items() if k.startswith("dynamics."))
    assert any(v for k, v in wm.items() if k.startswith("encoder."))
    assert not any(v for k, v in wm.items() if k.startswith(("reward.", "target_encoder.")))
    assert not any(_grads(agent.ac.actor).values())
    assert not any(_grads(agent.ac.slow_critic).values())
    assert any(_grads(agent.ac.critic).values()) == (b == 1)


def test_encoder_td_loss_reaches_the_encoder_only():
    """MAD-TD's switch: the real TD loss with the critic frozen, times its scale, reaches the
    encoder and nothing else; off by default (no term at all)."""
    cfg, agent = _agent("td.encoder_td=true", "td.encoder_td_scale=0.5")
    _trained(agent)
    batch = _batch(cfg)
    obs = agent.wm.observe(batch)
    own = agent.ac.model_losses(agent.wm, obs, batch)["encoder_td"]
    with torch.no_grad():
        y = agent.ac.td_target(obs.extras["target"][:, 0], batch["reward"][:, 1].float(),
                               torch.ones(batch["reward"].shape[0]))
        q = agent.ac.q(obs.post[:, 0], batch["action"][:, 0])
    torch.testing.assert_close(own.detach(), 0.5 * (q - y).pow(2).mean(-1).sum())
    own.backward()
    wm = _grads(agent.wm)
    assert any(v for k, v in wm.items() if k.startswith("encoder."))
    assert not any(v for k, v in wm.items() if not k.startswith("encoder."))
    assert not any(_grads(agent.ac).values())                        # critic frozen, no actor
    cfg, agent = _agent()
    assert agent.ac.model_losses(agent.wm, agent.wm.observe(_batch(cfg)), _batch(cfg)) == {}


def test_simnorm_latents_are_softmaxes_over_groups():
    cfg, agent = _agent("latent.simnorm=4")
    z = agent.wm.encode(torch.randn(6, 5))
    groups = z.unflatten(-1, (-1, 4))
    assert (groups > 0).all()
    torch.testing.assert_close(groups.sum(-1), torch.ones(6, agent.wm.feat_dim // 4))
    nxt = agent.wm.next_latent(z, torch.zeros(6, 2)).unflatten(-1, (-1, 4))
    torch.testing.assert_close(nxt.sum(-1), torch.ones(6, agent.wm.feat_dim // 4))


def test_target_encoder_follows_by_ema_and_one_update_runs():
    cfg, agent = _agent("latent.target_tau=0.25")
    wm = agent.wm
    before = [p.detach().clone() for p in wm.target_encoder.parameters()]
    m = agent.train_step(_batch(cfg))
    assert all(torch.isfinite(torch.tensor(v)) for v in m.values())
    for t, p, old in zip(wm.target_encoder.parameters(), wm.encoder.parameters(), before,
                         strict=True):
        torch.testing.assert_close(t, 0.75 * old + 0.25 * p.detach())


# ------------------------------------------------------------------ TD3 targets, data mixing
def _q_by_hand(twin, z, a, head):
    x = torch.cat([z, a], -1)
    n = len(twin.w)
    for i in range(n):
        x = x @ twin.w[i][head] + twin.b[i][head, 0]
        if i == 0:
            mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
            x = torch.tanh((x - mu) / torch.sqrt(var + 1e-5) * twin.ln_w[head, 0]
                           + twin.ln_b[head, 0])
        elif i < n - 1:
            x = torch.nn.functional.elu(x)
    return x.squeeze(-1)


def test_twin_critic_td3_target_by_hand():
    cfg, agent = _agent("td.gamma=0.9")
    ac = agent.ac
    with torch.no_grad():
        for p in ac.slow_critic.parameters():
            p.normal_(0, 0.5)
    z1, r = torch.randn(6, agent.wm.feat_dim), torch.randn(6)
    live = torch.tensor([1.0, 0, 1, 1, 0, 1])
    a1 = torch.tanh(ac.actor(z1))
    q = torch.stack([_q_by_hand(ac.slow_critic, z1, a1, h) for h in (0, 1)])
    want = r + 0.9 * live * q.min(0).values
    torch.testing.assert_close(ac.td_target(z1, r, live), want)
    assert not torch.equal(q[0], q[1])                                # two different critics


@pytest.mark.parametrize("p_real", [0.5, 0.9, 1.0])
def test_data_mixing_replaces_the_configured_fraction(p_real):
    cfg, agent = _agent(f"td.proportion_real={p_real}", "run.batch_size=10",
                        "latent.dynamics=deterministic")
    batch = _batch(cfg)
    mb = agent.ac.mixed_batch(agent.wm, batch)
    n_real = int(10 * p_real)
    assert int(mb["model"].sum()) == 10 - n_real
    wm, ac = agent.wm, agent.ac
    with torch.no_grad():
        z0 = wm.encode(batch["obs"][:, 0])
        real_next = wm.encode(batch["obs"][:, 1], target=True)
        a_pi = ac.pi(z0)
    torch.testing.assert_close(mb["z1"][:n_real], real_next[:n_real])
    torch.testing.assert_close(mb["action"][:n_real], batch["action"][:n_real, 0])
    torch.testing.assert_close(mb["reward"][:n_real], batch["reward"][:n_real, 1])
    if n_real < 10:                                                   # on-policy model rows
        torch.testing.assert_close(mb["action"][n_real:], a_pi[n_real:])
        with torch.no_grad():
            torch.testing.assert_close(mb["z1"][n_real:], wm.predict(z0, a_pi)[0][n_real:])
            torch.testing.assert_close(mb["reward"][n_real:], wm.reward_of(z0, a_pi)[n_real:])


def test_model_free_td3_uses_no_model():
    cfg, agent = _agent(preset="latent-cpu,tiny,td3")
    batch = _batch(cfg)
    assert int(agent.ac.mixed_batch(agent.wm, batch)["model"].sum()) == 0
    obs = agent.wm.observe(batch)
    assert float(agent.wm.loss(obs)[0].detach()) == 0.0
    agent.train_step(batch)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in agent.wm.dynamics.parameters())


# ------------------------------------------------------------------ MPC
class _Quadratic(torch.nn.Module):
    """A 'model' whose one-step reward is -||a - a*||^2 and whose latent never changes."""
    cfg = None

    def __init__(self, target):
        super().__init__()
        self.target = target

    def reward_of(self, z, a):
        return -(a - self.target).pow(2).sum(-1)

    def next_latent(self, z, a):
        return z


def test_mppi_improves_a_quadratic_over_the_proposal():
    cfg, agent = _agent("td.mpc_samples=256", "td.mpc_elites=32", "td.mpc_iterations=6",
                        "td.mpc_temperature=0.05")
    ac = agent.ac                          # zero-initialised critic outputs: Q = 0 exactly
    z = torch.randn(8, agent.wm.feat_dim)
    target = torch.tensor([0.6, -0.4])
    model = _Quadratic(target)
    g = torch.Generator().manual_seed(0)
    plan = ac.plan(model, z, generator=g)
    prop = ac.pi(z).detach()
    obj = lambda a: model.reward_of(None, a)                          # noqa: E731
    assert (obj(plan) > obj(prop)).all()
    assert (plan - target).abs().max() < 0.15
    assert plan.shape == (8, 2) and (plan.abs() <= 1).all()


# ------------------------------------------------------------------ configs
def test_config_errors_are_one_line():
    with pytest.raises(ConfigError, match="samples >= 2"):
        build_config("latent-cpu,cvaml-1-0", sets=["vaml.samples=1"])
    with pytest.raises(ConfigError, match="MuZero setting"):
        build_config("tiny", {"objective": "vaml"}, ["vaml.b=1"])
    with pytest.raises(ConfigError, match="batch_length"):
        build_config("latent-cpu,muzero", sets=["run.batch_length=2"])
    with pytest.raises(ConfigError, match="must divide"):
        build_config("latent-cpu", sets=["latent.simnorm=7"])
    cfg = build_config("latent")
    assert (cfg.run.batch_size, cfg.td.proportion_real, cfg.latent.latent, cfg.optim.ac_clip,
            cfg.latent.encoder_lr, cfg.optim.model_lr, cfg.td.gamma) == \
        (128, 0.9, 512, 10.0, 1e-4, 3e-4, 0.99)
    c = build_config("latent,cvaml-1-1")
    assert (c.objective, c.vaml.m, c.vaml.b, c.vaml.samples, c.vaml.calibrated) == \
        ("vaml", 1, 1, 4, True)


def test_vaml_runs_on_rssm_with_prior_samples():
    cfg = build_config("tiny", {"objective": "vaml"}, ["vaml.samples=3", "vaml.calibrated=true"])
    info = {"obs_kind": "vector", "obs_shape": (4,), "discrete": True, "action_dim": 2}
    torch.manual_seed(0)
    agent = Agent(cfg, info)
    m = agent.train_step(random_batch(cfg, info))
    assert "vaml/loss" in m and "vaml/uncalibrated" in m


@pytest.mark.parametrize("b", [0, 1])
def test_calibration_is_void_on_a_deterministic_model(b):
    """A deterministic model's n samples are one prediction: s^2 = 0, so (m,b)-CVAML trains
    exactly as (m,b)-VAML (why experiments/cvaml-dmc-cpu*.yaml run no deterministic CVAML cells);
    on a Gaussian model the two differ."""
    def params(preset, dynamics):
        cfg, agent = _agent(f"latent.dynamics={dynamics}", preset=f"latent-cpu,tiny,{preset}")
        _trained(agent)
        torch.manual_seed(1)
        for seed in range(3):
            agent.train_step(_batch(cfg, seed))
        return [p.detach().clone() for p in agent.parameters()]

    for dynamics, same in (("deterministic", True), ("gaussian", False)):
        plain, cal = params(f"vaml-1-{b}", dynamics), params(f"cvaml-1-{b}", dynamics)
        assert all(torch.equal(p, q) for p, q in zip(plain, cal, strict=True)) == same, dynamics
