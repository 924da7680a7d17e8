"""``run.onehot_gather``: a dense layer on features with a one-hot block, by gathering the weight
rows the one-hot selects instead of multiplying it (inputs that need no gradient: imagined
features, targets). Equal to the dense layer up to float summation order.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


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


# tensors whose one-hot groups' classes are known without an argmax (a sample's indices, and the
# tensors built from it by concatenation): (tensor, key, classes [..., S]); the last few only
_KNOWN: list = []
_KNOWN_MAX = 4


def _key(t: Tensor) -> tuple:
    """Identifies ``t``'s data: storage, offset, shape, strides and in-place version (a
    ``detach()``-ed view shares all of them)."""
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(),
            t._version, t.dtype)


def remember_classes(t: Tensor, cls: Tensor) -> Tensor:
    """Record that ``t`` (no gradient) holds one-hot groups (nonzero at class ``cls`` [..., S] of
    each group, e.g. a straight-through sample's 1 +- ulp) in its one-hot block, so that
    :func:`onehot_linear` on ``t`` or on a ``detach()`` of it skips the argmax. Returns ``t``."""
    _KNOWN.append((t, _key(t), cls))
    del _KNOWN[: max(0, len(_KNOWN) - _KNOWN_MAX)]
    return t


def known_classes(t: Tensor) -> Tensor | None:
    """The classes recorded for ``t``'s data by :func:`remember_classes` (None if unknown)."""
    key = _key(t)
    for _, k, cls in reversed(_KNOWN):
        if k == key:
            return cls
    return None


def carry_classes(src: Tensor, dst: Tensor) -> Tensor:
    """``dst`` (built from ``src``, e.g. a concatenation) remembers ``src``'s classes if known."""
    cls = known_classes(src)
    return dst if cls is None else remember_classes(dst, cls)


def clear_onehot_cache() -> None:
    _ONEHOT_CACHE.clear()
    _KNOWN.clear()


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
    cls = known_classes(x)
    if cls is not None:                         # a sample's classes: no argmax
        cls = cls.reshape(-1, S)
        vals = x2[:, off:end].unflatten(-1, (S, C)).gather(-1, cls[..., None]).squeeze(-1)
        flat = cls + torch.arange(S, device=x.device) * C
    else:
        flat, vals = _onehot_index(x2, off, S, C)
    g = _OneHotMatmul.apply(x2[:, off:end], W[:, off:end], flat, vals.to(W.dtype))
    if linear.bias is not None:
        g = g + linear.bias
    if torch.is_autocast_enabled(x.device.type):     # autocast casts F.linear's operands
        y = F.linear(rest, w_rest) + g
    else:       # the dense columns' product accumulated onto the gathered rows in place
        y = g.addmm_(rest, w_rest.t())
    return y.reshape(*lead, -1)
