"""Building blocks: normalised dense layers, MLPs, CNN encoder/decoder, GRU cells.

DreamerV3 2023 uses LayerNorm + SiLU; the 2025 version RMSNorm + SiLU and a block-diagonal GRU.
Both are selected by ``norm`` / ``gru`` arguments so presets can switch between them.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from vawm.nets.dist import full_precision


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-4):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.scale


def make_norm(kind: str, dim: int) -> nn.Module:
    if kind == "layer":
        return nn.LayerNorm(dim, eps=1e-3)
    if kind == "rms":
        return RMSNorm(dim)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose from layer, rms, none")


def make_act(kind: str) -> nn.Module:
    acts = {"silu": nn.SiLU, "elu": nn.ELU, "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}
    if kind not in acts:
        raise ValueError(f"unknown activation {kind!r}; choose from {', '.join(acts)}")
    return acts[kind]()


class NormDense(nn.Module):
    """Linear (no bias when normalised) -> Norm -> Act: DreamerV3's dense layer."""

    def __init__(self, din: int, dout: int, norm: str = "layer", act: str = "silu"):
        super().__init__()
        self.linear = nn.Linear(din, dout, bias=norm == "none")
        self.norm = make_norm(norm, dout)
        self.act = make_act(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.linear(x)))


class _OneHotMatmul(torch.autograd.Function):
    """z @ W_z^T for a block z [N, S*C] with at most one nonzero per group of C, given as
    ``flat`` (the nonzero's flat column per group, [N, S]) and ``vals`` (its value, [N, S]): the
    forward gathers the S weight rows of each sample (``embedding_bag`` weighted by the values,
    S*U adds per row instead of S*C*U multiply-adds); the backward gives W_z the dense gradient
    grad^T z (z is a constant: the caller only takes this path when z needs no gradient)."""

    @staticmethod
    def forward(ctx, z: Tensor, weight: Tensor, flat: Tensor, vals: Tensor) -> Tensor:
        w = weight.t().contiguous().to(z.dtype)
        ctx.save_for_backward(z)
        ctx.weight_dtype = weight.dtype
        return F.embedding_bag(flat, w, mode="sum", per_sample_weights=vals.to(w.dtype))

    @staticmethod
    def backward(ctx, grad: Tensor):
        (z,) = ctx.saved_tensors
        gw = (grad.t().to(z.dtype) @ z).to(ctx.weight_dtype) if ctx.needs_input_grad[1] else None
        return None, gw, None, None


# the last input's (flat, vals): the heads read the same imagined features one after another
# (reward, continuation, critic, slow critic, actor on a prefix of the rows); the cached tensor is
# held so that its storage cannot be reused while the entry lives
_ONEHOT_CACHE: list = []


def _onehot_index(x2: Tensor, off: int, S: int, C: int) -> tuple[Tensor, Tensor]:
    """(flat [N, S], vals [N, S]) of the one-hot block of ``x2`` [N, F] (see :class:`_OneHotMatmul`),
    reused from the last call when ``x2`` is a row prefix of that call's tensor."""
    N = x2.shape[0]
    if _ONEHOT_CACHE:
        t, key, flat, vals = _ONEHOT_CACHE[0]
        if (key == (off, S, C, x2.stride(), x2.storage_offset(), x2._version, x2.dtype)
                and x2.untyped_storage().data_ptr() == t.untyped_storage().data_ptr()
                and N <= t.shape[0]):
            return flat[:N], vals[:N]
    zg = x2[:, off:off + S * C].unflatten(-1, (S, C))                # a view: no copy
    cls = zg.argmax(-1)                                               # the nonzero's class
    vals = zg.gather(-1, cls[..., None]).squeeze(-1)                  # its value (1 | 0)
    flat = cls + torch.arange(S, device=x2.device) * C
    _ONEHOT_CACHE[:] = [(x2, (off, S, C, x2.stride(), x2.storage_offset(), x2._version, x2.dtype),
                         flat, vals)]
    return flat, vals


