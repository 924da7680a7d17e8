"""Value-alignment regulariser (VaR, anon. 2025, eq. 2–5): math, stop-gradients, warm-up, weights, a run."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from vawm.agents.actor_critic import AgentConfig, Critic
from vawm.config import ConfigError, build_config
from vawm.objectives import Context, build_objective
from vawm.objectives.var import (
    ValueAlignment,
    VarConfig,
    adaptive_beta,
    value_alignment,
    value_kl,
    value_kl_split,
)
from vawm.worldmodels.base import Observed

B, T, F = 2, 3, 5



def _critic(seed: int = 0) -> Critic:
    torch.manual_seed(seed)
    critic = Critic(F, AgentConfig(units=8, layers=1))
    torch.nn.init.normal_(critic.net.out.weight, std=0.5)   # zero-init head would give KL = 0
    return critic


def _obs(kl: torch.Tensor | None = None) -> Observed:
    torch.manual_seed(1)
    post = torch.randn(B, T, F, requires_grad=True)
    prior = torch.randn(B, T, F, requires_grad=True)
    kl = torch.tensor([[0.5, 1.0, 2.0], [4.0, 0.25, 8.0]]) if kl is None else kl
    return Observed(post, prior, kl, {"dyn": kl, "rep": kl})


def _ctx(critic: Critic, update: int = 10**6) -> Context:
    agent = SimpleNamespace(critic=critic, slow_critic=_critic(seed=7))
    return Context(backbone=None, agent=agent, update=update, batch={})


def _hand_l_var(critic: Critic, obs: Observed, beta_dyn=0.5, beta_rep=0.1) -> torch.Tensor:
    """eq. 4 written out with softmaxes: (beta_dyn + beta_rep) * sum_k P_k ln(P_k / Q_k)."""
    with torch.no_grad():
        p = torch.softmax(critic(obs.post).logits, -1)
        q = torch.softmax(critic(obs.prior).logits, -1)
        return (beta_dyn + beta_rep) * (p * (p.log() - q.log())).sum(-1)     # [B, T]


# ---------------------------------------------------------------------------- pure math
def test_value_kl_by_hand():
    post = torch.tensor([0.0, math.log(3.0)])       # P = (1/4, 3/4)
    prior = torch.tensor([0.0, 0.0])                # Q = (1/2, 1/2)
    kl_pq = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    kl_qp = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert value_kl(post, prior).item() == pytest.approx(kl_pq, abs=1e-6)
    dyn, rep = value_kl_split(post, prior)
    assert [dyn.item(), rep.item()] == pytest.approx([kl_pq, kl_pq], abs=1e-6)
    dyn, rep = value_kl_split(post, prior, "prior_post")
    assert [dyn.item(), rep.item()] == pytest.approx([kl_qp, kl_qp], abs=1e-6)


@pytest.mark.parametrize("direction", ["post_prior", "prior_post"])
def test_split_stop_gradients(direction):
    for side in ("dyn", "rep"):
        post = torch.randn(4, 255, requires_grad=True)
        prior = torch.randn(4, 255, requires_grad=True)
        dyn, rep = value_kl_split(post, prior, direction)
        (dyn if side == "dyn" else rep).sum().backward()
        trained, frozen = (prior, post) if side == "dyn" else (post, prior)
        assert frozen.grad is None                  # the stop-gradient side gets nothing
        assert trained.grad.abs().sum() > 0


@pytest.mark.parametrize("direction", ["post_prior", "prior_post"])
@pytest.mark.parametrize("betas", [(0.5, 0.1), (1.0, 0.0), (0.0, 0.3)])
def test_fused_loss_matches_autograd_reference(direction, betas):
    bd, br = betas
    torch.manual_seed(0)
    post0, prior0 = torch.randn(3, 4, 255) * 2, torch.randn(3, 4, 255) * 2
    w = torch.rand(3, 4)                                  # per-sample weights, like beta_var
    post, prior = post0.clone().requires_grad_(), prior0.clone().requires_grad_()
    dyn, rep = value_kl_split(post, prior, direction)
    ref = bd * dyn + br * rep
    (w * ref).sum().backward()
    g_ref = (post.grad, prior.grad)
    post, prior = post0.clone().requires_grad_(), prior0.clone().requires_grad_()
    l_var, kl = value_alignment(post, prior, bd, br, direction)
    (w * l_var).sum().backward()
    assert torch.allclose(l_var, ref, rtol=1e-5, atol=1e-6)
    assert torch.allclose(kl, dyn.detach(), rtol=1e-5, atol=1e-6) and not kl.requires_grad
    for got, want in zip((post.grad, prior.grad), g_ref, strict=True):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-8)


def test_adaptive_beta_per_sample_and_batch_mean():
    kl = torch.tensor([[0.5, 1.0, 2.0], [4.0, 0.25, 8.0]], requires_grad=True)
    beta = adaptive_beta(kl)
    assert torch.equal(beta, torch.tensor([[1.0, 1.0, 0.5], [0.25, 1.0, 0.125]]))
    assert not beta.requires_grad                   # sg(KL) in eq. 5
    mean = kl.detach().mean().item()                # 15.75 / 6
    assert adaptive_beta(kl, per_sample=False).item() == pytest.approx(1 / mean)
    assert adaptive_beta(torch.full((2, 2), 0.3), per_sample=False).item() == 1.0


# ---------------------------------------------------------------------------- the objective
def test_loss_matches_hand_computation_and_critic_gets_no_gradient():
    critic, obs = _critic(), _obs()
    before = [p.detach().clone() for p in critic.parameters()]
    out = ValueAlignment(VarConfig(warmup=0)).contribute(obs, _ctx(critic))
    l_var = _hand_l_var(critic, obs)
    beta = 1.0 / obs.terms["dyn"].clamp(min=1.0)    # sample by sample
    assert out.losses["weighted"].item() == pytest.approx((beta * l_var).mean().item(), rel=1e-5)
    assert out.metrics["var/loss"].item() == pytest.approx(l_var.mean().item(), rel=1e-5)
    assert out.metrics["var/beta"].item() == pytest.approx(beta.mean().item(), rel=1e-6)
    assert out.metrics["var/kl_dyn"].item() == pytest.approx(l_var.mean().item() / 0.6, rel=1e-5)
    out.losses["weighted"].backward()
    assert all(p.grad is None for p in critic.parameters())        # frozen for this loss
    assert all(p.requires_grad for p in critic.parameters())       # ... and left trainable
    assert all(torch.equal(a, b) for a, b in zip(before, critic.parameters(), strict=True))
    assert obs.post.grad.abs().sum() > 0 and obs.prior.grad.abs().sum() > 0


def test_critic_passes_run_in_fp32_under_bf16_autocast():
    """var.precision=fp32 (the default): under the update's bf16 autocast the two critic passes
    give exactly the fp32 logits, loss and state gradients; var.precision=autocast gives the
    bf16-rounded ones (a different loss), so the switch is really what decides."""
    critic = _critic()
    runs = {}
    for name, precision, amp in [("ref", "fp32", False), ("fp32", "fp32", True),
                                 ("autocast", "autocast", True)]:
        obs = _obs()
        with torch.autocast("cpu", torch.bfloat16, enabled=amp):
            out = ValueAlignment(VarConfig(warmup=0, precision=precision)).contribute(obs, _ctx(critic))
        out.losses["weighted"].backward()
        runs[name] = (out.losses["weighted"].detach(), obs.post.grad, obs.prior.grad)
    assert all(torch.equal(a, b) for a, b in zip(runs["ref"], runs["fp32"], strict=True))
    assert not torch.equal(runs["ref"][0], runs["autocast"][0])
    assert runs["autocast"][0].item() == pytest.approx(runs["ref"][0].item(), rel=0.1)


def test_adaptive_weight_is_per_sample():
    """Each sample's gradient is its unweighted gradient times 1/max(1, KL) of that sample."""
    critic = _critic()
    obj_w = ValueAlignment(VarConfig(warmup=0))
    obj_1 = ValueAlignment(VarConfig(warmup=0, weight="static", static_beta=1.0))
    obs_w, obs_1 = _obs(), _obs()
    obj_w.contribute(obs_w, _ctx(critic)).losses["weighted"].backward()
    obj_1.contribute(obs_1, _ctx(critic)).losses["weighted"].backward()
    beta = 1.0 / obs_w.terms["dyn"].clamp(min=1.0)                 # [B, T]
    for g_w, g_1 in ((obs_w.post.grad, obs_1.post.grad), (obs_w.prior.grad, obs_1.prior.grad)):
        assert torch.allclose(g_w, beta.unsqueeze(-1) * g_1, rtol=1e-4, atol=1e-7)
    assert torch.equal(obj_w.beta(obs_w), beta)


