"""The speed switches: ``run.precision=bf16`` and ``run.compile``.

bf16: the same update from the same initial weights, batch and RNG state must give nearly the same
losses as fp32, the matmuls must really run in bf16 (a forward hook sees bfloat16 outputs), and
parameters, optimiser state and losses stay float32. compile: the same updates as eager, the same
checkpoint keys, and a clear error where it cannot run."""

import pytest
import torch
from torch import nn

from vawm.agent import Agent
from vawm.config import ConfigError, build_config
from vawm.replay import random_batch

VECTOR = {"obs_kind": "vector", "obs_shape": (4,), "discrete": True, "action_dim": 2}
IMAGE = {"obs_kind": "image", "obs_shape": (3, 16, 16), "discrete": True, "action_dim": 3}
CONTINUOUS = {"obs_kind": "vector", "obs_shape": (3,), "discrete": False, "action_dim": 1}


def _batch(cfg, info, seed=0):
    return random_batch(cfg, info, seed=seed, p_first=0.05, p_term=0.05)


def _one_update(preset, backbone, objective, info, precision):
    cfg = build_config(preset, {"backbone": backbone, "objective": objective},
                       ["var.warmup=0", "tempo.every=1", f"run.precision={precision}"])
    torch.manual_seed(0)
    agent = Agent(cfg, info)
    seen = set()
    hooks = [m.register_forward_hook(lambda m, i, o: seen.add(o.dtype))
             for m in agent.modules() if isinstance(m, nn.Linear)]
    torch.manual_seed(1)
    metrics = agent.train_step(_batch(cfg, info))
    for h in hooks:
        h.remove()
    return agent, metrics, seen


CASES = [("tiny", "rssm", "none", VECTOR), ("tiny", "rssm", "var", IMAGE),
         ("tiny", "rssm", "tempo", VECTOR), ("tiny", "rssm", "dream-critic", CONTINUOUS),
         ("storm-tiny", "tssm", "var", IMAGE), ("vae-lstm-tiny", "vae-lstm", "dream-critic", VECTOR)]


@pytest.mark.parametrize("preset, backbone, objective, info", CASES,
                         ids=[f"{c[1]}-{c[2]}-{c[3]['obs_kind']}" for c in CASES])
def test_bf16_update_matches_fp32(preset, backbone, objective, info):
    ref, m32, dtypes32 = _one_update(preset, backbone, objective, info, "fp32")
    agent, m16, dtypes16 = _one_update(preset, backbone, objective, info, "bf16")
    assert dtypes32 == {torch.float32}
    assert torch.bfloat16 in dtypes16                       # the matmuls ran in bf16
    for key in ("wm/loss", "agent/critic_loss"):
        assert abs(m16[key] - m32[key]) <= 0.02 * abs(m32[key]) + 1e-3, (key, m16[key], m32[key])
    assert all(torch.isfinite(torch.tensor(v)) for v in m16.values())
    assert {p.dtype for p in agent.parameters()} == {torch.float32}
    for opt in (agent.wm_opt, agent.ac.actor_opt, agent.ac.critic_opt):
        state = opt.state_dict()["state"]
        assert all(t.dtype == torch.float32 for s in state.values() for t in s.values()
                   if torch.is_tensor(t) and t.is_floating_point())
    # the update moved the weights by nearly the same amount in both precisions
    p32 = torch.cat([p.detach().flatten() for p in ref.wm.parameters()])
    p16 = torch.cat([p.detach().flatten() for p in agent.wm.parameters()])
    torch.manual_seed(0)
    p0 = torch.cat([p.detach().flatten() for p in Agent(ref.cfg, info).wm.parameters()])
    step32, step16 = p32 - p0, p16 - p0
    assert torch.nn.functional.cosine_similarity(step32, step16, dim=0) > 0.9