def clear_onehot_cache() -> None:
    _ONEHOT_CACHE.clear()


def onehot_linear(x: Tensor, linear: nn.Linear, onehot: tuple[int, int, int]) -> Tensor:
    """``linear(x)`` where ``x[..., off : off + S*C]`` holds S one-hot (or all-zero) groups of C:
    the dense columns by a matmul, the one-hot block by a gather (:class:`_OneHotMatmul`). Equal
    to ``linear(x)`` up to float summation order. ``x`` must not need a gradient."""
    off, S, C = onehot
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    W = linear.weight
    end = off + S * C
    if end == x2.shape[-1]:                     # [dense, one-hot] (rssm) or [one-hot] only
        rest, w_rest = x2[:, :off], W[:, :off]
    elif off == 0:                              # [one-hot, dense] (tssm)
        rest, w_rest = x2[:, end:], W[:, end:]
    else:
        rest = torch.cat([x2[:, :off], x2[:, end:]], -1)
        w_rest = torch.cat([W[:, :off], W[:, end:]], -1)
    flat, vals = _onehot_index(x2, off, S, C)
    g = _OneHotMatmul.apply(x2[:, off:end], W[:, off:end], flat, vals.to(W.dtype))
    if linear.bias is not None:
        g = g + linear.bias
    if torch.is_autocast_enabled(x.device.type):     # autocast casts F.linear's operands
        y = F.linear(rest, w_rest) + g
    else:       # the dense columns' product accumulated onto the gathered rows in place
        y = g.addmm_(rest, w_rest.t())
    return y.reshape(*lead, -1)


class MLP(nn.Module):
    """``layers`` NormDense layers of ``units``, then an optional linear output (``dout``).

    ``zero_out`` zero-initialises the output layer (DreamerV3: reward and critic heads). The
    output layer's bf16 result is cast back to float32 (:func:`full_precision`): under
    ``run.precision=bf16`` the matmuls run in bfloat16 while distributions and losses read float32.
    """

    def __init__(self, din: int, dout: int | None, layers: int, units: int, norm: str = "layer",
                 act: str = "silu", zero_out: bool = False, out_scale: float = 1.0):
        super().__init__()
        mods: list[nn.Module] = []
        d = din
        for _ in range(layers):
            mods.append(NormDense(d, units, norm, act))
            d = units
        self.body = nn.Sequential(*mods)
        self.out = None
        self.dout = d
        if dout is not None:
            self.out = nn.Linear(d, dout)
            if zero_out:
                nn.init.zeros_(self.out.weight)
                nn.init.zeros_(self.out.bias)
            elif out_scale != 1.0:
                self.out.weight.data.mul_(out_scale)
            self.dout = dout

    #: (offset, S, C) of a one-hot block in the input, set by ``run.onehot_gather``: inputs that
    #: need no gradient then take :func:`onehot_linear` in the first layer
    onehot: tuple[int, int, int] | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.onehot is not None and len(self.body) and not x.requires_grad:
            first = self.body[0]
            x = first.act(first.norm(onehot_linear(x, first.linear, self.onehot)))
            x = self.body[1:](x)
        else:
            x = self.body(x)
        return full_precision(self.out(x)) if self.out is not None else x


class ChannelNorm(nn.Module):
    """Normalise conv features over channels at each pixel (DreamerV3's image layers)."""

    def __init__(self, kind: str, ch: int):
        super().__init__()
        self.norm = make_norm(kind, ch)

    def forward(self, x: Tensor) -> Tensor:  # [N, C, H, W]
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def conv_stages(size: tuple[int, int], most: int) -> int:
    """Stride-2 blocks for an image of ``size``: up to ``most``, while both sides stay divisible."""
    s = 0
    while s < most and size[0] % 2 ** (s + 1) == 0 and size[1] % 2 ** (s + 1) == 0:
        s += 1
    if s == 0:
        raise ValueError(f"image side {size} is odd; the CNN encoder needs sides divisible by 2 "
                         "(use a vector observation, e.g. env_cfg.minatar_obs=vector)")
    return s