def test_batch_mean_and_static_weights():
    critic, obs = _critic(), _obs()
    l_var = _hand_l_var(critic, obs)
    out = ValueAlignment(VarConfig(warmup=0, per_sample=False)).contribute(obs, _ctx(critic))
    beta = 1.0 / obs.terms["dyn"].mean()
    assert out.losses["weighted"].item() == pytest.approx((beta * l_var).mean().item(), rel=1e-5)
    for w in (0.5, 50.0):
        out = ValueAlignment(VarConfig(warmup=0, weight="static", static_beta=w)).contribute(
            obs, _ctx(critic))
        assert out.losses["weighted"].item() == pytest.approx(w * l_var.mean().item(), rel=1e-5)
        assert out.metrics["var/beta"].item() == w


@pytest.mark.parametrize("side", ["dyn", "rep"])
def test_each_side_trains_only_its_state(side):
    critic, obs = _critic(), _obs()
    cfg = VarConfig(warmup=0, beta_dyn=0.5 if side == "dyn" else 0.0,
                    beta_rep=0.1 if side == "rep" else 0.0)
    ValueAlignment(cfg).contribute(obs, _ctx(critic)).losses["weighted"].backward()
    trained, frozen = (obs.prior, obs.post) if side == "dyn" else (obs.post, obs.prior)
    assert trained.grad.abs().sum() > 0
    assert frozen.grad is None or frozen.grad.abs().sum() == 0


