"""RSSM specifics: images and the block GRU, resets at is_first, the weighted loss by hand
(shapes, imagination and acting: tests/test_backbone_contract.py)."""

import pytest
import torch

from vawm.config import ConfigError, build_config
from vawm.worldmodels.rssm import RSSM


def _batch(B=3, T=6, obs_shape=(4,), A=2, image=False):
    g = torch.Generator().manual_seed(1)
    obs = (torch.randint(0, 255, (B, T, *obs_shape), generator=g).to(torch.uint8) if image
           else torch.randn(B, T, *obs_shape, generator=g))
    act = torch.nn.functional.one_hot(torch.randint(0, A, (B, T), generator=g), A).float()
    z = torch.zeros(B, T, dtype=torch.bool)
    return {"obs": obs, "action": act, "reward": torch.randn(B, T, generator=g), "is_first": z.clone(),
            "is_last": z.clone(), "is_terminal": z.clone()}


def _model(image=False, obs_shape=(4,), gru="layernorm"):
    cfg = build_config("tiny", sets=[f"rssm.gru={gru}"]).rssm
    torch.manual_seed(0)
    return RSSM(cfg, obs_shape, 2, image)


def test_image_and_block_gru():
    m = _model(image=True, obs_shape=(3, 64, 64), gru="block")
    o = m.observe(_batch(obs_shape=(3, 64, 64), image=True))
    assert o.post.shape == (3, 6, m.feat_dim) and torch.isfinite(o.terms["recon"]).all()
    loss, _ = m.loss(o)
    loss.backward()
    assert m.encoder.net[0].weight.grad is not None


@pytest.mark.parametrize("cnn", ["v2023", "v2025"])
@pytest.mark.parametrize("side,last", [(64, 4), (96, 6), (128, 8)])
def test_encoder_and_decoder_follow_the_image_size(side, last, cnn):
    """VaR (anon. 2025) Fig. 2b's inputs: four stride-2 stages at every size (DreamerV3's code
    allows a last feature map of 3 to 16), and the decoder returns the input's shape."""
    cfg = build_config("tiny", sets=[f"rssm.cnn={cnn}"]).rssm
    torch.manual_seed(0)
    m = RSSM(cfg, (3, side, side), 2, True)
    b = _batch(B=2, T=3, obs_shape=(3, side, side), image=True)
    assert m.encoder.out_shape[-2:] == (last, last)
    o = m.observe(b)
    assert m.decode(o.post).shape == (2, 3, 3, side, side)
    assert torch.isfinite(o.terms["recon"]).all()


def test_is_first_resets_state():
    m = _model()
    b1 = _batch()
    b2 = {k: v.clone() for k, v in b1.items()}
    b2["obs"][:, :3] += 5.0                         # different history before the reset
    b2["action"][:, :3] = b2["action"][:, :3].flip(-1)
    for b in (b1, b2):
        b["is_first"][:, 3] = True
    torch.manual_seed(7)
    o1 = m.observe(b1)
    torch.manual_seed(7)
    o2 = m.observe(b2)
    assert not torch.allclose(o1.post[:, :3], o2.post[:, :3])
    assert torch.allclose(o1.post[:, 3:], o2.post[:, 3:])   # nothing leaks across the reset


def test_loss_weights_multiply_before_free_bits():
    m = _model()
    o = m.observe(_batch())
    base, _ = m.loss(o)
    same, _ = m.loss(o, torch.ones(3, 6))
    assert torch.allclose(base, same)
    c, t = m.cfg, o.terms
    w = torch.rand(3, 6) + 0.5
    pred = t["recon"] + t["reward"] + t["cont"]
    expect = (w * pred + c.beta_dyn * torch.clamp(w * t["dyn"], min=c.free_nats)
              + c.beta_rep * torch.clamp(w * t["rep"], min=c.free_nats)).mean()
    got, _ = m.loss(o, w)
    assert torch.allclose(got, expect)


