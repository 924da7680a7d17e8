"""Normalisers: DreamerV3's percentile return scale and a moving mean/variance."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class PercentileScale(nn.Module):
    """S = EMA(Per(R, 95) - Per(R, 5), decay) with a lower limit (VaR, anon. 2025, eq. 9, DreamerV3).

    The two percentiles are tracked as separate EMAs (as DreamerV3 does); ``scale`` returns
    max(limit, high - low). Buffers live in the state dict, so checkpoints restore them.
    """

    def __init__(self, decay: float = 0.99, limit: float = 1.0, lo: float = 0.05, hi: float = 0.95):
        super().__init__()
        self.decay, self.limit, self.lo, self.hi = decay, limit, lo, hi
        self.register_buffer("low", torch.zeros(()))
        self.register_buffer("high", torch.zeros(()))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        # on the module's device, so that update() copies nothing from the host (CUDA graphs)
        self.register_buffer("probs", torch.tensor([lo, hi]), persistent=False)

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        x = x.detach().float().flatten()
        q = torch.quantile(x, self.probs)
        d = self.decay
        self.low.mul_(d).add_((1 - d) * q[0])
        self.high.mul_(d).add_((1 - d) * q[1])
        self.count += 1

    def scale(self) -> Tensor:
        return torch.clamp(self.high - self.low, min=self.limit)


class MovingMoments(nn.Module):
    """EMA of mean and variance (used by TEMPO's value normalisation and the latent backbone)."""

    def __init__(self, decay: float = 0.99, eps: float = 1e-8):
        super().__init__()
        self.decay, self.eps = decay, eps
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("var", torch.ones(()))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        x = x.detach().float()
        if self.count == 0:
            self.mean.copy_(x.mean())
            self.var.copy_(x.var(unbiased=False))
        else:
            d = self.decay
            self.mean.mul_(d).add_((1 - d) * x.mean())
            self.var.mul_(d).add_((1 - d) * x.var(unbiased=False))
        self.count += 1

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.mean) / torch.sqrt(self.var + self.eps)
