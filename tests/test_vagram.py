"""VaGraM (Voelcker et al. 2022): the value gradient against finite differences, the stabilisers,
the loss by hand, and who gets its gradient on every backbone."""

import pytest
import torch

from vawm.agent import Agent
from vawm.config import build_config
from vawm.objectives import Context
from vawm.objectives.vagram import clip_to_quantile, vagram_loss, value_gradient
from vawm.replay import random_batch

DISCRETE = {"obs_kind": "vector", "obs_shape": (4,), "discrete": True, "action_dim": 2}
CONT = {"obs_kind": "vector", "obs_shape": (5,), "discrete": False, "action_dim": 2}


def _agent(backbone):
    preset, info = ("latent-cpu,tiny", CONT) if backbone == "latent" else ("tiny", DISCRETE)
    cfg = build_config(preset, {"backbone": backbone, "objective": "vagram"})
    torch.manual_seed(0)
    agent = Agent(cfg, info)
    with torch.no_grad():                  # a trained critic (zero-initialised outputs: V = 0)
        for p in agent.ac.critic.parameters():
            p.normal_(0, 0.3)
    return cfg, info, agent


def test_value_gradient_matches_finite_differences():
    cfg, info, agent = _agent("rssm")
    torch.manual_seed(1)
    x = torch.randn(3, agent.wm.feat_dim, dtype=torch.float64)
    agent.ac.double()
    V = lambda z: agent.ac.value(z)                                   # noqa: E731
    g = value_gradient(V, x)
    eps = 1e-6
    for d in (0, 5, agent.wm.feat_dim - 1):
        e = torch.zeros_like(x)
        e[:, d] = eps
        fd = (V(x + e) - V(x - e)) / (2 * eps)
        torch.testing.assert_close(g[:, d], fd.detach(), rtol=1e-6, atol=1e-8)


def test_quantile_clipping_and_loss_by_hand():
    g = torch.tensor([[3.0, 4.0], [0.6, 0.8], [0.0, 2.0], [6.0, 8.0]])   # norms 5, 1, 2, 10
    clipped, norms = clip_to_quantile(g, 0.5)
    bound = torch.quantile(torch.tensor([5.0, 1.0, 2.0, 10.0]), 0.5)    # 3.5
    torch.testing.assert_close(norms.squeeze(-1), torch.tensor([5.0, 1.0, 2.0, 10.0]))
    torch.testing.assert_close(clipped[1:3], g[1:3])                  # below the bound: kept
    torch.testing.assert_close(clipped[[0, 3]].norm(dim=-1), bound.expand(2))
    torch.testing.assert_close(clip_to_quantile(g, 1.0)[0], g)
    pred, target = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, 3.0]])
    gg = torch.tensor([[2.0, -1.0]])
    torch.testing.assert_close(vagram_loss(pred, target, gg), torch.tensor(2.0 ** 2 * 0.25 + 1.0))


@pytest.mark.parametrize("backbone", ["rssm", "tssm", "vae-lstm", "latent"])
def test_gradient_reaches_the_prediction_not_the_critic(backbone):
    cfg, info, agent = _agent(backbone)
    b = random_batch(cfg, info, seed=0)
    obs = agent.wm.observe(b)
    ctx = Context(agent.wm, agent.ac, 0, b)
    c = agent.objective.contribute(obs, ctx)
    loss = c.losses["weighted"]
    assert float(loss.detach()) > 0 and float(c.metrics["vagram/grad_norm"]) > 0
    loss.backward()
    assert not any(p.grad is not None and p.grad.abs().sum() > 0
                   for p in agent.ac.parameters())
    wm = {k: p.grad is not None and bool(p.grad.abs().sum() > 0)
          for k, p in agent.wm.named_parameters()}
    assert any(wm.values())
    if backbone == "rssm":       # the prior (dynamics) learns
        assert wm["img_logits.weight"] and wm["img_out.linear.weight"]
    if backbone == "latent":     # the model's prediction learns, not the reward head
        assert any(v for k, v in wm.items() if k.startswith("dynamics."))
        assert not any(v for k, v in wm.items() if k.startswith("reward."))
    # the running mean norm moved from 1 towards this batch's mean norm
    assert float(agent.objective.norm_avg) != 1.0
