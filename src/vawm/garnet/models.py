"""Tabular models of a finite MDP (Voelcker et al. 2025 §5): low-rank softmax, full-rank softmax,
deterministic.

    low rank:   P_hat = softmax(A B),  A [R, r], B [r, n]   (rank-r logits; Voelcker et al. 2025 §5)
    full rank:  P_hat = softmax(L),    L [R, n]
    deterministic: the one-hot of each row's argmax (a deterministic model: x' = f(x))

A and B start from N(0, init_std^2) entries ("a very small standard deviation", Voelcker et al. 2025 §5), so
the initial model is close to uniform over all n states: high entropy. Each seed draws its own
initial matrices from a generator seeded with that seed (offset from the MDP's stream); ranks
are nested (rank r uses the first r columns of A and rows of B), so every rank and every loss of
a seed starts from the same draw.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

INIT_SEED_OFFSET = 1_000_003          # model init stream of seed s: Generator(s + offset)


def init_low_rank(seeds: Sequence[int], n_rows: int, n_states: int, rank: int,
                  init_std: float, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """Initial factors for each seed.  -> A [S, R, r], B [S, r, n]."""
    if not 1 <= rank:
        raise ValueError(f"rank must be >= 1, got {rank}")
    As, Bs = [], []
    width = max(rank, n_states)
    for seed in seeds:
        g = torch.Generator().manual_seed(int(seed) + INIT_SEED_OFFSET)
        A = torch.randn(n_rows, width, generator=g, dtype=torch.float64)
        B = torch.randn(width, n_states, generator=g, dtype=torch.float64)
        As.append(A[:, :rank])
        Bs.append(B[:rank])
    scale = float(init_std)
    return (scale * torch.stack(As)).to(dtype), (scale * torch.stack(Bs)).to(dtype)


def init_full_rank(seeds: Sequence[int], n_rows: int, n_states: int, init_std: float,
                   dtype: torch.dtype = torch.float64) -> Tensor:
    """Initial logits of a full-rank softmax model.  -> L [S, R, n]."""
    Ls = []
    for seed in seeds:
        g = torch.Generator().manual_seed(int(seed) + INIT_SEED_OFFSET)
        Ls.append(torch.randn(n_rows, n_states, generator=g, dtype=torch.float64))
    return (init_std * torch.stack(Ls)).to(dtype)


def low_rank_logits(A: Tensor, B: Tensor) -> Tensor:
    """Rank-r logits A B.  A: [..., R, r], B: [..., r, n] -> [..., R, n]."""
    return A @ B


def softmax_model(logits: Tensor) -> Tensor:
    """P_hat = softmax over next states.  [..., R, n] -> [..., R, n]."""
    return torch.softmax(logits, dim=-1)


def deterministic_model(P_hat: Tensor) -> Tensor:
    """One-hot of each row's most likely next state (ties: lowest index).  [..., R, n]."""
    return torch.nn.functional.one_hot(P_hat.argmax(-1), P_hat.shape[-1]).to(P_hat.dtype)


def policy_mix(P_rows: Tensor, policy: Tensor | None) -> Tensor:
    """P_pi(s'|s) = sum_a pi(a|s) P(s'|s, a).

    P_rows: [..., n*A, n] with rows ordered (s, a); policy: [..., n, A] or None (rows are
    already states: returned unchanged) -> [..., n, n]
    """
    if policy is None:
        return P_rows
    n, A = policy.shape[-2:]
    P = P_rows.unflatten(-2, (n, A))                                  # [..., n, A, n]
    return (policy.unsqueeze(-1) * P).sum(-2)
