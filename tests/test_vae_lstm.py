"""The World Models VAE + LSTM backbone (``vae-lstm``, anon. 2026 §3.1, §4.1)."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vawm.config import ConfigError, build_config
from vawm.state import tree_map
from vawm.worldmodels import build_backbone
from vawm.worldmodels.base import Observed
from vawm.worldmodels.vae_lstm import (
    VAELSTM,
    VAELSTMConfig,
    VState,
    gaussian_kl,
    gaussian_nll,
    kl_beta,
    next_obs_error,
    std_normal_kl,
    vae_terms,
)

SMALL = dict(latent=6, hidden=16, lstm=12, cnn_depth=4)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is faster, and far faster on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small(image: bool = False, **kw) -> VAELSTM:
    cfg = VAELSTMConfig(**{**SMALL, **kw})
    return VAELSTM(cfg, (3, 32, 32) if image else (4,), 2, image)


def make_batch(B: int, T: int, obs_shape=(4,), A: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    if len(obs_shape) == 3:
        obs = torch.randint(0, 256, (B, T, *obs_shape), generator=g, dtype=torch.uint8)
    else:
        obs = torch.randn(B, T, *obs_shape, generator=g)
    act = F.one_hot(torch.randint(0, A, (B, T), generator=g), A).float()
    first = torch.zeros(B, T, dtype=torch.bool)
    first[0, 3] = True
    term = torch.zeros(B, T, dtype=torch.bool)
    term[0, 2] = True
    return {"obs": obs, "action": act, "reward": torch.ones(B, T), "is_first": first,
            "is_last": term.clone(), "is_terminal": term}


# ---------------------------------------------------------------------------- the loss math
def test_vae_terms_hand_computed():
    x, x_hat = torch.tensor([1.0, 2.0]), torch.zeros(2)
    mu, std = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.5])
    recon, kl = vae_terms(x, x_hat, mu, std)
    assert recon.item() == pytest.approx(5.0)                     # 1^2 + 2^2
    # 0.5 (1 + 1 - 1 - 0) + 0.5 (0 + 0.25 - 1 - 2 ln 0.5)
    assert kl.item() == pytest.approx(0.5 + 0.5 * (0.25 - 1 - 2 * math.log(0.5)), abs=1e-6)
    assert std_normal_kl(torch.zeros(3), torch.ones(3)).item() == 0.0


def test_gaussian_kl_and_nll_match_torch():
    g = torch.Generator().manual_seed(0)
    mq, mp = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    sq, sp = torch.rand(5, 3, generator=g) + 0.1, torch.rand(5, 3, generator=g) + 0.1
    D = torch.distributions
    ref = D.kl_divergence(D.Normal(mq, sq), D.Normal(mp, sp)).sum(-1)
    torch.testing.assert_close(gaussian_kl(mq, sq, mp, sp), ref)
    x = torch.randn(5, 3, generator=g)
    torch.testing.assert_close(gaussian_nll(x, mp, sp), -D.Normal(mp, sp).log_prob(x).sum(-1))


def test_backbone_loss_hand_computed_weights_and_beta():
    m = small(beta_anneal=100)
    B, T = 2, 3
    terms = {k: torch.full((B, T), v) for k, v in
             dict(recon=5.0, kl=2.0, reward=0.25, dyn=1.0, cont=0.5).items()}
    obs = Observed(torch.zeros(B, T, 1), torch.zeros(B, T, 1), terms["kl"], terms)
    loss, met = m.loss(obs)
    assert loss.item() == pytest.approx(5 + 1.0 * 2 + 0.25 + 1 + 0.5)
    assert met["wm/beta"].item() == 1.0                            # update 0: beta 1
    obs.step = 100                                                 # fully annealed: beta 0.1
    loss, _ = m.loss(obs, weights=torch.full((B, T), 2.0))
    assert loss.item() == pytest.approx(2 * (5 + 0.1 * 2 + 0.25 + 1 + 0.5))
    m.cfg.free_nats = 3.0                                          # max(3, w * kl) with w * kl = 4
    loss, _ = m.loss(obs, weights=torch.full((B, T), 2.0))
    assert loss.item() == pytest.approx(2 * (5 + 0.25 + 1 + 0.5) + 0.1 * 4)


def test_beta_annealing_schedule_counts_updates_and_checkpoints():
    assert kl_beta(0) == 1.0
    assert kl_beta(5_000) == pytest.approx(0.55)
    assert kl_beta(10_000) == pytest.approx(0.1) and kl_beta(50_000) == pytest.approx(0.1)
    assert kl_beta(3, 1.0, 0.1, 0) == 0.1
    m = small(beta_anneal=4)
    batch = make_batch(2, 5)
    betas = []
    for step in range(6):
        obs = m.observe(batch, step)                               # the update is explicit
        loss, met = m.loss(obs)
        _, again = m.loss(obs, torch.ones(2, 5))                   # re-scoring (TEMPO): same beta
        with torch.no_grad():                                      # a no-grad re-run: same beta
            _, rerun = m.loss(m.observe(batch, step))
        assert again["wm/beta"] == met["wm/beta"] == rerun["wm/beta"]
        loss.backward()
        betas.append(met["wm/beta"].item())
    assert betas == pytest.approx([1.0, 0.775, 0.55, 0.325, 0.1, 0.1])
    # the schedule is no module state: checkpoints of the old hidden counter still load
    sd = m.state_dict()
    sd["updates"] = torch.tensor(6)
    small(beta_anneal=4).load_state_dict(sd)


def test_lstm_step_matches_lstm_cell():
    m = small()
    x, h, c = torch.randn(4, SMALL["latent"] + 2), torch.randn(4, 12), torch.randn(4, 12)
    h2, c2 = m._lstm_step(m._lstm_inputs(x[:, :-2], x[:, -2:]), h, c)
    hr, cr = m.lstm(x, (h, c))
    torch.testing.assert_close(h2, hr)
    torch.testing.assert_close(c2, cr)


# ---------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("image", [False, True])
def test_observe_shapes(image):
    m = small(image)
    B, T, F_ = 3, 6, SMALL["latent"] + SMALL["lstm"]
    batch = make_batch(B, T, (3, 32, 32) if image else (4,))
    obs = m.observe(batch)
    assert m.feat_dim == F_
    assert obs.post.shape == obs.prior.shape == (B, T, F_)
    assert obs.post_logits is None and obs.prior_logits is None
    assert set(obs.terms) == set(m.term_names)
    assert all(v.shape == (B, T) for v in obs.terms.values())
    assert obs.kl.shape == (B, T)
    assert obs.extras["prior_mean"].shape == (B, T, SMALL["latent"])
    assert ("pred_err" in obs.extras) == (not image)
    assert obs.start.h.shape == obs.start.c.shape == (B * T, SMALL["lstm"])
    assert obs.start.z.shape == (B * T, SMALL["latent"])
    # h resets to 0 at chunk starts and episode starts; the artificial reset masks dyn
    assert obs.post[:, 0, -SMALL["lstm"]:].abs().max() == 0
    assert obs.post[0, 3, -SMALL["lstm"]:].abs().max() == 0
    assert (obs.terms["dyn"][:, 0] == 0).all() and (obs.terms["dyn"][:, 1:] > 0).all()
    loss, met = m.loss(obs)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in m.representation_parameters())


def test_imagine_shapes_and_subsampled_start():
    m = small()
    B, T, H, A = 2, 5, 4, 2
    obs = m.observe(make_batch(B, T))
    idx = torch.tensor([0, 3, 7])
    start = tree_map(lambda t: t[idx], obs.start)
    policy = lambda f: F.one_hot(torch.randint(0, A, f.shape[:-1]), A).float()
    imag = m.imagine(start, policy, H)
    assert imag.feat.shape == (H + 1, 3, m.feat_dim)
    assert imag.action.shape == (H + 1, 3, A)
    assert imag.reward.shape == imag.cont.shape == (H + 1, 3)
    assert ((imag.cont >= 0) & (imag.cont <= 1)).all()
    torch.testing.assert_close(imag.feat[0], obs.post.reshape(B * T, -1)[idx].detach())
    # grad=True: returns backpropagate through the LSTM dynamics, never into the start state
    imag = m.imagine(start, lambda f: torch.softmax(f[..., :A], -1), H)
    imag.reward.sum().backward()
    assert m.lstm.weight_hh.grad is not None and m.encoder.out.weight.grad is None


def test_act_step_filters_like_observe():
    """With a deterministic encoder, acting step by step reproduces observe's states."""
    m = small()
    B, T = 2, 6
    batch = make_batch(B, T)
    post = m.posterior
    m.posterior = lambda o: (post(o)[0], torch.zeros_like(post(o)[1]))
    obs = m.observe(batch)
    carry = m.initial_carry(B)
    assert isinstance(carry[0], VState) and carry[1].shape == (B, 2)
    prev = torch.zeros(B, 2)
    for t in range(T):
        first = batch["is_first"][:, t] | (t == 0)
        carry, feat = m.act_step(carry, batch["obs"][:, t], prev, first)
        torch.testing.assert_close(feat, obs.post[:, t].detach())
        prev = batch["action"][:, t]