def test_warmup_switches_the_term_off_then_on():
    critic, obj = _critic(), ValueAlignment(VarConfig(warmup=3))
    for update in (0, 1, 2):
        obs = _obs()
        out = obj.contribute(obs, _ctx(critic, update))
        assert out.losses["weighted"].item() == 0.0 and not out.losses["weighted"].requires_grad
        assert out.metrics["var/active"].item() == 0.0
        assert out.metrics["var/loss"].item() > 0                    # still logged (Fig. 8)
    obs = _obs()
    out = obj.contribute(obs, _ctx(critic, 3))
    assert out.metrics["var/active"].item() == 1.0 and out.losses["weighted"].item() > 0
    out.losses["weighted"].backward()
    assert obs.post.grad.abs().sum() > 0


def test_slow_critic_and_bad_settings():
    critic, obs = _critic(), _obs()
    ctx = _ctx(critic)
    out = ValueAlignment(VarConfig(warmup=0, critic="slow")).contribute(obs, ctx)
    assert out.metrics["var/loss"].item() == pytest.approx(
        _hand_l_var(ctx.agent.slow_critic, obs).mean().item(), rel=1e-5)
    for key, val in (("weight", "fixed"), ("direction", "both"), ("critic", "target")):
        with pytest.raises(ConfigError, match=f"var.{key}"):
            ValueAlignment(VarConfig(**{key: val}))


