"""TEMPO's look-ahead meta-gradient (Yuan et al. 2023 eq. 7-9): the mixed product
c_t = g_up . dl_t/dtheta, exactly (double backward) or by central finite differences, and the
surrogate whose weighter gradient is the look-ahead gradient. The objective that uses them, and
what each reading means, is ``vawm.objectives.tempo``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vawm.worldmodels.base import Backbone, Observed


def flat_dot(a: list[Tensor], b: list[Tensor]) -> Tensor:
    zero = torch.zeros((), device=a[0].device, dtype=a[0].dtype)
    return sum(((x * y).sum() for x, y in zip(a, b, strict=True)), zero)


def step_losses(backbone: Backbone, obs: Observed, weights: Tensor) -> Tensor:
    """l_t = N dL_lower/dw_t [B, T]: each step's terms after the backbone's scales and free bits.

    ``obs`` should carry no graph (e.g. computed under ``no_grad``); only the loss's own few ops
    are differentiated.
    """
    w = weights.detach().requires_grad_(True)
    with torch.enable_grad():
        loss, _ = backbone.loss(obs, w)
        (g,) = torch.autograd.grad(loss, w)
    return g * w.numel()


def mixed_product_exact(backbone: Backbone, obs: Observed, weights: Tensor, params: list[Tensor],
                        g_up: list[Tensor], others: list[Tensor] | None = None
                        ) -> tuple[Tensor, list[tuple[Tensor, Tensor]] | None]:
    """c_t = g_up . dl_t/dtheta for every (b, t), exactly, at the current theta [B, T] (eq. 9).

    Double backward on the graph of ``obs``: c = N d/dw [g_up . dL_lower(theta, w)/dtheta].
    ``others`` (the remaining trainable backbone parameters): the first pass also differentiates
    L_lower w.r.t. them, and the detached gradients of ``params + others`` are returned — the
    world-model step's own gradient, so no second backward of L_lower is needed. The graph of
    ``obs`` stays usable for a backward that follows.
    Returns (c [B, T], the (parameter, gradient) pairs or None).
    """
    w = weights.detach().requires_grad_(True)
    loss, _ = backbone.loss(obs, w)
    every = params + (others or [])
    grads = torch.autograd.grad(loss, every, create_graph=True, allow_unused=True)
    pairs = [(g, u) for g, u in zip(grads[:len(params)], g_up, strict=True) if g is not None]
    dot = flat_dot([g for g, _ in pairs], [u for _, u in pairs])
    (c,) = torch.autograd.grad(dot, w, allow_unused=True)
    c = torch.zeros_like(w) if c is None else c * w.numel()
    if others is None:
        return c, None
    return c, [(p, g.detach()) for p, g in zip(every, grads, strict=True) if g is not None]


@torch.no_grad()
def mixed_product_fd(backbone: Backbone, batch: dict[str, Tensor], weights: Tensor,
                     params: list[Tensor], g_up: list[Tensor], eps: float,
                     jump: float = 0.5, step: int = 0) -> tuple[Tensor, Tensor]:
    """c_t by a central finite difference of l_t along g_up with the same sampling noise [B, T].

    The perturbed parameters are swapped in with ``torch.func.functional_call`` (the real ones are
    never written, so the graph of this update stays valid); the torch RNG state is restored before
    each re-run and after both. A discrete sample that flips between the two re-runs makes l_t jump
    by O(1) (so c_t by O(1/eps)) from that step on: where the two posterior features differ by more
    than ``jump`` in any entry, c is set to 0 for that step and the rest of its sequence.
    Returns (c [B, T], the fraction of steps so masked).
    """
    norm = torch.sqrt(flat_dot(g_up, g_up))
    if norm <= 0:
        return torch.zeros_like(weights), torch.zeros(())
    step = eps / norm                                   # theta +- step * g_up has norm eps
    names = {id(p): n for n, p in backbone.named_parameters()}
    call = _ObserveLoss(backbone)
    rng = _rng_state(weights.device)
    out = []
    try:
        for sgn in (1.0, -1.0):
            moved = {"m." + names[id(p)]: p + sgn * step * u
                     for p, u in zip(params, g_up, strict=True)}
            _set_rng_state(rng, weights.device)
            out.append(torch.func.functional_call(call, moved, (batch, weights, step)))
    finally:
        _set_rng_state(rng, weights.device)
    (l_plus, post_plus), (l_minus, post_minus) = out
    flipped = (post_plus - post_minus).abs().amax(-1) > jump           # [B, T]
    flipped = flipped.to(torch.uint8).cummax(1).values.bool()         # and every later step
    c = torch.where(flipped, 0.0, (l_plus - l_minus) / (2 * step))
    return c, flipped.float().mean()


class _ObserveLoss(nn.Module):
    """observe + per-step lower losses as one call, so ``functional_call`` can swap parameters."""

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.m = backbone

    def forward(self, batch: dict[str, Tensor], weights: Tensor, step: int
                ) -> tuple[Tensor, Tensor]:
        obs = self.m.observe(batch, step)
        return step_losses(self.m, obs, weights), obs.post


def meta_surrogate(w: Tensor, c: Tensor, eta: float, scale: str = "lookahead") -> Tensor:
    """A scalar whose alpha-gradient is the look-ahead gradient dL_upper(theta')/dalpha (eq. 8-9).

    theta' = theta - eta d/dtheta mean_t(w_t l_t) gives
    dL_upper(theta')/dalpha ~ -(eta / N) sum_t c_t dw_t/dalpha. ``scale=alg1`` drops eta / N:
    Alg. 1 line 8 multiplies g_up by d2L_lower/dtheta dalpha of the *summed* lower loss, with no
    look-ahead step in it (same direction, N / eta times larger).
    """
    # w: [B, T] (with a graph to alpha), c: [B, T]
    factor = 1.0 if scale == "alg1" else eta / w.numel()
    return -factor * (c.detach() * w).sum()


def _rng_state(device: torch.device):
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


__all__ = ["flat_dot", "step_losses", "mixed_product_exact", "mixed_product_fd",
           "meta_surrogate"]
