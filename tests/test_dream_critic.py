"""Dream critic (anon. 2026, §3.2): TD loss by hand, masks, gradient paths, dream evaluation, a run."""

from __future__ import annotations

import json
import types

import pytest
import torch

from vawm.config import ConfigError, build_config
from vawm.objectives import Context, build_objective
from vawm.objectives.dream_critic import DreamCritic, DreamCriticConfig, td_errors, td_loss

INFO = {"obs_kind": "vector", "obs_shape": (4,), "discrete": True, "action_dim": 2}



def _seq():
    # one sequence of 4 steps; step 2 starts a new episode, step 3 is terminal
    value = torch.tensor([[1.0, 2.0, 3.0, 4.0]], requires_grad=True)
    reward = torch.tensor([[9.0, 1.0, 2.0, 5.0]])         # reward[t]: on arriving at step t
    is_first = torch.tensor([[True, False, True, False]])
    is_terminal = torch.tensor([[False, False, False, True]])
    return value, reward, is_first, is_terminal


def test_td_loss_by_hand():
    value, reward, first, term = _seq()
    gamma = 0.5
    delta, mask = td_errors(value, reward, first, term, gamma)
    # d0 = r1 + g V1 - V0 = 1 + 1 - 1 = 1;  d1 crosses an episode start: masked;
    # d2 = r3 - V2 = 5 - 3 = 2 (step 3 is terminal: no bootstrap)
    assert mask.tolist() == [[1.0, 0.0, 1.0]]
    assert delta[0, 0].item() == 1.0 and delta[0, 2].item() == 2.0
    loss = td_loss(value, reward, first, term, gamma)
    assert loss.item() == pytest.approx((1.0 + 4.0) / 2)
    loss.backward()
    # semi-gradient: only V(z_t) of the kept transitions: -2 d_t / n
    assert value.grad.tolist() == [[-1.0, 0.0, -2.0, 0.0]]


def test_td_loss_full_gradient_switch():
    value, reward, first, term = _seq()
    td_loss(value, reward, first, term, 0.5, stop_grad=False).backward()
    # V1 is also the bootstrap of d0: + 2 d0 gamma / n = 0.5; V3 is terminal: no bootstrap
    assert value.grad.tolist() == [[-1.0, 0.5, -2.0, 0.0]]


def _agent(preset: str, **sets):
    from vawm.agent import Agent
    torch.manual_seed(0)
    cfg = build_config(preset, {"objective": "dream-critic"}, [f"{k}={v}" for k, v in sets.items()])
    return cfg, Agent(cfg, INFO)


def _batch(cfg) -> dict[str, torch.Tensor]:
    B, T = cfg.run.batch_size, cfg.run.batch_length
    g = torch.Generator().manual_seed(0)
    first = torch.zeros(B, T, dtype=torch.bool)
    first[0, 4] = True
    term = torch.zeros(B, T, dtype=torch.bool)
    term[0, 3] = True
    act = torch.randint(0, 2, (B, T), generator=g)
    return {"obs": torch.randn(B, T, 4, generator=g),
            "action": torch.nn.functional.one_hot(act, 2).float(),
            "reward": torch.rand(B, T, generator=g), "is_first": first, "is_last": term.clone(),
            "is_terminal": term}


@pytest.mark.parametrize("preset", ["tiny", "vae-lstm-tiny"])
def test_loss_on_backbone_and_gradient_reaches_encoder(preset):
    cfg, agent = _agent(preset)
    obj = agent.objective
    assert isinstance(obj, DreamCritic) and obj.cfg.scale == 0.5
    ids = {id(p) for p in agent.wm_params}
    assert obj.wm_parameters() and all(id(p) in ids for p in obj.wm_parameters())
    batch = _batch(cfg)
    obs = agent.wm.observe(batch)
    out = obj.contribute(obs, Context(agent.wm, agent.ac, 0, batch))
    with torch.no_grad():                            # the TD loss recomputed from V_phi by hand
        v = obj.value(obs.post)
        r, first, term = batch["reward"], batch["is_first"], batch["is_terminal"]
        target = r[:, 1:] + cfg.dream_critic.gamma * (~term[:, 1:]) * v[:, 1:]
        keep = ~first[:, 1:]
        hand = ((target - v[:, :-1])[keep] ** 2).mean()
    assert out.metrics["dream_critic/loss"].item() == pytest.approx(hand.item(), rel=1e-5)
    assert out.losses["weighted"].item() == pytest.approx(0.5 * hand.item(), rel=1e-5)
    out.losses["weighted"].backward()
    enc = [p.grad for p in agent.wm.encoder.parameters() if p.grad is not None]
    assert enc and sum(g.abs().sum() for g in enc) > 0                 # shapes the encoder
    assert all(p.grad is not None for p in obj.wm_parameters())
    assert all(p.grad is None for p in agent.ac.critic.parameters())   # not the agent's critic


