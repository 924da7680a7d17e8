"""Behaviour-learning math: lambda-returns, percentile scale, optimisers."""

import types

import pytest
import torch

from vawm.agents.actor_critic import lambda_returns
from vawm.nets.normalize import MovingMoments, PercentileScale
from vawm.nets.optim import LaProp, agc_


def test_lambda_returns_hand_computed():
    # H = 2, one trajectory. reward/cont index t = arriving at state t.
    r = torch.tensor([[0.0], [1.0], [2.0]])
    c = torch.tensor([[1.0], [1.0], [0.5]])
    v = torch.tensor([[10.0], [20.0], [30.0]])
    g, lam = 0.9, 0.8
    R1 = 2.0 + g * 0.5 * 30.0                                  # last step bootstraps with v_H
    R0 = 1.0 + g * 1.0 * ((1 - lam) * 20.0 + lam * R1)
    out = lambda_returns(r, c, v, g, lam)
    assert torch.allclose(out.squeeze(-1), torch.tensor([R0, R1]))


def test_lambda_returns_limits():
    torch.manual_seed(0)
    H, N, g = 6, 3, 0.95
    r, v = torch.randn(H + 1, N), torch.randn(H + 1, N)
    c = torch.ones(H + 1, N)
    td = lambda_returns(r, c, v, g, 0.0)                       # lambda = 0: one-step TD targets
    assert torch.allclose(td, r[1:] + g * v[1:])
    mc = lambda_returns(r, c, v, g, 1.0)                       # lambda = 1: discounted n-step return
    disc = g ** torch.arange(H, dtype=torch.float32)
    expect0 = (disc[:, None] * r[1:]).sum(0) + g**H * v[H]
    assert torch.allclose(mc[0], expect0, atol=1e-5)


def test_percentile_scale_ema_and_limit():
    s = PercentileScale(decay=0.99, limit=1.0)
    x = torch.arange(101, dtype=torch.float32)                  # 5th pct = 5, 95th = 95
    s.update(x)
    assert torch.isclose(s.low, torch.tensor(0.05)) and torch.isclose(s.high, torch.tensor(0.95))
    assert s.scale() == 1.0                                     # max(1, 0.9)
    for _ in range(2000):
        s.update(x)
    assert torch.isclose(s.scale(), torch.tensor(90.0), rtol=1e-3)
    small = PercentileScale()
    for _ in range(2000):
        small.update(torch.linspace(0, 0.1, 50))
    assert small.scale() == 1.0                                 # small returns are not scaled up


def test_moving_moments():
    m = MovingMoments(decay=0.5)
    m.update(torch.tensor([1.0, 3.0]))
    assert m.mean == 2.0 and m.var == 1.0
    m.update(torch.tensor([5.0, 5.0]))
    assert m.mean == 3.5 and m.var == 0.5


def test_laprop_first_steps_by_hand():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = LaProp([p], lr=0.1, betas=(0.9, 0.99), eps=0.0)
    g1 = torch.tensor([0.5, -4.0])
    p.grad = g1.clone()
    opt.step()
    # step 1: v_hat = g^2, update = g/|g| = sign(g), m_hat = sign(g) -> p -= lr * sign(g)
    assert torch.allclose(p.data, torch.tensor([0.9, -1.9]))
    g2 = torch.tensor([1.0, 1.0])
    p.grad = g2.clone()
    opt.step()
    v = (0.99 * (0.01 * g1**2) + 0.01 * g2**2) / (1 - 0.99**2)
    m = 0.9 * (0.1 * g1 / g1.abs()) + 0.1 * g2 / v.sqrt()
    expect = torch.tensor([0.9, -1.9]) - 0.1 * m / (1 - 0.9**2)
    assert torch.allclose(p.data, expect, atol=1e-6)


def test_agc_clips_relative_to_weight_norm():
    p = torch.nn.Parameter(torch.full((4,), 2.0))               # ||p|| = 4
    p.grad = torch.full((4,), 10.0)                             # ||g|| = 20
    agc_([p], clip=0.3)
    assert torch.isclose(p.grad.norm(), torch.tensor(1.2))      # 0.3 * 4
    q = torch.nn.Parameter(torch.full((4,), 2.0))
    q.grad = torch.full((4,), 0.1)
    agc_([q], clip=0.3)
    assert torch.allclose(q.grad, torch.full((4,), 0.1))        # under the limit: unchanged


