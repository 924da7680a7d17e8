"""Building blocks: normalised dense layers, MLPs, GRU cells (CNNs: ``nets.conv``; the one-hot
gather of ``run.onehot_gather``: ``nets.onehot``).

DreamerV3 2023 uses LayerNorm + SiLU; the 2025 version RMSNorm + SiLU and a block-diagonal GRU.
Both are selected by ``norm`` / ``gru`` arguments so presets can switch between them.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

from vawm.nets.dist import full_precision
from vawm.nets.onehot import onehot_linear


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
    from vawm.nets.conv import ConvDecoder, ConvDecoder2025, ConvEncoder, ConvEncoder2025
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
class ActionMixer(nn.Module):
    """Table 9: [z, a] -> Linear + LN + ReLU -> Linear + LN (D)."""

    def __init__(self, din: int, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(din, dim, bias=False), nn.LayerNorm(dim), nn.ReLU(),
                                 nn.Linear(dim, dim, bias=False), nn.LayerNorm(dim))

    def forward(self, z: Tensor, a: Tensor) -> Tensor:
        return self.net(torch.cat([z, a], -1))