def test_bad_config_fails_loudly():
    with pytest.raises(ConfigError, match="dyn_loss"):
        small(dyn_loss="mdn")


# ---------------------------------------------------------------------------- learning
def _cartpole_random(n: int, seed: int) -> dict:
    env = gym.make("CartPole-v1")
    rng = np.random.default_rng(seed)
    rec: dict[str, list] = {k: [] for k in ("obs", "action", "reward", "is_first", "is_terminal")}
    obs, _ = env.reset(seed=seed)
    first, reward, term = True, 0.0, False
    for _ in range(n):
        a = int(rng.integers(2))
        for k, v in (("obs", obs), ("action", np.eye(2)[a]), ("reward", reward),
                     ("is_first", first), ("is_terminal", term)):
            rec[k].append(v)
        if term:
            (obs, _), first, reward, term = env.reset(), True, 0.0, False
        else:
            obs, reward, term, _, _ = env.step(a)
            first = False
    return {k: torch.as_tensor(np.array(v), dtype=torch.bool if k.startswith("is_")
                               else torch.float32) for k, v in rec.items()}


def test_learns_cartpole_dynamics():
    """A few hundred updates on random-policy CartPole: the held-out one-step prediction error
    falls far below an untrained model's and below predicting the data mean."""
    torch.manual_seed(0)
    train, test = _cartpole_random(3000, 0), _cartpole_random(600, 1)
    m = VAELSTM(VAELSTMConfig(latent=8, hidden=48, lstm=48, beta_anneal=50), (4,), 2, False)
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    held_out = {k: v[None] for k, v in test.items()}
    untrained = next_obs_error(m, held_out)
    untrained = untrained[0] / untrained[1]
    o, valid = test["obs"], ~test["is_first"]
    mean_pred = (o - train["obs"].mean(0)).pow(2).mean(-1)[valid].mean().item()
    rng = np.random.default_rng(0)
    for step in range(200):
        idx = torch.as_tensor(rng.integers(0, 3000 - 16, 16)[:, None] + np.arange(16))
        loss, _ = m.loss(m.observe({k: v[idx] for k, v in train.items()}, step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    err, n = next_obs_error(m, held_out)
    err /= n
    assert n == int(valid.sum())
    assert err < 0.4 * mean_pred and err < 0.4 * untrained, (err, mean_pred, untrained)


# ---------------------------------------------------------------------------- presets / training
def test_cartpole_preset_has_the_paper_settings():
    cfg = build_config("cartpole-vae-lstm")
    assert (cfg.env, cfg.backbone, cfg.steps) == ("gym:CartPole-v1", "vae-lstm", 50_000)
    assert cfg.optim.kind == "adam"
    assert cfg.optim.model_lr == cfg.optim.actor_lr == cfg.optim.critic_lr == 1e-3
    assert cfg.run.batch_size == 32 and cfg.agent.horizon == 15 and cfg.agent.gamma == 0.99
    assert cfg.dream_critic.scale == 0.5 and cfg.run.eval_episodes == 100
    v = cfg.vae_lstm
    assert (v.latent, v.lstm, v.layers, v.beta_start, v.beta_end) == (32, 128, 2, 1.0, 0.1)
    m = build_backbone(cfg, {"obs_kind": "vector", "obs_shape": (4,), "action_dim": 2,
                             "discrete": True})
    assert m.feat_dim == 32 + 128


def test_study_sweep_file():
    from vawm.sweep.spec import load_sweep
    sweep = load_sweep("experiments/cartpole_dream_critic.yaml")
    assert len(sweep.cells) == 10
    assert {c.objective for c in sweep.cells} == {"none", "dream-critic"}
    assert {c.preset for c in sweep.cells} == {"cartpole-vae-lstm"}


@pytest.mark.parametrize("objective", ["none", "dream-critic", "var"])
def test_trains_end_to_end(tmp_path, objective):
    from vawm.train import Trainer
    cfg = build_config("vae-lstm-tiny", {"objective": objective, "steps": 90},
                       ["run.prefill=50", "run.eval_episodes=1", "run.log_every=45"])
    summary = Trainer(cfg, tmp_path, progress=False).train()
    assert summary["updates"] > 0 and math.isfinite(summary["eval_return_mean"])
    rows = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert any("wm/pred_mse" in r for r in rows)
