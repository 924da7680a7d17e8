"""Dream critic (anon. 2026, §3.2): TD loss by hand, masks, gradient paths, dream evaluation, a run."""

from __future__ import annotations

import dataclasses
import json
import types

import pytest
import torch

from vawm.config import ConfigError, build_config
from vawm.objectives import Context, build_objective
from vawm.objectives.dream_critic import (
    DreamCritic,
    DreamCriticConfig,
    dream_targets,
    td_errors,
    td_loss,
)

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
    # k = 0 of the dream loss is the TD error on the real posterior states
    assert out.metrics["dream_critic/loss_real"].item() == pytest.approx(hand.item(), rel=1e-5)
    post_only = DreamCritic(dataclasses.replace(obj.cfg, loss="posterior"), agent.wm.feat_dim)
    post_only.load_state_dict(obj.state_dict())
    ref = post_only.contribute(obs, Context(agent.wm, agent.ac, 0, batch))
    assert ref.metrics["dream_critic/loss"].item() == pytest.approx(hand.item(), rel=1e-5)
    assert ref.losses["weighted"].item() == pytest.approx(0.5 * hand.item(), rel=1e-5)
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
    for features, loss in (("post", "posterior"), ("latent", "posterior"), ("latent", "dream")):
        cfg, agent = _agent("vae-lstm-tiny", **{"dream_critic.features": features,
                                                "dream_critic.imagine": "false",
                                                "dream_critic.loss": loss})
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
        grads[features, loss] = sum(float(p.grad.abs().sum()) for p in wm.lstm.parameters()
                                    if p.grad is not None)
    # on real states V(z_t) of a VAE + LSTM reaches the encoder only, V([z_t, h_t]) the LSTM too;
    # on states imagined by the LSTM (loss=dream) even V(z~) reaches the LSTM
    assert grads["latent", "posterior"] == 0.0 and grads["post", "posterior"] > 0.0
    assert grads["latent", "dream"] > 0.0
    with pytest.raises(ConfigError, match="dream_critic.features"):
        DreamCritic(DreamCriticConfig(features="z"), 8)


def test_dream_loss_by_hand_and_it_trains_the_dynamics(monkeypatch):
    """Rollouts along the replayed actions, valued by V_phi, regressed on real TD targets; the
    prior/dynamics get the critic's gradient (with loss=posterior they get none)."""
    import vawm.worldmodels.rssm as rssm
    mode = lambda logits: torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(
        logits.dtype) + logits - logits.detach()          # deterministic latents, same gradient path
    monkeypatch.setattr(rssm, "sample_categorical_st", mode)
    H = 3
    cfg, agent = _agent("tiny", **{"dream_critic.horizon": H, "dream_critic.imagine": "false"})
    wm, obj, batch = agent.wm, agent.objective, _batch(cfg)
    torch.manual_seed(5)
    obs = wm.observe(batch)
    torch.manual_seed(6)
    out = obj.contribute(obs, Context(wm, agent.ac, 0, batch))
    B, T = batch["reward"].shape
    torch.manual_seed(6)
    with torch.no_grad():                              # by hand, one start at a time
        v = obj.value(obs.post)
        r, first, term = batch["reward"], batch["is_first"], batch["is_terminal"]
        errs = []
        for b in range(B):
            for t in range(T):
                s = type(obs.start)(obs.start.deter[b * T + t][None], obs.start.stoch[b * T + t][None])
                for k in range(H + 1):
                    j1 = t + k + 1
                    if k > 0:
                        s = wm.img_step(s, batch["action"][b, min(t + k - 1, T - 1)][None])
                    if j1 >= T or first[b, t + 1:j1 + 1].any():
                        continue
                    y = r[b, j1] + 0.99 * (~term[b, j1]) * v[b, j1]
                    errs.append((obj.value(s.feat())[0] - y) ** 2)
    hand = torch.stack(errs).mean()
    assert out.metrics["dream_critic/loss"].item() == pytest.approx(hand.item(), rel=1e-4)
    out.losses["weighted"].backward()
    prior = [wm.img_logits.weight, wm.img_in.linear.weight]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in prior)
    # the posterior-only TD loss sends nothing to the prior head
    cfg, agent = _agent("tiny", **{"dream_critic.loss": "posterior", "dream_critic.imagine": "false"})
    obs = agent.wm.observe(batch)
    agent.objective.contribute(obs, Context(agent.wm, agent.ac, 0, batch)).losses["weighted"].backward()
    assert agent.wm.img_logits.weight.grad is None


def test_dream_targets_masks():
    v = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    r = torch.tensor([[0.0, 10.0, 20.0, 30.0]])
    first = torch.tensor([[False, False, True, False]])
    term = torch.tensor([[False, True, False, False]])
    target, mask = dream_targets(v, r, first, term, 0.5, 2)
    assert target.shape == mask.shape == (3, 1, 4)
    # k = 0: t=0 -> j+1 = 1 (terminal: r only); t=1 -> j+1 = 2 starts an episode; t=2 -> 3
    assert mask[0, 0].tolist() == [1, 0, 1, 0] and target[0, 0, 0] == 10.0
    assert target[0, 0, 2] == 30.0 + 0.5 * 4.0
    # k = 1 from t = 0 reaches j+1 = 2, across the episode start: masked
    assert mask[1, 0].tolist() == [0, 0, 0, 0] and mask[2].sum() == 0
