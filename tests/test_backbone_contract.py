"""The contract every registered backbone keeps (the seam objectives and the agent rely on).

Parametrised over ``BACKBONES``, each built at the ``tiny`` preset: a new backbone is checked by
registering it, nothing else.
"""

import dataclasses

import pytest
import torch

from vawm.config import build_config
from vawm.replay import random_batch
from vawm.state import tree_map
from vawm.worldmodels import BACKBONES, build_backbone

INFO = {"vector": {"obs_kind": "vector", "obs_shape": (4,), "discrete": True, "action_dim": 2},
        "image": {"obs_kind": "image", "obs_shape": (3, 32, 32), "discrete": True,
                  "action_dim": 3}}


def _make(name: str, kind: str = "vector", *sets: str):
    cfg = build_config("tiny", {"backbone": name}, list(sets))
    info = INFO[kind]
    torch.manual_seed(0)
    return cfg, info, build_backbone(cfg, info)


@pytest.mark.parametrize("kind", ["vector", "image"])
@pytest.mark.parametrize("name", list(BACKBONES))
def test_observe_and_loss(name, kind):
    cfg, info, wm = _make(name, kind)
    B, T = cfg.run.batch_size, cfg.run.batch_length
    obs = wm.observe(random_batch(cfg, info), step=3)
    F = wm.feat_dim
    assert obs.post.shape == obs.prior.shape == (B, T, F) and obs.step == 3
    assert obs.kl.shape == (B, T) and (obs.kl >= -1e-6).all()
    assert set(obs.terms) == set(wm.term_names)
    assert all(v.shape == (B, T) and torch.isfinite(v).all() for v in obs.terms.values())
    assert len(range(F)[wm.latent_slice]) > 0
    loss, metrics = wm.loss(obs)
    assert loss.shape == () and torch.isfinite(loss)
    assert all(torch.as_tensor(v).numel() == 1 for v in metrics.values())
    loss.backward()
    assert all(p.grad is not None for p in wm.representation_parameters() if p.requires_grad)
    if wm.has_decoder:
        assert wm.decode(obs.post.detach()).shape == (B, T, *info["obs_shape"])


@pytest.mark.parametrize("name", list(BACKBONES))
def test_weights_multiply_each_step_before_free_bits(name):
    """loss(obs, w): w_t multiplies step t's terms before free bits, so where every w_t KL_t is
    under the free bits the KL terms contribute no gradient to w_t."""
    key = BACKBONES[name].config_key
    free_bits = bool(BACKBONES[name].free_bits_terms)     # latent: no KL, no free bits
    cfg, info, wm = _make(name, "vector", *[f"{key}.free_nats=1.0"] * free_bits)
    obs = wm.observe(random_batch(cfg, info))
    obs = dataclasses.replace(obs, terms={k: v.detach() for k, v in obs.terms.items()})
    ones = torch.ones_like(obs.kl)
    assert torch.equal(wm.loss(obs)[0], wm.loss(obs, ones)[0])
    assert wm.loss(obs, 2 * ones)[0] > wm.loss(obs, ones)[0]          # every term grows with w
    if not free_bits:
        return

    def dl_dw(o):
        w = torch.full_like(o.kl, 1e-4, requires_grad=True)           # w_t KL_t << free bits
        (g,) = torch.autograd.grad(wm.loss(o, w)[0], w)
        return g

    # KL terms far above the free bits unweighted, still far below them once weighted
    big_kl = dataclasses.replace(obs, terms={k: (v + 10.0 if k in wm.free_bits_terms else v)
                                             for k, v in obs.terms.items()})
    assert wm.free_bits_terms and set(wm.free_bits_terms) <= set(wm.term_names)
    torch.testing.assert_close(dl_dw(obs), dl_dw(big_kl))
    g = dl_dw(obs)
    assert (g > 0).any()                                              # the other terms do count


@pytest.mark.parametrize("name", list(BACKBONES))
def test_imagine_act_and_state_dict(name):
    cfg, info, wm = _make(name)
    obs = wm.observe(random_batch(cfg, info))
    idx = torch.tensor([0, 5, 7])
    start = tree_map(lambda t: t[idx], obs.start)
    A, H = info["action_dim"], 4
    pol = lambda f: torch.nn.functional.one_hot(torch.zeros(f.shape[:-1], dtype=torch.long),
                                                A).float()
    im = wm.imagine(start, pol, H)
    assert im.feat.shape == (H + 1, 3, wm.feat_dim) and im.action.shape == (H + 1, 3, A)
    assert im.reward.shape == im.cont.shape == (H + 1, 3)
    assert ((im.cont >= 0) & (im.cont <= 1)).all()
    carry = wm.initial_carry(2)
    obs_t = random_batch(cfg, info)["obs"][:2, 0]
    for t in range(3):
        carry, feat = wm.act_step(carry, obs_t, pol(torch.zeros(2, 1)), torch.tensor([t == 0] * 2))
    assert feat.shape == (2, wm.feat_dim)
    # a state dict round trip gives the same model
    _, _, other = _make(name)
    other.load_state_dict(wm.state_dict())
    batch = random_batch(cfg, info, seed=4)
    wm.eval(), other.eval()
    torch.manual_seed(1)
    a = wm.observe(batch)
    torch.manual_seed(1)
    b = other.observe(batch)
    assert torch.equal(a.post, b.post) and torch.equal(wm.loss(a)[0], other.loss(b)[0])