def test_dream_evaluation_switch():
    cfg, agent = _agent("tiny", **{"dream_critic.imag_starts": 8, "dream_critic.imag_every": 2})
    batch = _batch(cfg)
    m0 = agent.train_step(batch)                     # update 0: dreams evaluated
    m1 = agent.train_step(batch)                     # update 1: skipped (imag_every 2)
    for k in ("dream_critic/imag_value", "dream_critic/imag_td", "dream_critic/imag_gap"):
        assert k in m0 and k not in m1
    assert "dream_critic/loss" in m1 and "dream_critic/weighted" in m1
    cfg, agent = _agent("tiny", **{"dream_critic.imagine": "false"})
    assert not any(k.startswith("dream_critic/imag") for k in agent.train_step(_batch(cfg)))


def test_trains_with_the_world_model():
    cfg, agent = _agent("tiny", **{"dream_critic.imagine": "false"})
    before = [p.detach().clone() for p in agent.objective.parameters()]
    agent.train_step(_batch(cfg))
    assert all(not torch.equal(a, b) for a, b in zip(before, agent.objective.parameters(),
                                                     strict=True))
    with pytest.raises(ConfigError, match="dream_critic.target"):
        DreamCritic(DreamCriticConfig(target="half"), 8)


def test_short_training_run(tmp_path):
    from vawm.train import Trainer
    cfg = build_config("tiny", {"objective": "dream-critic"})
    backbone = types.SimpleNamespace(feat_dim=8, latent_slice=slice(0, 4))
    assert isinstance(build_objective(cfg, backbone), DreamCritic)
    cfg = build_config("tiny", {"objective": "dream-critic", "steps": 80},
                       ["run.log_every=40", "run.checkpoint_every=1000"])
    summary = Trainer(cfg, tmp_path, progress=False).train()
    assert summary["status"] == "finished" and summary["objective"] == "dream-critic"
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "dream_critic/loss" in r]
    assert logged and "dream_critic/imag_value" in logged[-1]


def test_latent_features_switch_reads_z_alone():
    grads = {}
    for features in ("post", "latent"):
        cfg, agent = _agent("vae-lstm-tiny", **{"dream_critic.features": features,
                                                "dream_critic.imagine": "false"})
        obj, wm = agent.objective, agent.wm
        z_dim = cfg.vae_lstm.latent
        assert obj.net.body[0].linear.in_features == (z_dim if features == "latent"
                                                      else wm.feat_dim)
        feat = torch.randn(5, wm.feat_dim)
        moved = feat.clone()
        moved[:, z_dim:] += 1.0                          # change h, keep z
        same = torch.allclose(obj.value(feat), obj.value(moved))
        assert same == (features == "latent")
        batch = _batch(cfg)
        obs = wm.observe(batch)
        out = obj.contribute(obs, Context(wm, agent.ac, 0, batch))
        out.losses["weighted"].backward()
        grads[features] = sum(float(p.grad.abs().sum()) for p in wm.lstm.parameters()
                              if p.grad is not None)
    # V(z_t) of a VAE + LSTM reaches the encoder only; V([z_t, h_t]) reaches the LSTM too
    assert grads["latent"] == 0.0 and grads["post"] > 0.0
    with pytest.raises(ConfigError, match="dream_critic.features"):
        DreamCritic(DreamCriticConfig(features="z"), 8)
