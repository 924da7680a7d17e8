"""Post-LN causal transformer with a key/value cache: STORM's sequence model (VaR, anon. 2025, Tables 10–12).

    x_{1:T} = LN(e_{1:T} + w_{1:T})                         learnable positional encoding (Table 10)
    x       = LN(x + Dropout(W_o MHSA(x)))                  post-LN block (Table 11)
    h       = LN(x + Dropout(W_2 ReLU(W_1 x)))              FFN of width 2D

Attention masks are boolean ``[N, Tq, Tk]`` (True: the query may attend to the key); the caller
builds them (causal, episode boundaries, padded context). :meth:`CausalTransformer.step` appends
new tokens to a :class:`KVCache` (their keys and values per layer), so one imagination step attends
to the cached keys instead of re-running the whole sequence: O(context) per step, not O(context^2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def causal_mask(key_valid: Tensor, q_len: int) -> Tensor:
    """Mask for the last ``q_len`` of ``Lk`` tokens: each sees earlier valid keys and itself.

    key_valid: [N, Lk] bool (False: padding) -> [N, q_len, Lk] bool. A query always sees its own
    key, so no row is empty (padding queries give outputs that nothing reads).
    """
    n, lk = key_valid.shape
    qi = torch.arange(lk - q_len, lk, device=key_valid.device)
    ki = torch.arange(lk, device=key_valid.device)
    before = ki[None, :] <= qi[:, None]                                  # [q, Lk]
    own = ki[None, :] == qi[:, None]
    return before[None] & (key_valid[:, None, :] | own[None])


def segment_mask(is_first: Tensor) -> Tensor:
    """Causal mask that does not cross episode starts. is_first: [B, T] -> [B, T, T] bool."""
    seg = torch.cumsum(is_first.long(), 1)                                # episode index per step
    t = is_first.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=is_first.device).tril()
    return causal[None] & (seg[:, :, None] == seg[:, None, :])


@dataclass
class KVCache:
    """Keys and values of every token seen so far, per layer, and which keys may be attended to.

    With ``capacity`` set and autograd off, keys/values are written into preallocated buffers
    (no copy of the whole cache per step); with autograd on they are concatenated, so that the
    rollout stays differentiable (``actor_grad=dynamics``).
    """
    valid: Tensor                                          # [N, L] bool
    k: list[Tensor | None] = field(default_factory=list)   # per layer [N, heads, L or capacity, dh]
    v: list[Tensor | None] = field(default_factory=list)
    capacity: int = 0

    @classmethod
    def empty(cls, n: int, layers: int, device: torch.device | str = "cpu", capacity: int = 0
              ) -> KVCache:
        return cls(torch.zeros(n, 0, dtype=torch.bool, device=device), [None] * layers,
                   [None] * layers, capacity)

    @property
    def length(self) -> int:
        return self.valid.shape[1]

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store the new keys/values [N, H, T, dh] of ``layer`` (after ``valid`` was extended by T);
        returns all keys/values so far."""
        end = self.length
        start = end - k.shape[2]
        pk, pv = self.k[layer], self.v[layer]
        if self.capacity and not torch.is_grad_enabled():
            if pk is None:
                shape = (*k.shape[:2], self.capacity, k.shape[3])
                pk = self.k[layer] = k.new_empty(shape)
                pv = self.v[layer] = v.new_empty(shape)
            pk[:, :, start:end] = k
            pv[:, :, start:end] = v
            return pk[:, :, :end], pv[:, :, :end]
        if pk is not None:
            k, v = torch.cat([pk, k], 2), torch.cat([pv, v], 2)
        self.k[layer], self.v[layer] = k, v
        return k, v


class SelfAttention(nn.Module):
    """Multi-head self-attention (no biases, as STORM), with optional cached keys/values."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        assert dim % heads == 0, (dim, heads)
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, mask: Tensor, cache: KVCache | None = None, layer: int = 0
                ) -> Tensor:
        # x: [N, T, D]; mask: [N|1, T, Lcached + T]
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = cache.append(layer, k, v)                         # [N, H, Lcached + T, dh]
        p = self.dropout if self.training else 0.0   # attention dropout (STORM's code)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.unsqueeze(1), dropout_p=p)
        return self.out(y.transpose(1, 2).reshape(n, t, d))


class PostLNBlock(nn.Module):
    """Table 11: MHSA -> Dropout -> residual -> LN; FFN (D -> 2D, ReLU, -> D) -> Dropout ->
    residual -> LN."""

    def __init__(self, dim: int, heads: int, dropout: float, ffn_mult: int = 2):
        super().__init__()
        self.attn = SelfAttention(dim, heads, dropout)
        self.ln1 = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_mult * dim), nn.ReLU(),
                                 nn.Linear(ffn_mult * dim, dim))
        self.ln2 = nn.LayerNorm(dim, eps=1e-6)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor, cache: KVCache | None = None, layer: int = 0
                ) -> Tensor:
        x = self.ln1(x + self.drop(self.attn(x, mask, cache, layer)))
        return self.ln2(x + self.drop(self.ffn(x)))


class CausalTransformer(nn.Module):
    """Table 12: positional encoding + LN, then K post-LN blocks. Tokens are already embedded."""

    def __init__(self, dim: int, layers: int, heads: int, dropout: float, max_len: int,
                 ffn_mult: int = 2):
        super().__init__()
        self.max_len = max_len
        self.pos = nn.Embedding(max_len, dim)          # learnable w_{1:T} (Table 10)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.blocks = nn.ModuleList(PostLNBlock(dim, heads, dropout, ffn_mult)
                                    for _ in range(layers))

    def _embed(self, x: Tensor, p0: int) -> Tensor:
        t = x.shape[1]
        if p0 + t > self.max_len:
            raise ValueError(f"sequence of {p0 + t} tokens exceeds the positional encoding's "
                             f"max_len {self.max_len}; raise tssm.max_len")
        return self.norm(x + self.pos.weight[p0:p0 + t])

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Whole sequence at positions 0..T-1. x: [N, T, D], mask: [N|1, T, T] -> [N, T, D]."""
        x = self._embed(x, 0)
        for blk in self.blocks:
            x = blk(x, mask)
        return x

    def step(self, x: Tensor, cache: KVCache, valid: Tensor | None = None) -> Tensor:
        """Append T tokens after the cached ones (positions continue); updates ``cache`` in place.

        x: [N, T, D]; valid: [N, T] bool (default all True) -> [N, T, D]. Each new token attends to
        the valid cached keys, the earlier valid new tokens and itself.
        """
        n, t, _ = x.shape
        if valid is None:
            valid = torch.ones(n, t, dtype=torch.bool, device=x.device)
        cache.valid = torch.cat([cache.valid, valid], 1)
        mask = causal_mask(cache.valid, t)
        x = self._embed(x, cache.length - t)
        for i, blk in enumerate(self.blocks):
            x = blk(x, mask, cache, i)
        return x