def test_head_depth_follows_the_size_preset():
    """DreamerV3 2023's sizes set every MLP's depth, the reward and continue heads included."""
    for size, depth in (("xs", 1), ("s", 2), ("m", 3)):
        cfg = build_config(size).rssm
        assert cfg.head_layers == cfg.layers == depth
        m = RSSM(cfg, (4,), 2, False)
        for head in (m.reward_head, m.cont_head):
            assert sum(isinstance(x, torch.nn.Linear) for x in head.modules()) == depth + 1


def test_v2025_preset_is_the_2025_model():
    """DreamerV3 2025 (current code): h, z and a / max(1, |a|) embedded separately into the block
    GRU, a 2-layer prior, a zero initial state, symexp-spaced twohot bins."""
    from vawm.nets.dist import TwoHotSymexp
    from vawm.nets.layers import BlockGRU, NormDense
    cfg = build_config("tiny2025")
    r = cfg.rssm
    assert (r.dyn_input, r.imglayers, r.initial, r.twohot) == ("split", 2, "zeros", "symexp")
    assert cfg.agent.twohot == "symexp" and cfg.agent.actor_ent == 3e-4 and cfg.optim.warmup == 1000
    m = RSSM(r, (4,), 2, False)
    assert isinstance(m.gru, BlockGRU) and isinstance(m.gru.inp, torch.nn.Identity)
    assert [x.linear.in_features for x in m.dyn_in] == [r.deter, r.stoch * r.classes, 2]
    assert sum(isinstance(x, NormDense) for x in m.img_out.modules()) == 2
    assert not hasattr(m, "h0")
    s = m.initial(3)
    assert s.deter.abs().sum() == 0 and s.stoch.abs().sum() == 0
    assert isinstance(m.reward_dist(torch.zeros(1, m.feat_dim)), TwoHotSymexp)
    # large actions are normalised by max(1, |a|) before the action embedding
    big = m.core(s.deter, s.stoch, torch.full((3, 2), 10.0))
    one = m.core(s.deter, s.stoch, torch.ones(3, 2))
    assert torch.allclose(big, one)
    with pytest.raises(ConfigError, match="gru=block"):
        build_config("tiny", sets=["rssm.dyn_input=split"])


def test_v2025_continuation_carries_the_discount():
    cfg = build_config("tiny2025")
    assert cfg.rssm.cont_target == 0.997 and cfg.agent.cont_disc and cfg.agent.imag_cont == "prob"
    m = RSSM(cfg.rssm, (4,), 2, False)
    b = {"obs": torch.randn(1, 3, 4), "action": torch.zeros(1, 3, 2), "reward": torch.zeros(1, 3),
         "is_first": torch.tensor([[True, False, False]]), "is_last": torch.zeros(1, 3, dtype=bool),
         "is_terminal": torch.tensor([[False, False, True]])}
    o = m.observe(b)
    logit = m.cont_head(o.post).squeeze(-1)
    target = torch.tensor([[0.997, 0.997, 0.0]])
    expect = torch.nn.functional.binary_cross_entropy_with_logits(logit, target, reduction="none")
    assert torch.allclose(o.terms["cont"], expect)