class _FixedDream(torch.nn.Module):
    """A stand-in backbone whose imagination is a fixed rollout (to check the agent's losses)."""

    def __init__(self, H=4, N=6, F=5, A=3):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.feat = torch.randn(H + 1, N, F, generator=g)
        self.reward = torch.rand(H + 1, N, generator=g)
        self.cont = (torch.rand(H + 1, N, generator=g) > 0.2).float()
        self.action = torch.nn.functional.one_hot(torch.randint(A, (H + 1, N), generator=g), A).float()

    def imagine(self, start, policy, horizon):
        from vawm.worldmodels.base import Imagined
        return Imagined(self.feat, self.action, self.reward, self.cont.clone())


@pytest.mark.parametrize("slow_target, cont_weight", [("value", True), ("return", False)])
def test_critic_loss_dreamer_and_storm_styles_by_hand(slow_target, cont_weight):
    """DreamerV3: CE to R^lambda + CE to v_slow(s), weighted by the continuation product; STORM:
    CE to R^lambda + CE to R^lambda computed with v_slow, plain mean."""
    from dataclasses import replace
    from types import SimpleNamespace

    from vawm.agents.actor_critic import ActorCritic, AgentConfig
    from vawm.nets.optim import OptimConfig

    wm = _FixedDream()
    cfg = replace(AgentConfig(), units=8, layers=1, horizon=4, gamma=0.9, lam=0.8,
                  slow_target=slow_target, cont_weight=cont_weight)
    torch.manual_seed(0)
    ac = ActorCritic(5, 3, True, cfg, OptimConfig())
    with torch.no_grad():
        for p in ac.slow_critic.parameters():
            p.add_(0.3 * torch.randn_like(p))          # slow != online, so the targets differ
    N = wm.feat.shape[1]
    batch = {"is_terminal": torch.zeros(1, N)}
    obs = SimpleNamespace(start=None)
    with torch.no_grad():
        cont = (wm.cont > 0.5).float()                 # the imagined continuation's mode
        cont[0] = 1.0
        ret = lambda_returns(wm.reward, cont, ac.critic(wm.feat).mean, 0.9, 0.8)
        fd = wm.feat[:-1]
        if slow_target == "return":
            slow = lambda_returns(wm.reward, cont, ac.slow_critic(wm.feat).mean, 0.9, 0.8)
        else:
            slow = ac.slow_critic(fd).mean
        dist = ac.critic(fd)
        per = -dist.log_prob(ret) - dist.log_prob(slow)
        w = (torch.cumprod(0.9 * cont, 0) / 0.9)[:-1] if cont_weight else torch.ones_like(per)
        expected = (w * per).mean()
    metrics = ac.train_step(wm, obs, batch)
    assert torch.isclose(metrics["agent/critic_loss"], expected, rtol=1e-5)


def test_learning_rate_warmup_is_linear_and_resumable():
    """DreamerV3 2025: lr * min(1, (k + 1) / warmup) at step k; the count comes from the
    optimiser's own state, so a checkpoint resumes the schedule."""
    from vawm.nets.optim import Optim
    p = torch.nn.Parameter(torch.zeros(3))
    opt = Optim([p], "laprop", 1e-2, 1e-20, 0.0, warmup=4)
    lrs = []
    for _ in range(6):
        p.grad = torch.ones(3)
        opt.step()
        lrs.append(opt.opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2, 1e-2, 1e-2])
    q = torch.nn.Parameter(torch.zeros(3))
    again = Optim([q], "laprop", 1e-2, 1e-20, 0.0, warmup=10)
    again.load_state_dict(opt.state_dict())
    q.grad = torch.ones(3)
    again.step()
    assert again.opt.param_groups[0]["lr"] == pytest.approx(7e-3)          # step k = 6


