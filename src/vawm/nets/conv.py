"""Image encoders and decoders: DreamerV3 2023 (4x4 stride-2) and 2025 (5x5 + max-pool), DreamerV2
(valid-padding 4x4, transposed 5,5,6,6) and STORM's BatchNorm CNNs (Zhang et al. 2023, Tables 7-9).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from vawm.nets.dist import full_precision
from vawm.nets.layers import BlockLinear, NormDense, make_act, make_norm


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


# ------------------------------------------------ STORM's CNNs (Zhang et al. 2023, Tables 7-8)
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