# ---------------------------------------------------------------------------- on backbones
def _batch(cfg, info) -> dict[str, torch.Tensor]:
    Bt, Tt = cfg.run.batch_size, cfg.run.batch_length
    g = torch.Generator().manual_seed(0)
    act = torch.randint(0, info["action_dim"], (Bt, Tt), generator=g)
    first = torch.zeros(Bt, Tt, dtype=torch.bool)
    first[0, 4] = True
    term = torch.zeros(Bt, Tt, dtype=torch.bool)
    term[0, 3] = True
    return {"obs": torch.randn(Bt, Tt, *info["obs_shape"], generator=g),
            "action": torch.nn.functional.one_hot(act, info["action_dim"]).float(),
            "reward": torch.rand(Bt, Tt, generator=g), "is_first": first,
            "is_last": term.clone(), "is_terminal": term}


INFO = {"obs_kind": "vector", "obs_shape": (4,), "discrete": True, "action_dim": 2}


@pytest.mark.parametrize("preset", ["tiny", "vae-lstm-tiny"])
def test_on_backbone_gradients_reach_world_model_not_critic(preset):
    from vawm.agent import Agent
    torch.manual_seed(0)
    cfg = build_config(preset, {"objective": "var"}, ["var.warmup=0"])
    agent = Agent(cfg, INFO)
    torch.nn.init.normal_(agent.ac.critic.net.out.weight, std=0.1)
    batch = _batch(cfg, INFO)
    obs = agent.wm.observe(batch)
    ctx = Context(agent.wm, agent.ac, 0, batch)
    out = agent.objective.contribute(obs, ctx)
    out.losses["weighted"].backward()
    assert all(p.grad is None for p in agent.ac.critic.parameters())
    enc = [p for p in agent.wm.encoder.parameters() if p.grad is not None]
    assert enc and sum(p.grad.abs().sum() for p in enc) > 0
    # the full update (world model, then actor-critic) still trains the critic
    before = [p.detach().clone() for p in agent.ac.critic.parameters()]
    for p in agent.parameters():
        p.grad = None
    m = agent.train_step(batch)
    assert m["var/active"] == 1.0 and math.isfinite(m["var/weighted"])
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.ac.critic.parameters(),
                                                     strict=True))


def test_build_objective_and_short_training_run(tmp_path):
    from vawm.train import Trainer
    cfg = build_config("tiny", {"objective": "var"})
    assert isinstance(build_objective(cfg, None), ValueAlignment)
    cfg = build_config("tiny", {"objective": "var", "steps": 80},
                       ["var.warmup=10", "run.log_every=40", "run.checkpoint_every=1000"])
    summary = Trainer(cfg, tmp_path, progress=False).train()
    assert summary["status"] == "finished" and summary["objective"] == "var"
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "var/loss" in r]
    assert logged and all(k in logged[-1] for k in ("var/beta", "var/kl_dyn", "var/weighted",
                                                    "wm/loss_dyn"))
    assert logged[-1]["var/active"] > 0


def test_betas_are_the_backbones_unless_set():
    """eq. 4 uses eq. 3's symbols: beta_dyn / beta_rep follow the backbone's KL weights."""
    from vawm.objectives import build_objective
    v2023 = build_objective(build_config("tiny", {"objective": "var"}), None)
    assert (v2023.beta_dyn, v2023.beta_rep) == (0.5, 0.1)
    v2025 = build_objective(build_config("tiny2025", {"objective": "var"}), None)
    assert (v2025.beta_dyn, v2025.beta_rep) == (1.0, 0.1)
    own = build_objective(build_config("tiny2025", {"objective": "var"}, ["var.beta_dyn=0.3"]),
                          None)
    assert (own.beta_dyn, own.beta_rep) == (0.3, 0.1)
    vae = build_objective(build_config("tiny", {"objective": "var", "backbone": "vae-lstm"}),
                          None)
    assert (vae.beta_dyn, vae.beta_rep) == (0.5, 0.1)
