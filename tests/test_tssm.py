"""The ``tssm`` backbone (STORM): causal masking, key/value-cache equivalence, shapes, loss terms,
the shared update with every objective, and world-model learning on real CartPole transitions."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vawm.config import OBJECTIVES, build_config
from vawm.nets.dist import symlog
from vawm.nets.optim import Optim
from vawm.nets.transformer import CausalTransformer, causal_mask, segment_mask
from vawm.state import tree_map
from vawm.worldmodels import build_backbone
from vawm.worldmodels.tssm import TSSM, TSSMStart


def make(kind: str = "vector", sets: tuple[str, ...] = (), objective: str = "none"):
    cfg = build_config("storm-tiny", {"objective": objective}, list(sets))
    shape = (4,) if kind == "vector" else (3, 16, 16)
    info = {"obs_shape": shape, "action_dim": 3, "obs_kind": kind, "discrete": True}
    torch.manual_seed(0)
    return cfg, info, build_backbone(cfg, info)


def fake_batch(info: dict, B: int = 3, T: int = 8, firsts: tuple[tuple[int, int], ...] = ()):
    shape, A = info["obs_shape"], info["action_dim"]
    g = torch.Generator().manual_seed(1)
    if info["obs_kind"] == "image":
        obs = torch.randint(0, 256, (B, T, *shape), generator=g, dtype=torch.uint8)
    else:
        obs = torch.randn(B, T, *shape, generator=g)
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    for b, t in firsts:
        is_first[b, t] = True
    return {"obs": obs, "action": F.one_hot(torch.randint(0, A, (B, T), generator=g), A).float(),
            "reward": torch.randn(B, T, generator=g), "is_first": is_first,
            "is_last": torch.zeros(B, T, dtype=torch.bool),
            "is_terminal": torch.zeros(B, T, dtype=torch.bool)}


def h_of(wm: TSSM, batch: dict) -> torch.Tensor:
    torch.manual_seed(3)                      # the same sampling noise for every call
    with torch.no_grad():
        return wm.observe(batch).post[..., wm.zdim:]                   # [B, T, D]


# ---------------------------------------------------------------------------- masking
def test_transformer_future_token_cannot_change_past_outputs():
    torch.manual_seed(0)
    tr = CausalTransformer(16, 2, 2, 0.1, 12).eval()
    x = torch.randn(2, 10, 16)
    mask = causal_mask(torch.ones(2, 10, dtype=torch.bool), 10)
    y = x.clone()
    y[:, 6] += torch.randn(2, 16)
    a, b = tr(x, mask), tr(y, mask)
    assert torch.equal(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_observe_is_causal_and_stops_at_episode_starts():
    cfg, info, wm = make()
    wm.eval()
    batch = fake_batch(info, firsts=((1, 5),))
    h = h_of(wm, batch)
    fut = {**batch, "action": batch["action"].clone()}
    fut["action"][:, 3] = fut["action"][:, 3].roll(1, -1)   # change token 3; h_t sees tokens < t
    h2 = h_of(wm, fut)
    assert torch.equal(h[:, :4], h2[:, :4])
    assert not torch.allclose(h[0, 4:], h2[0, 4:])
    # sample 1 starts a new episode at t=5: its h_{5..} cannot see step 3
    assert torch.equal(h[1, 5:], h2[1, 5:])
    mask = segment_mask(batch["is_first"])
    assert mask[1, 6, 5] and not mask[1, 6, 4] and not mask[0, 3, 4]


# ---------------------------------------------------------------------------- imagination
@pytest.mark.parametrize("imag_start", ["posterior", "prior"])
def test_cached_and_uncached_rollouts_agree(imag_start):
    cfg, info, wm = make(sets=(f"tssm.imag_start={imag_start}",))
    batch = fake_batch(info, firsts=((2, 3),))
    with torch.no_grad():
        start = wm.observe(batch).start
    A = info["action_dim"]
    policy_w = torch.randn(wm.feat_dim, A)

    def policy(feat):                         # stochastic: uses the same RNG stream in both runs
        logits = feat @ policy_w
        return F.one_hot(torch.distributions.Categorical(logits=logits).sample(), A).float()

    runs = []
    for cached in (True, False):
        wm.cfg.kv_cache = cached
        torch.manual_seed(7)
        with torch.no_grad():
            runs.append(wm.imagine(start, policy, 6))
    a, b = runs
    assert torch.equal(a.action, b.action)
    torch.testing.assert_close(a.feat, b.feat, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.reward, b.reward, atol=1e-5, rtol=1e-5)
    assert wm.training                        # imagination restores the training mode


def test_imagination_uses_the_context():
    cfg, info, wm = make()
    batch = fake_batch(info)
    with torch.no_grad():
        start = wm.observe(batch).start
    other = TSSMStart(start.z.clone(), start.action.roll(1, -1), start.valid)
    pol = lambda f: F.one_hot(torch.zeros(f.shape[0], dtype=torch.long), info["action_dim"]).float()  # noqa: E731
    with torch.no_grad():
        a, b = wm.imagine(start, pol, 2), wm.imagine(other, pol, 2)
    full = start.valid[:, :-1].any(1)        # windows with at least one context token
    assert not torch.allclose(a.feat[0, full, wm.zdim:], b.feat[0, full, wm.zdim:])
    assert torch.allclose(a.feat[0, ~full, wm.zdim:], b.feat[0, ~full, wm.zdim:])


# ---------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("kind", ["vector", "image"])
def test_shapes(kind):
    from vawm.state import carry_from_tensors, carry_to_tensors
    cfg, info, wm = make(kind)
    B, T, c = 3, 8, cfg.tssm
    batch = fake_batch(info, B, T)
    obs = wm.observe(batch)
    S, C, F_ = c.stoch, c.classes, c.stoch * c.classes + c.dim
    assert wm.feat_dim == F_
    assert obs.post.shape == obs.prior.shape == (B, T, F_)
    assert obs.post_logits.shape == obs.prior_logits.shape == (B, T, S, C)
    assert set(obs.terms) == set(wm.term_names)
    assert all(v.shape == (B, T) for v in obs.terms.values())
    W = c.context + 1
    assert obs.start.z.shape == (B * T, W, S * C) and obs.start.valid.shape == (B * T, W)
    idx = torch.tensor([0, 5, 23, 7])        # the agent subsamples starts by indexing each field
    start = tree_map(lambda t: t[idx], obs.start)
    pol = lambda f: F.one_hot(torch.randint(0, 3, f.shape[:-1]), 3).float()  # noqa: E731
    im = wm.imagine(start, pol, 5)
    assert im.feat.shape == (6, 4, F_) and im.action.shape == (6, 4, 3)
    assert im.reward.shape == im.cont.shape == (6, 4)
    carry = tree_map(lambda t: t.to("cpu"), wm.initial_carry(2))
    for t in range(c.act_context + 2):       # longer than the acting context
        first = torch.tensor([t == 0, t in (0, 3)])
        carry, feat = wm.act_step(carry, batch["obs"][:2, 0], pol(torch.zeros(2, 1)), first)
    assert feat.shape == (2, F_)
    last = c.act_context + 1                  # env 1 restarted at t=3: tokens 3..last-1 are valid
    assert carry[0].valid.sum(1).tolist() == [c.act_context, min(c.act_context, last - 3)]
    back = carry_from_tensors(wm, carry_to_tensors(carry), "cpu")
    assert torch.equal(back[0].z, carry[0].z)


def test_act_step_matches_observe_in_eval_mode():
    """Acting attends over the same tokens as a replayed sequence: with the acting window exactly
    full (positions 0..L-1 in both), h_t agrees, also across an episode start."""
    L = 5
    cfg, info, wm = make(sets=(f"tssm.act_context={L}",))
    wm.eval()
    batch = fake_batch(info, B=2, T=L + 1, firsts=((1, 3),))
    torch.manual_seed(3)
    with torch.no_grad():
        obs = wm.observe(batch)
        carry = wm.initial_carry(2)
        for t in range(L + 1):
            prev = batch["action"][:, t - 1] if t else torch.zeros(2, 3)
            carry, feat = wm.act_step(carry, batch["obs"][:, t], prev, batch["is_first"][:, t])
            carry[0].last_z = obs.post[:, t, :wm.zdim]     # the latent observe sampled
    torch.testing.assert_close(feat[:, wm.zdim:], obs.post[:, L, wm.zdim:], atol=1e-5, rtol=1e-5)
    assert carry[0].valid.sum(1).tolist() == [L, L - 3]


# ---------------------------------------------------------------------------- loss
def test_loss_terms_and_weights():
    cfg, info, wm = make()
    batch = fake_batch(info, firsts=((0, 4),))
    batch["is_first"][2, 0] = False           # a chunk that starts mid-episode
    obs = wm.observe(batch)
    t = obs.terms
    assert all(torch.isfinite(v).all() for v in t.values())
    assert (t["recon"] >= 0).all() and (t["cont"] >= 0).all() and (t["dyn"] >= -1e-6).all()
    torch.testing.assert_close(t["dyn"], t["rep"])
    loss, metrics = wm.loss(obs)
    torch.testing.assert_close(loss, wm.loss(obs, torch.ones(3, 8))[0])
    # zero weights: only the free-bits floors remain (weights act before free bits)
    zero, _ = wm.loss(obs, torch.zeros(3, 8))
    c = cfg.tssm
    assert zero.item() == pytest.approx((c.beta_dyn + c.beta_rep) * c.free_nats)
    # the unknown-history step (chunk start that is not an episode start) adds no reward term
    assert obs.extras["history"][2, 0] == 0 and obs.extras["history"][0, 0] == 1
    w = torch.ones(3, 8)
    w[2, 0] = 100.0
    l2, _ = wm.loss(obs, w)
    recon_only = (w * t["recon"]).mean() - t["recon"].mean()
    torch.testing.assert_close(l2 - loss, c.beta_pred * recon_only, atol=1e-4, rtol=1e-4)
    # rep trains the posterior side only; dyn trains the prior (and, through the straight-through
    # tokens the transformer reads, the encoder too, as in STORM)
    g = torch.autograd.grad(t["rep"].sum(), [wm.post_head.weight, wm.prior_head.weight],
                            retain_graph=True, allow_unused=True)
    assert g[0].abs().sum() > 0 and g[1] is None
    g = torch.autograd.grad(t["dyn"].sum(), [wm.prior_head.weight])
    assert g[0].abs().sum() > 0
    assert "wm/loss_recon" in metrics


def test_representation_parameters_exclude_decoder_and_heads():
    _, _, wm = make("image")
    rep = {id(p) for p in wm.representation_parameters()}
    for m in (wm.decoder, wm.reward_head, wm.cont_head):
        assert not any(id(p) in rep for p in m.parameters())
    for m in (wm.encoder, wm.post_head, wm.mixer, wm.transformer, wm.prior_head):
        assert all(id(p) in rep for p in m.parameters())


def test_storm_code_switches_run():
    """STORM's own choices: attention across episodes, acting on a prior sample, batch free bits
    (default) vs per-sample free bits."""
    cfg, info, wm = make(sets=("tssm.episode_mask=false", "tssm.act_latent=prior",
                               "tssm.free_bits=sample", "tssm.imag_start=prior"))
    batch = fake_batch(info, firsts=((0, 4),))
    obs = wm.observe(batch)
    assert obs.extras["history"][0].all()     # h_4 = x_3 crosses the episode start
    loss, _ = wm.loss(obs)
    assert torch.isfinite(loss)
    pol = lambda f: F.one_hot(torch.randint(0, 3, f.shape[:-1]), 3).float()  # noqa: E731
    assert torch.isfinite(wm.imagine(obs.start, pol, 3).feat).all()
    carry = wm.initial_carry(2)
    for t in range(3):
        carry, feat = wm.act_step(carry, batch["obs"][:2, t], pol(torch.zeros(2, 1)),
                                  torch.tensor([t == 0, t == 0]))
    assert carry[0].valid.sum(1).tolist() == [2, 2] and feat.shape == (2, wm.feat_dim)


def test_bad_switch_and_too_long_sequences_fail_loudly():
    with pytest.raises(ValueError, match="tssm.imag_start"):
        make(sets=("tssm.imag_start=nope",))
    with pytest.raises(ValueError, match="max_len"):
        make(sets=("run.batch_length=33",))


# ---------------------------------------------------------------------------- the shared update
def _available(objective: str) -> bool:
    if objective == "none":
        return True
    try:
        importlib.import_module("vawm.objectives." + objective.replace("-", "_"))
    except ModuleNotFoundError:
        return False
    return True


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_agent_update_with_every_objective(objective):
    if not _available(objective):
        pytest.skip(f"objective {objective} not implemented yet")
    from vawm.agent import Agent
    cfg = build_config("storm-tiny", {"objective": objective}, ["var.warmup=0"])
    info = {"obs_shape": (4,), "action_dim": 2, "obs_kind": "vector", "discrete": True}
    torch.manual_seed(0)
    agent = Agent(cfg, info)
    for _ in range(2):
        m = agent.train_step(fake_batch(info, cfg.run.batch_size, cfg.run.batch_length,
                                        firsts=((0, 3),)))
    assert all(np.isfinite(v) for v in m.values())
    assert "agent/actor_loss" in m and "wm/loss_dyn" in m


# ---------------------------------------------------------------------------- learning
def _cartpole(seed: int, steps: int):
    from vawm.driver import Driver
    from vawm.replay import Replay
    cfg = build_config("storm-tiny")
    drv = Driver("gym:CartPole-v1", 1, seed, cfg.env_cfg, False)
    rep = Replay(10_000, 1, (4,), np.float32, 2, 16, seed=seed)
    rng = np.random.default_rng(seed)
    p = drv.step(np.zeros((1, 2), np.float32))
    for _ in range(steps):
        a = np.eye(2, dtype=np.float32)[rng.integers(0, 2, 1)]
        rep.add({"obs": p["obs"], "action": a, "reward": p["reward"], "is_first": p["is_first"],
                 "is_last": p["is_last"], "is_terminal": p["is_terminal"]})
        p = drv.step(a)
    drv.close()
    return rep


def test_world_model_learns_cartpole():
    """On real CartPole transitions (random policy) the one-step prediction error of the prior,
    decoded, must fall well below predicting the data mean; a model whose sequence model ignored
    the history (or whose updates were broken) cannot beat that baseline."""
    train, test = _cartpole(0, 2000), _cartpole(1, 600)
    cfg = build_config("storm-tiny", sets=["tssm.dim=32", "tssm.heads=2", "tssm.stoch=8",
                                           "tssm.classes=8", "tssm.units=64"])
    info = {"obs_shape": (4,), "action_dim": 2, "obs_kind": "vector", "discrete": True}
    torch.manual_seed(0)
    wm = build_backbone(cfg, info)
    opt = Optim(list(wm.parameters()), "adam", 1e-3, 1e-8, 1000.0)
    held = test.sample(64)
    target = symlog(held["obs"])

    @torch.no_grad()
    def evaluate() -> tuple[float, float]:
        wm.eval()
        obs = wm.observe(held)
        known = obs.extras["history"].bool()
        z = F.one_hot(obs.prior_logits.argmax(-1), cfg.tssm.classes).float().flatten(-2)
        err = (wm.decoder(z) - target).pow(2).sum(-1)[known].mean()
        wm.train()
        return float(wm.loss(obs)[0]), float(err)

    mean = symlog(torch.as_tensor(train.data["obs"][0, :2000])).mean(0)
    baseline = float((target - mean).pow(2).sum(-1).mean())
    loss0, err0 = evaluate()
    for _ in range(160):
        loss, _ = wm.loss(wm.observe(train.sample(16)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    loss1, err1 = evaluate()
    assert loss1 < 0.4 * loss0, (loss0, loss1)
    assert err1 < 0.75 * baseline and err1 < 0.5 * err0, (err0, err1, baseline)


def test_storm_preset_is_storm_as_published():
    from vawm.config import build_config
    cfg = build_config("storm")
    t, a = cfg.tssm, cfg.agent
    assert (t.imag_start, t.act_latent, t.episode_mask) == ("prior", "prior", False)
    assert (a.slow_target, a.cont_weight, a.imag_cont, a.restart, a.init, a.opt) == \
        ("return", False, "mode", "reencode", "torch", "joint")
    shared = build_config("storm-dreamer-agent")
    assert shared.tssm.episode_mask and shared.agent.slow_target == "value"


def test_reencoded_starts_after_the_update():
    from vawm.agent import Agent
    from vawm.config import build_config
    from vawm.replay import random_batch
    cfg = build_config("storm-tiny", sets=["agent.restart=reencode", "tssm.dropout=0.5",
                                           "agent.opt=joint"])
    info = {"obs_kind": "vector", "obs_shape": (4,), "discrete": True, "action_dim": 2}
    agent = Agent(cfg, info)
    assert agent.ac.actor_opt is agent.ac.critic_opt              # STORM's one optimiser
    before = [p.detach().clone() for p in agent.ac.parameters()]
    m = agent.train_step(random_batch(cfg, info))
    assert np.isfinite(m["agent/actor_loss"]) and agent.wm.training
    assert m["agent/actor_gradnorm"] == m["agent/critic_gradnorm"]   # one joint norm
    moved = [not torch.equal(a, b) for a, b in zip(before, agent.ac.parameters(), strict=True)]
    assert sum(moved) > len(moved) // 2
