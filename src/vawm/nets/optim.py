"""Optimisers of the two DreamerV3 versions.

* 2023: Adam with global-norm gradient clipping (``clip``), one optimiser per module group.
* 2025 (VaR, anon. 2025, Table 15): LaProp (eps 1e-20) with adaptive gradient clipping AGC(0.3).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Literal

import torch
from torch import Tensor, nn

from vawm.settings import Min, section

Pos = Annotated[float, Min(0, strict=True)]


@section("optim")
class OptimConfig:
    """Optimisers of the world model, actor and critic (DreamerV3 2023 defaults)."""
    kind: Literal["adam", "laprop"] = "adam"   # 2023 | 2025
    model_lr: Pos = 1e-4
    actor_lr: Pos = 3e-5
    critic_lr: Pos = 3e-5
    model_eps: Pos = 1e-8
    ac_eps: Pos = 1e-5
    model_clip: Pos = 1000.0    # adam: global-norm clip; laprop: AGC factor
    ac_clip: Pos = 100.0
    warmup: Annotated[int, Min(0)] = 0   # linear learning-rate warm-up over this many steps (2025: 1000)
    # DreamerV2 (Hafner et al. 2021): every parameter times (1 - weight_decay) at each step, after
    # clipping and before the update (its code's decay: not scaled by the learning rate); 1e-6
    weight_decay: Annotated[float, Min(0)] = 0.0


class LaProp(torch.optim.Optimizer):
    """LaProp (Ziyin et al. 2020): normalise the gradient by its RMS *before* momentum.

    v <- b2 v + (1-b2) g^2;  m <- b1 m + (1-b1) g / (sqrt(v_hat) + eps);  p <- p - lr m_hat
    """

    def __init__(self, params, lr: float = 4e-5, betas=(0.9, 0.999), eps: float = 1e-20):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            states = [self.state[p] for p in params]
            for p, s in zip(params, states, strict=True):
                if not s:
                    s["step"] = torch.zeros((), dtype=torch.float32)
                    s["m"] = torch.zeros_like(p)
                    s["v"] = torch.zeros_like(p)
            step = states[0]["step"] + 1
            for s in states:
                s["step"].copy_(step)
            ms = [s["m"] for s in states]
            vs = [s["v"] for s in states]
            torch._foreach_mul_(vs, b2)
            torch._foreach_addcmul_(vs, grads, grads, value=1 - b2)
            vhat = torch._foreach_div(vs, float(1 - b2 ** step.item()))
            torch._foreach_sqrt_(vhat)
            torch._foreach_add_(vhat, group["eps"])
            upd = torch._foreach_div(grads, vhat)
            torch._foreach_mul_(ms, b1)
            torch._foreach_add_(ms, upd, alpha=1 - b1)
            scale = group["lr"] / (1 - b1 ** step.item())
            torch._foreach_add_(params, ms, alpha=-scale)


@torch.no_grad()
def agc_(params: Iterable[nn.Parameter], clip: float = 0.3, pmin: float = 1e-3) -> None:
    """Adaptive gradient clipping per tensor: ||g|| <= clip * max(||p||, pmin)."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return
    gn = torch._foreach_norm([p.grad for p in params])
    pn = torch._foreach_norm(params)
    for p, g, w in zip(params, gn, pn, strict=True):
        limit = clip * torch.clamp(w, min=pmin)
        p.grad.mul_(torch.clamp(limit / (g + 1e-12), max=1.0))


class Optim:
    """One optimiser for a parameter group, with its clipping rule; ``step(loss)`` does it all.

    kind: "adam" (2023; clip = global grad-norm limit) or "laprop" (2025; clip = AGC factor).
    Returns the gradient norm before clipping for logging.
    """

    def __init__(self, params: list[nn.Parameter] | list[dict], kind: str, lr: float, eps: float,
                 clip: float, warmup: int = 0, weight_decay: float = 0.0):
        if params and isinstance(params[0], dict):      # groups: {"params": [...], "lr": lr}
            groups = [{"params": [p for p in g["params"] if p.requires_grad],
                       "lr": g.get("lr", lr)} for g in params]
        else:
            groups = [{"params": [p for p in params if p.requires_grad], "lr": lr}]
        self.params = [p for g in groups for p in g["params"]]
        self.base_lrs = [g["lr"] for g in groups]
        self.kind, self.clip, self.lr, self.warmup = kind, clip, lr, warmup
        self.weight_decay = weight_decay
        if kind == "adam":
            self.opt: torch.optim.Optimizer = torch.optim.Adam(groups, lr=lr, eps=eps)
        elif kind == "laprop":
            self.opt = LaProp(groups, lr=lr, eps=eps)
        else:
            raise ValueError(f"unknown optimizer {kind!r}; choose from adam, laprop")

    def capturable(self) -> None:
        """Keep Adam's step counts on the device and read no host value in ``step`` (CUDA-graph
        capture, ``run.cuda_graph``)."""
        if self.kind != "adam" or self.warmup:
            raise ValueError("only Adam without warm-up can be captured in a CUDA graph")
        for g in self.opt.param_groups:
            g["capturable"] = True

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> Tensor:
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) if grads \
            else torch.zeros(())
        if self.kind == "adam":
            if self.clip > 0:
                torch.nn.utils.clip_grad_norm_(self.params, self.clip, foreach=True)
        elif self.clip > 0:
            agc_(self.params, self.clip)
        if self.warmup > 0:         # lr * min(1, (k + 1) / warmup); k from the optimiser's state
            st = self.opt.state.get(self.params[0], {}) if self.params else {}
            k = int(st["step"]) if "step" in st else 0
            for g, base in zip(self.opt.param_groups, self.base_lrs, strict=True):
                g["lr"] = base * min(1.0, (k + 1) / self.warmup)
        if self.weight_decay > 0:
            with torch.no_grad():
                torch._foreach_mul_(self.params, 1.0 - self.weight_decay)
        self.opt.step()
        return norm

    def state_dict(self) -> dict:
        return self.opt.state_dict()

    def load_state_dict(self, sd: dict) -> None:
        self.opt.load_state_dict(sd)