def test_v2025_cnn():
    """DreamerV3 2025's CNN: 5x5 convs + 2x2 max-pool with channels depth x (2, 3, 4, 4), a
    block-linear spatial decoder input, sigmoid outputs; images round trip in shape and range."""
    from vawm.nets.conv import ConvDecoder2025, ConvEncoder2025
    cfg = build_config("tiny2025", sets=["rssm.cnn_depth=4"]).rssm
    assert cfg.cnn == "v2025"
    m = RSSM(cfg, (3, 64, 64), 2, True)
    assert isinstance(m.encoder, ConvEncoder2025) and isinstance(m.decoder, ConvDecoder2025)
    assert [c.out_channels for c in m.encoder.convs] == [8, 12, 16, 16]
    assert all(c.kernel_size == (5, 5) for c in m.encoder.convs)
    assert m.encoder.dout == 16 * 4 * 4
    b = {"obs": torch.randint(0, 256, (2, 3, 3, 64, 64), dtype=torch.uint8),
         "action": torch.zeros(2, 3, 2), "reward": torch.zeros(2, 3),
         "is_first": torch.zeros(2, 3, dtype=torch.bool), "is_last": torch.zeros(2, 3, dtype=torch.bool),
         "is_terminal": torch.zeros(2, 3, dtype=torch.bool)}
    o = m.observe(b)
    img = m.decode(o.post)
    assert img.shape == (2, 3, 3, 64, 64) and img.min() >= 0 and img.max() <= 255
    o.terms["recon"].sum().backward()
    assert m.decoder.sp0.weight.grad is not None and m.encoder.convs[0].weight.grad is not None


def test_v2025_three_optimisers_are_its_one_optimiser():
    """DreamerV3 2025 steps one LaProp + AGC optimiser over all modules. AGC clips each tensor
    against its own norm and LaProp is elementwise, so with one learning rate, epsilon, clip and
    warm-up our three optimisers (world model, actor, critic) take exactly the same steps as one
    optimiser over their union. The preset must keep the three settings equal for this to hold."""
    from vawm.nets.optim import Optim
    cfg = build_config("v2025").optim
    assert cfg.kind == "laprop" and cfg.model_lr == cfg.actor_lr == cfg.critic_lr
    assert cfg.model_eps == cfg.ac_eps and cfg.model_clip == cfg.ac_clip
    torch.manual_seed(0)
    parts = [[torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(4))],
             [torch.nn.Parameter(torch.randn(2, 2))], [torch.nn.Parameter(torch.randn(7) * 1e-4)]]
    union = [torch.nn.Parameter(p.detach().clone()) for ps in parts for p in ps]
    args = (cfg.kind, cfg.model_lr, cfg.model_eps, cfg.model_clip, 3)   # a short warm-up
    separate = [Optim(ps, *args) for ps in parts]
    one = Optim(union, *args)
    for _ in range(6):
        grads = [torch.randn_like(p) * 10 for ps in parts for p in ps]   # large: AGC clips
        for p, q, g in zip([p for ps in parts for p in ps], union, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        for opt in separate:
            opt.step()
        one.step()
    for p, q in zip([p for ps in parts for p in ps], union, strict=True):
        assert torch.equal(p, q)


def test_cont_terminal_weight_scales_terminal_steps_only():
    """rssm.cont_terminal_weight=w: the continuation BCE of terminal steps times w, others as
    they were (by hand from the head's probability)."""
    from vawm.replay import random_batch
    from vawm.worldmodels import build_backbone
    info = {"obs_kind": "vector", "obs_shape": (4,), "discrete": True, "action_dim": 2}
    terms = {}
    for w in (1.0, 7.0):
        cfg = build_config("tiny", None, [f"rssm.cont_terminal_weight={w}"])
        torch.manual_seed(0)
        wm = build_backbone(cfg, info)
        batch = random_batch(cfg, info, seed=3, p_term=0.3)
        obs = wm.observe(batch)
        terms[w] = obs.terms["cont"].detach()
        p = torch.sigmoid(wm.cont_head(obs.post).squeeze(-1)).detach()
        term = batch["is_terminal"].bool()
        bce = -torch.where(term, torch.log(1 - p), torch.log(p))
        torch.testing.assert_close(terms[w], bce * torch.where(term, w, 1.0), rtol=1e-4, atol=1e-5)
    term = batch["is_terminal"].bool()
    assert term.any() and (~term).any()
    torch.testing.assert_close(terms[7.0][term], 7 * terms[1.0][term])
    torch.testing.assert_close(terms[7.0][~term], terms[1.0][~term])