class ConvEncoder(nn.Module):
    """Image [N, C, 64, 64] uint8-scaled to [-0.5, 0.5] -> flat features; channels depth*2^i."""

    def __init__(self, in_ch: int, depth: int = 32, stages: int = 4, norm: str = "layer",
                 act: str = "silu", size: tuple[int, int] = (64, 64)):
        super().__init__()
        mods: list[nn.Module] = []
        ch = in_ch
        for i in range(stages):
            out = depth * 2**i
            mods += [nn.Conv2d(ch, out, 4, 2, 1, bias=norm == "none"), ChannelNorm(norm, out),
                     make_act(act)]
            ch = out
        self.net = nn.Sequential(*mods)
        self.out_shape = (ch, size[0] // 2**stages, size[1] // 2**stages)
        self.dout = int(math.prod(self.out_shape))

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-3]
        y = self.net(x.reshape(-1, *x.shape[-3:]))
        return y.reshape(*lead, -1)


class ConvDecoder(nn.Module):
    """Features -> image mean in [-0.5, 0.5] space, mirroring :class:`ConvEncoder`."""

    def __init__(self, din: int, out_ch: int, depth: int = 32, stages: int = 4, norm: str = "layer",
                 act: str = "silu", size: tuple[int, int] = (64, 64)):
        super().__init__()
        ch = depth * 2 ** (stages - 1)
        self.start = (ch, size[0] // 2**stages, size[1] // 2**stages)
        self.linear = nn.Linear(din, int(math.prod(self.start)))
        mods: list[nn.Module] = []
        for i in reversed(range(stages)):
            last = i == 0
            out = out_ch if last else depth * 2 ** (i - 1)
            mods.append(nn.ConvTranspose2d(ch, out, 4, 2, 1, bias=last or norm == "none"))
            if not last:
                mods += [ChannelNorm(norm, out), make_act(act)]
            ch = out
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        y = self.linear(x.reshape(-1, x.shape[-1])).reshape(-1, *self.start)
        y = full_precision(self.net(y))
        return y.reshape(*lead, *y.shape[1:])


class LayerNormGRU(nn.Module):
    """DreamerV3 2023 GRU: one linear on [x, h] -> LayerNorm -> gates; update bias -1."""

    def __init__(self, din: int, deter: int, norm: str = "layer"):
        super().__init__()
        self.linear = nn.Linear(din + deter, 3 * deter, bias=norm == "none")
        self.norm = make_norm(norm, 3 * deter)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        parts = self.norm(self.linear(torch.cat([x, h], -1)))
        reset, cand, update = parts.chunk(3, -1)
        reset = torch.sigmoid(reset)
        cand = torch.tanh(reset * cand)
        update = torch.sigmoid(update - 1)
        return update * cand + (1 - update) * h


class BlockLinear(nn.Module):
    """Block-diagonal linear: ``blocks`` independent maps of din/blocks -> dout/blocks."""

    def __init__(self, din: int, dout: int, blocks: int, bias: bool = True):
        super().__init__()
        assert din % blocks == 0 and dout % blocks == 0, (din, dout, blocks)
        self.blocks = blocks
        self.weight = nn.Parameter(torch.empty(blocks, din // blocks, dout // blocks))
        nn.init.kaiming_uniform_(self.weight.view(blocks * (din // blocks), -1), a=math.sqrt(5))
        self.bias = nn.Parameter(torch.zeros(dout)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        xb = x.reshape(-1, self.blocks, x.shape[-1] // self.blocks)
        y = torch.einsum("nbi,bio->nbo", xb, self.weight).reshape(*lead, -1)
        return y + self.bias if self.bias is not None else y


class BlockGRU(nn.Module):
    """DreamerV3 2025 GRU: deter split into ``blocks`` groups, each mixing its own deter slice with
    the shared input embedding through ``dynlayers`` block-linear layers before the gates."""

    def __init__(self, din: int, deter: int, blocks: int = 8, hidden: int | None = None,
                 dynlayers: int = 1, norm: str = "rms", act: str = "silu", embed: bool = True):
        super().__init__()
        self.blocks = blocks
        g = blocks
        if embed:       # a shared linear embedding of the input, broadcast to every block
            hidden = hidden or deter
            self.inp: nn.Module = nn.Linear(din, hidden)
        else:           # the input is already embedded (DreamerV3 2025's dynin0..2)
            hidden, self.inp = din, nn.Identity()
        layers: list[nn.Module] = []
        d = deter + g * hidden
        for _ in range(dynlayers):
            layers += [BlockLinear(d, deter, g, bias=False), make_norm(norm, deter), make_act(act)]
            d = deter
        self.mix = nn.Sequential(*layers)
        self.gates = BlockLinear(d, 3 * deter, g)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        g = self.blocks
        lead = h.shape[:-1]
        e = self.inp(x)  # [..., hidden]
        hb = h.reshape(*lead, g, -1)
        eb = e.unsqueeze(-2).expand(*lead, g, e.shape[-1])
        y = torch.cat([hb, eb], -1).reshape(*lead, -1)
        y = self.mix(y)
        parts = self.gates(y).reshape(*lead, g, 3, -1)
        reset, cand, update = parts.unbind(-2)
        reset = torch.sigmoid(reset)
        cand = torch.tanh(reset * cand)
        update = torch.sigmoid(update - 1)
        out = update * cand + (1 - update) * hb
        return out.reshape(*lead, -1)


class ConvEncoderV2(nn.Module):
    """DreamerV2's image encoder (Hafner et al. 2021, its public code): 4x4 stride-2 convolutions
    without padding, channels depth x (1, 2, 4, 8), act after each (no norm in its configs); 64x64
    -> 31 -> 14 -> 6 -> 2, flattened (2 x 2 x 8 depth). Input [..., C, 64, 64] in [-0.5, 0.5]."""

    def __init__(self, in_ch: int, depth: int = 48, act: str = "elu",
                 kernels: tuple[int, ...] = (4, 4, 4, 4), size: tuple[int, int] = (64, 64)):
        super().__init__()
        if tuple(size) != (64, 64):
            raise ValueError(f"DreamerV2's CNN (rssm.cnn=v2) needs 64x64 images, not {tuple(size)}; "
                             "use rssm.cnn=v2023")
        mods: list[nn.Module] = []
        ch, side = in_ch, list(size)
        for i, k in enumerate(kernels):
            mods += [nn.Conv2d(ch, depth * 2**i, k, 2), make_act(act)]
            ch, side = depth * 2**i, [(x - k) // 2 + 1 for x in side]
        self.net = nn.Sequential(*mods)
        self.out_shape = (ch, *side)
        self.dout = int(math.prod(self.out_shape))

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-3]
        return self.net(x.reshape(-1, *x.shape[-3:])).reshape(*lead, -1)


class ConvDecoderV2(nn.Module):
    """DreamerV2's image decoder: a dense layer to 32 depth channels at 1x1, then transposed
    convolutions with kernels (5, 5, 6, 6), stride 2, no padding (1 -> 5 -> 13 -> 30 -> 64),
    channels depth x (4, 2, 1) and the image's channels last (no act there). Returns the mean
    [..., C, 64, 64] in [-0.5, 0.5] space (the likelihood is a unit-variance Normal)."""

    def __init__(self, din: int, out_ch: int, depth: int = 48, act: str = "elu",
                 kernels: tuple[int, ...] = (5, 5, 6, 6)):
        super().__init__()
        self.linear = nn.Linear(din, 32 * depth)
        mods: list[nn.Module] = []
        ch, n = 32 * depth, len(kernels)
        for i, k in enumerate(kernels):
            last = i == n - 1
            out = out_ch if last else depth * 2 ** (n - i - 2)
            mods.append(nn.ConvTranspose2d(ch, out, k, 2))
            if not last:
                mods.append(make_act(act))
            ch = out
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        y = self.linear(x.reshape(-1, x.shape[-1]))[:, :, None, None]
        y = full_precision(self.net(y))
        return y.reshape(*lead, *y.shape[1:])


def _norm_channels(norm: nn.Module, x: Tensor) -> Tensor:
    """A norm over the channels of every pixel: [N, C, H, W] (DreamerV3 normalises the last axis)."""
    return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvEncoder2025(nn.Module):
    """DreamerV3 2025's image encoder: per stage Conv(5x5, stride 1) -> 2x2 max-pool -> Norm ->
    act, channels ``depth`` x (2, 3, 4, 4); flattened. Input [..., C, H, W] in [-0.5, 0.5]."""

    def __init__(self, in_ch: int, depth: int, stages: int, norm: str, act: str,
                 size: tuple[int, int], mults: tuple[int, ...] = (2, 3, 4, 4), kernel: int = 5):
        super().__init__()
        chans = [depth * m for m in mults[:stages]]
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        c = in_ch
        for out in chans:
            self.convs.append(nn.Conv2d(c, out, kernel, padding=kernel // 2, bias=norm == "none"))
            self.norms.append(make_norm(norm, out))
            c = out
        self.act = make_act(act)
        self.out_shape = (c, size[0] >> stages, size[1] >> stages)
        self.dout = int(math.prod(self.out_shape))

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-3]
        x = x.reshape(-1, *x.shape[-3:])
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = self.act(_norm_channels(norm, F.max_pool2d(conv(x), 2)))
        return x.reshape(*lead, -1)


class ConvDecoder2025(nn.Module):
    """DreamerV3 2025's image decoder: the spatial input is a block-linear map of h (``bspace``
    groups, each a slice of the channels) plus a 2-layer map of z, normalised; then per stage
    2x nearest upsampling -> Conv(5x5) -> Norm -> act; a last upsampling and Conv to the image's
    channels; sigmoid. Returns [..., C, H, W] in [-0.5, 0.5] (sigmoid - 0.5, the encoder's range)."""

    def __init__(self, deter: int, stoch: int, out_ch: int, depth: int, stages: int, norm: str,
                 act: str, size: tuple[int, int], units: int, bspace: int = 8,
                 mults: tuple[int, ...] = (2, 3, 4, 4), kernel: int = 5):
        super().__init__()
        chans = [depth * m for m in mults[:stages]]
        self.deter, self.g = deter, bspace
        self.res = (size[0] >> stages, size[1] >> stages)
        self.c_last = chans[-1]
        u = self.res[0] * self.res[1] * self.c_last
        self.sp0 = BlockLinear(deter, u, bspace)
        self.sp1 = NormDense(stoch, 2 * units, norm, act)
        self.sp2 = nn.Linear(2 * units, u)
        self.spnorm = make_norm(norm, self.c_last)
        self.act = make_act(act)
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        c = self.c_last
        for out in reversed(chans[:-1]):
            self.convs.append(nn.Conv2d(c, out, kernel, padding=kernel // 2, bias=norm == "none"))
            self.norms.append(make_norm(norm, out))
            c = out
        self.out = nn.Conv2d(c, out_ch, kernel, padding=kernel // 2)

    def forward(self, feat: Tensor) -> Tensor:
        # feat: [..., D + S*C] = [h, z]
        lead = feat.shape[:-1]
        f = feat.reshape(-1, feat.shape[-1])
        h, w, g = *self.res, self.g
        x0 = self.sp0(f[:, :self.deter]).reshape(-1, g, h, w, self.c_last // g)  # (g h w c)
        x0 = x0.permute(0, 1, 4, 2, 3).reshape(-1, self.c_last, h, w)       # channels (g c)
        x1 = self.sp2(self.sp1(f[:, self.deter:])).reshape(-1, h, w, self.c_last)
        x = self.act(_norm_channels(self.spnorm, x0 + x1.permute(0, 3, 1, 2)))
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = self.act(_norm_channels(norm, conv(x)))
        x = self.out(F.interpolate(x, scale_factor=2, mode="nearest"))
        x = torch.sigmoid(full_precision(x)) - 0.5
        return x.reshape(*lead, *x.shape[1:])


def compile_hot_modules(root: nn.Module) -> int:
    """``run.compile``: ``torch.compile`` the small hot modules under ``root`` in place (MLPs,
    GRU cells, CNN encoders/decoders; ``nn.Module.compile`` keeps the state-dict keys, so
    checkpoints are the same with and without). Whole-update compilation is not offered: it took
    minutes to compile on 2 CPU cores. Each instance of a class is its own compiled graph, so the
    per-function recompile limit is raised to the number of modules (times 8 shapes each: acting,
    filtering and imagination call the same module with different batch shapes), and buffer
    donation is off so that objectives may backward with ``retain_graph``. Compiled graphs have no
    double backward, so TEMPO's exact meta-gradient cannot run compiled (a config error). Returns
    the number of modules compiled."""
    kinds = (MLP, LayerNormGRU, BlockGRU, ConvEncoder, ConvDecoder, ConvEncoder2025,
             ConvDecoder2025)
    mods = [m for m in root.modules() if isinstance(m, kinds)]
    import torch._dynamo.config as dynamo_config
    import torch._functorch.config as functorch_config
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 8 * len(mods))
    functorch_config.donated_buffer = False     # objectives call backward with retain_graph
    for m in mods:
        m.compile()
    return len(mods)


# ------------------------------------------------ STORM's layers (Zhang et al. 2023, Tables 7-9)
class BNConvEncoder(nn.Module):
    """Table 7: blocks of Conv(4, stride 2, pad 1) + BN + ReLU, channels depth*2^i; flattened."""

    def __init__(self, in_ch: int, depth: int, stages: int, size: tuple[int, int]):
        super().__init__()
        mods: list[nn.Module] = []
        ch = in_ch
        for i in range(stages):
            out = depth * 2**i
            mods += [nn.Conv2d(ch, out, 4, 2, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            ch = out
        self.net = nn.Sequential(*mods)
        self.dout = ch * (size[0] // 2**stages) * (size[1] // 2**stages)

    def forward(self, x: Tensor) -> Tensor:  # [..., C, H, W] -> [..., dout]
        lead = x.shape[:-3]
        return self.net(x.reshape(-1, *x.shape[-3:])).reshape(*lead, -1)


class BNConvDecoder(nn.Module):
    """Table 8: Linear -> (reshape) BN + ReLU, DeConv(4, 2, 1) + BN + ReLU blocks, last DeConv."""

    def __init__(self, din: int, out_ch: int, depth: int, stages: int, size: tuple[int, int]):
        super().__init__()
        ch = depth * 2 ** (stages - 1)
        self.start = (ch, size[0] // 2**stages, size[1] // 2**stages)
        self.linear = nn.Linear(din, math.prod(self.start), bias=False)
        mods: list[nn.Module] = [nn.BatchNorm2d(ch), nn.ReLU()]
        for _ in range(stages - 1):
            mods += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2),
                     nn.ReLU()]
            ch //= 2
        mods.append(nn.ConvTranspose2d(ch, out_ch, 4, 2, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, z: Tensor) -> Tensor:  # [..., din] -> [..., C, H, W]
        lead = z.shape[:-1]
        y = full_precision(self.net(self.linear(z.reshape(-1, z.shape[-1])).reshape(-1, *self.start)))
        return y.reshape(*lead, *y.shape[1:])


class ActionMixer(nn.Module):
    """Table 9: [z, a] -> Linear + LN + ReLU -> Linear + LN (D)."""

    def __init__(self, din: int, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(din, dim, bias=False), nn.LayerNorm(dim), nn.ReLU(),
                                 nn.Linear(dim, dim, bias=False), nn.LayerNorm(dim))

    def forward(self, z: Tensor, a: Tensor) -> Tensor:
        return self.net(torch.cat([z, a], -1))