def test_acting_stays_fp32():
    cfg = build_config("tiny", sets=["run.precision=bf16"])
    agent = Agent(cfg, VECTOR)
    seen = set()
    hooks = [m.register_forward_hook(lambda m, i, o: seen.add(o.dtype))
             for m in agent.modules() if isinstance(m, nn.Linear)]
    carry = agent.wm.initial_carry(2)
    carry, action = agent.act(carry, torch.randn(2, 4), torch.zeros(2, 2), torch.ones(2, dtype=bool))
    for h in hooks:
        h.remove()
    assert seen == {torch.float32}                       # no bf16 matmul while acting
    assert action.dtype == torch.float32


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(ConfigError, match="run.precision"):
        build_config("tiny", sets=["run.precision=fp16"])


@pytest.mark.slow
def test_compiled_updates_match_eager():
    runs = {}
    for compiled in (False, True):
        cfg = build_config("tiny", {"objective": "var"},
                           ["var.warmup=0", f"run.compile={str(compiled).lower()}"])
        torch.manual_seed(0)
        agent = Agent(cfg, VECTOR)
        torch.manual_seed(1)
        runs[compiled] = (agent, [agent.train_step(_batch(cfg, VECTOR, seed)) for seed in (0, 1)])
    (eager, m_eager), (comp, m_comp) = runs[False], runs[True]
    assert any(hasattr(m, "_compiled_call_impl") and m._compiled_call_impl is not None
               for m in comp.modules())
    for a, b in zip(m_eager, m_comp, strict=True):
        for key in ("wm/loss", "var/loss", "agent/critic_loss", "agent/actor_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    assert list(comp.state_dict()) == list(eager.state_dict())     # checkpoints interchange


def test_compile_refuses_tempo_exact_meta_gradient():
    with pytest.raises(ConfigError, match="meta_grad=finite_diff"):
        build_config("tiny", {"objective": "tempo"}, ["run.compile=true"])


def test_twohot_head_reads_bf16_logits_in_full_precision():
    from vawm.nets.dist import TwoHotSymlog, symlog_bins
    bins = symlog_bins(255)
    logits = torch.randn(4, 255)
    ref = TwoHotSymlog(logits, bins)
    low = TwoHotSymlog(logits.bfloat16(), bins)
    assert low.logits.dtype == low.bins.dtype == torch.float32
    assert torch.equal(low.bins, ref.bins)             # bins are never rounded to bf16
    y = torch.tensor([0.3, 7.0, -120.0, 1500.0])
    assert torch.allclose(low.log_prob(y), ref.log_prob(y), atol=0.05)


def test_precision_auto_is_bf16_only_where_it_pays(monkeypatch):
    """run.precision=auto (the default): bf16 from AUTO_BF16_MIN_UNITS wide on a device with
    native bf16, fp32 below (the cpu preset's 128 units were slower in bf16) or without it."""
    import vawm.agent as agent_mod
    cpu = torch.device("cpu")
    for native in (True, False):
        monkeypatch.setattr(agent_mod, "native_bf16", lambda d, n=native: n)
        assert agent_mod.uses_bf16("auto", 256, cpu) is native
        assert agent_mod.uses_bf16("auto", 128, cpu) is False
        assert agent_mod.uses_bf16("bf16", 32, cpu) is True
        assert agent_mod.uses_bf16("fp32", 1024, cpu) is False
    monkeypatch.setattr(agent_mod, "native_bf16", lambda d: True)
    assert build_config("cpu").run.precision == "auto"
    assert Agent(build_config("tiny"), VECTOR).bf16(cpu) is False          # 32 units
    xs = build_config("xs", sets=["agent.units=256"])
    assert Agent(xs, VECTOR).bf16(cpu) is True


def test_precision_auto_keeps_the_latent_td_learner_in_fp32(monkeypatch):
    import vawm.agent as agent_mod
    monkeypatch.setattr(agent_mod, "native_bf16", lambda d: True)
    cont = {"obs_kind": "vector", "obs_shape": (5,), "discrete": False, "action_dim": 2}
    cfg = build_config("tiny", {"backbone": "latent"}, ["td.units=512", "agent.units=512"])
    assert Agent(cfg, cont).bf16(torch.device("cpu")) is False


# ---------------------------------------------------------------------------- run.onehot_gather
def _onehot_input(N, D, S, C, where, seed=0, st=False):
    """[N, F] with a block of S one-hot groups of C at the start, end or middle of D dense
    columns; some groups all zero; ``st``: the ones carry straight-through rounding (1 - 2^-24)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, C, (N, S), generator=g)
    z = torch.nn.functional.one_hot(idx, C).float()
    z[torch.rand(N, S, generator=g) < 0.2] = 0.0                   # all-zero groups
    if st:
        p = torch.rand(N, S, C, generator=g).softmax(-1)
        z = z + p - p                                              # 1 -> 1 +- ulp, as ST samples
    z = z.reshape(N, S * C)
    dense = torch.randn(N, D, generator=g)
    parts = {"end": [dense, z], "start": [z, dense], "middle": [dense[:, :2], z, dense[:, 2:]]}
    off = {"end": D, "start": 0, "middle": 2}[where]
    return torch.cat(parts[where], -1), (off, S, C)


@pytest.mark.parametrize("where", ["end", "start", "middle"])
@pytest.mark.parametrize("st", [False, True])
def test_onehot_linear_equals_linear_and_its_weight_gradient(where, st):
    from vawm.nets.onehot import clear_onehot_cache, onehot_linear
    x, layout = _onehot_input(64, 5, 4, 6, where, st=st)
    lin = torch.nn.Linear(x.shape[1], 7)
    clear_onehot_cache()
    y = onehot_linear(x, lin, layout)
    torch.testing.assert_close(y, lin(x))
    (g_gather,) = torch.autograd.grad((y * y).sum(), lin.weight)
    (g_dense,) = torch.autograd.grad((lin(x) ** 2).sum(), lin.weight)
    torch.testing.assert_close(g_gather, g_dense)


def test_onehot_index_cache_reuses_prefixes_and_sees_changes():
    from vawm.nets.onehot import clear_onehot_cache, onehot_linear
    x, layout = _onehot_input(40, 5, 4, 6, "end")
    lin = torch.nn.Linear(x.shape[1], 3)
    clear_onehot_cache()
    torch.testing.assert_close(onehot_linear(x, lin, layout), lin(x))
    torch.testing.assert_close(onehot_linear(x[:25], lin, layout), lin(x[:25]))   # a row prefix
    x[:, 5:] = x[:, 5:].roll(1, 0)                                 # in place: a new version
    torch.testing.assert_close(onehot_linear(x, lin, layout), lin(x))
    y, _ = _onehot_input(40, 5, 4, 6, "end", seed=1)                # another tensor
    torch.testing.assert_close(onehot_linear(y, lin, layout), lin(y))
    torch.testing.assert_close(onehot_linear(y[5:], lin, layout), lin(y[5:]))     # not a prefix


def test_sampled_classes_skip_the_argmax_and_give_the_same_numbers(monkeypatch):
    """A no-grad categorical sample remembers its classes; the gather reads them (no argmax:
    checked by making argmax fail) for the sample's concatenations and their detached views, with
    exactly the argmax path's result; an in-place change forgets them."""
    from vawm.nets import onehot
    from vawm.nets.dist import sample_categorical_st
    torch.manual_seed(0)
    N, D, S, C = 50, 5, 4, 6
    onehot.clear_onehot_cache()
    with torch.no_grad():
        z = sample_categorical_st(torch.log_softmax(torch.randn(N, S, C), -1))
    assert torch.equal(onehot.known_classes(z), z.argmax(-1))
    x = onehot.remember_classes(torch.cat([torch.randn(N, D), z.flatten(-2)], -1),
                                onehot.known_classes(z))
    lin = torch.nn.Linear(D + S * C, 7)
    ref = onehot.onehot_linear(x.clone(), lin, (D, S, C))          # the argmax path
    monkeypatch.setattr(torch.Tensor, "argmax", lambda *a, **k: pytest.fail("argmax ran"))
    assert torch.equal(onehot.onehot_linear(x, lin, (D, S, C)), ref)
    assert torch.equal(onehot.onehot_linear(x.detach(), lin, (D, S, C)), ref)
    monkeypatch.undo()
    x[:, D:] = x[:, D:].roll(1, 0)                                   # in place: a new version
    assert onehot.known_classes(x) is None
    torch.testing.assert_close(onehot.onehot_linear(x, lin, (D, S, C)), lin(x))
    onehot.clear_onehot_cache()


def test_imagination_with_remembered_classes_is_bit_identical(monkeypatch):
    """rssm's imagination under run.onehot_gather gives the same features and actions whether the
    sampled classes are remembered or found again by argmax."""
    from vawm.agent import Agent
    from vawm.nets import onehot
    cfg = build_config("tiny", sets=["run.onehot_gather=on"])
    agent = Agent(cfg, VECTOR)
    start = agent.wm.initial(16)
    policy = lambda f: agent.ac.actor(f).sample()  # noqa: E731
    out, argmaxes, argmax = {}, {}, torch.Tensor.argmax
    for cap in (4, 0):
        monkeypatch.setattr(onehot, "_KNOWN_MAX", cap)
        calls = []
        monkeypatch.setattr(torch.Tensor, "argmax",
                            lambda *a, calls=calls, **k: calls.append(1) or argmax(*a, **k))
        onehot.clear_onehot_cache()
        torch.manual_seed(0)
        with torch.no_grad():
            imag = agent.wm.imagine(start, policy, 5)
        out[cap], argmaxes[cap] = (imag.feat, imag.action), len(calls)
    assert all(torch.equal(a, b) for a, b in zip(out[4], out[0], strict=True))
    assert argmaxes[0] - argmaxes[4] >= 2 * (5 - 1)     # two a step saved after the start's


@pytest.mark.parametrize("backbone", ["rssm", "tssm"])
def test_onehot_gather_trains_like_the_dense_layers(backbone):
    """Three updates with run.onehot_gather=on end where the dense layers end (float rounding):
    the heads, actor, critics and (rssm) the imagination's input layer take the gather path."""
    from vawm.agent import Agent
    info = {"obs_kind": "vector", "obs_shape": (4,), "discrete": True, "action_dim": 2}
    out = {}
    for mode in ("off", "on"):
        cfg = build_config("tiny", {"backbone": backbone},
                           [f"run.onehot_gather={mode}", "agent.init=torch"])
        torch.manual_seed(0)
        agent = Agent(cfg, info)
        assert (agent.ac.critic.net.onehot is not None) == (mode == "on")
        torch.manual_seed(1)
        for k in range(3):
            agent.train_step(random_batch(cfg, info, seed=k))
        out[mode] = [p.detach().clone() for p in agent.parameters()]
    for a, b in zip(out["off"], out["on"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_onehot_gather_auto_threshold():
    from vawm.agent import AUTO_GATHER_MIN_WIDTH, uses_onehot_gather
    assert AUTO_GATHER_MIN_WIDTH == 1024
    assert uses_onehot_gather("auto", (256, 32, 32)) and not uses_onehot_gather("auto", (128, 16, 16))
    assert uses_onehot_gather("on", (128, 16, 16)) and not uses_onehot_gather("off", (256, 32, 32))
    assert not uses_onehot_gather("on", None)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_onehot_linear_in_other_dtypes(dtype):
    from vawm.nets.onehot import clear_onehot_cache, onehot_linear
    x, layout = _onehot_input(32, 5, 4, 6, "end")
    lin = torch.nn.Linear(x.shape[1], 7).to(dtype)
    clear_onehot_cache()
    y = onehot_linear(x.to(dtype), lin, layout)
    assert y.dtype == dtype
    tol = {"rtol": 2e-2, "atol": 2e-2} if dtype == torch.bfloat16 else {}
    torch.testing.assert_close(y, lin(x.to(dtype)), **tol)