def test_imagination_follows_dreamerv3_2023():
    """The actor reads a stop-gradient state; continuous imagined actions stay in the box; the
    imagined continuation is the cont head's mode; weights are cumprod(gamma c) / gamma."""
    from vawm.agents.actor_critic import ActorCritic, AgentConfig
    from vawm.nets.optim import OptimConfig
    from vawm.worldmodels.base import Imagined
    cfg = AgentConfig(units=8, layers=1, horizon=3, gamma=0.9)
    ac = ActorCritic(5, 2, False, cfg, OptimConfig())
    with torch.no_grad():
        ac.actor.net.out.bias.fill_(5.0)                  # means near the edge, samples beyond
    seen = []

    class FakeWM:
        def imagine(self, start, policy, horizon):
            f = start.clone().requires_grad_(True)
            feats, acts = [f], []
            for _ in range(horizon + 1):
                seen.append(feats[-1].detach().requires_grad)
                a = policy(feats[-1].detach())
                acts.append(a)
                feats.append(feats[-1] + a.sum(-1, keepdim=True))
            feat = torch.stack(feats[:-1])
            cont = torch.tensor([0.9, 0.7, 0.3, 0.8]).view(4, 1).expand(4, start.shape[0])
            return Imagined(feat, torch.stack(acts), feat.sum(-1), cont)

    acts = torch.stack([ac._imagine_policy(torch.randn(64, 5)) for _ in range(4)])
    assert acts.abs().max() <= 1.0 + 1e-6 and (acts.abs() > 0.99).any()
    cont = torch.tensor([[1.0], [1.0], [0.0], [1.0]])     # mode of [*, 0.7, 0.3, 0.8]
    w = ac.loss_weights(cont)
    assert torch.allclose(w[:, 0], torch.tensor([1.0, 0.9, 0.0, 0.0]))
    obs = types.SimpleNamespace(start=torch.randn(6, 5), post=None)
    batch = {"is_terminal": torch.zeros(2, 3, dtype=torch.bool)}
    ac.train_step(FakeWM(), obs, batch)
    assert seen and not any(seen)                       # the actor never sees a graph


def test_replay_value_loss_as_dreamerv3_2025():
    """Returns along replay bootstrapped from the imagined returns and cut at episode ends, the
    slow-critic term, last steps masked; with repval_grad the gradient reaches the features."""
    from vawm.agents.actor_critic import ActorCritic, AgentConfig
    from vawm.nets.optim import OptimConfig
    cfg = AgentConfig(units=8, layers=1, gamma=0.9, lam=0.5, repval_scale=0.3, slowreg=1.0,
                      actor_grad="reinforce", init="torch")     # a critic with a slope
    ac = ActorCritic(3, 2, True, cfg, OptimConfig())
    B, T = 1, 4
    post = torch.randn(B, T, 3, requires_grad=True)
    obs = types.SimpleNamespace(post=post)
    batch = {"reward": torch.tensor([[0.0, 1.0, 2.0, 3.0]]),
             "is_terminal": torch.tensor([[False, False, True, False]]),
             "is_last": torch.tensor([[False, False, True, False]])}
    boot = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    loss = ac._repval_loss(obs, batch, boot.reshape(1, B * T))
    # by hand: live = 0.9 (1 - term'), c = 0.5 (1 - last')
    R3 = 40.0
    R2 = 3.0 + (1 - 0.5) * 0.9 * 40.0 + 0.9 * 0.5 * R3           # t=2 -> 3 (not last, not term)
    R1 = 2.0 + 0.0                                               # t=1 -> 2 terminal: live = 0
    R0 = 1.0 + (1 - 0.5) * 0.9 * 20.0 + 0.9 * 0.5 * R1
    target = torch.tensor([[R0, R1, R2]])
    dist = ac.critic(post[:, :-1])
    slow = ac.slow_critic(post[:, :-1]).mean
    w = torch.tensor([[1.0, 1.0, 0.0]])                          # step 2 is last: masked
    hand = (w * (-dist.log_prob(target) - dist.log_prob(slow))).mean()
    assert torch.allclose(loss, hand)
    loss.backward()
    assert post.grad is not None and post.grad.abs().sum() > 0


def test_replay_value_gradient_reaches_the_world_model():
    """v2025: the replay-value loss joins the world model's gradient before its step."""
    from vawm.agent import Agent
    from vawm.config import build_config
    from vawm.replay import random_batch
    info = {"obs_kind": "vector", "obs_shape": (4,), "discrete": True, "action_dim": 2}
    after = {}
    for grad in (True, False):
        cfg = build_config("tiny2025", sets=[f"agent.repval_grad={str(grad).lower()}",
                                             "agent.init=torch"])
        torch.manual_seed(0)
        agent = Agent(cfg, info)
        assert agent.ac.repval_grad == grad
        torch.manual_seed(1)
        agent.train_step(random_batch(cfg, info))
        after[grad] = [p.detach().clone() for p in agent.wm.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(after[True], after[False], strict=True))
