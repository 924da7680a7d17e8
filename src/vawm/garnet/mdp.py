"""Garnet MDPs (Voelcker et al. 2025 §5, App. B) and exact policy evaluation.

A Garnet (Bhatnagar et al. 2007) with ``n`` states, ``k`` successors per (state, action) and a
softmax temperature ``tau``:

    succ(s, a)  = k states drawn uniformly without replacement
    w(s, a, s') ~ N(0, 1) for s' in succ(s, a), the floating-point minimum elsewhere
    P(s'|s, a)  = softmax_s'(w(s, a, s') / tau)                     (Voelcker et al. 2025 App. B)
    r(s, a)     ~ N(0, 1)  ("normal", default)  or  U[0, 1]  ("uniform")

tau -> 0 puts all mass on the successor with the largest weight (deterministic); tau -> inf makes
the k successors equally likely. A fixed policy pi(a|s) turns it into the Markov chain the lab
evaluates, P_pi(s'|s) = sum_a pi(a|s) P(s'|s, a) and r_pi(s) = sum_a pi(a|s) r(s, a), whose value
is V = (I - gamma P_pi)^-1 r_pi. With the default of one action the policy is trivial and the
Garnet *is* the chain, as in Voelcker et al. 2025 §5 ("value estimation with a fixed policy").

The weights, successors, rewards and policy are drawn once per seed, from a generator seeded with
that seed alone, so seed 3 is the same MDP in a sweep of 10 seeds or of 100, and every temperature
of a seed shares them (only the softmax temperature changes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

REWARDS = ("normal", "uniform")


@dataclass(frozen=True)
class Garnet:
    """A batch of Garnets, one per seed, before a temperature is chosen.

    succ:    [S, n, A, k] long   successor states of each (state, action)
    weights: [S, n, A, k] f64    standard-normal successor weights
    rewards: [S, n, A]    f64    r(s, a)
    policy:  [S, n, A]    f64    fixed pi(a|s) (deterministic: one action per state)
    """
    succ: Tensor
    weights: Tensor
    rewards: Tensor
    policy: Tensor
    gamma: float

    @property
    def n_states(self) -> int:
        return self.succ.shape[1]

    def reward_pi(self) -> Tensor:
        """r_pi(s) = sum_a pi(a|s) r(s, a)  -> [S, n]."""
        return (self.policy * self.rewards).sum(-1)

    def transitions(self, temps: Tensor) -> Tensor:
        """P(s'|s, a) at each temperature -> [S, T, n, A, n] (float64)."""
        return garnet_transitions(self.succ, self.weights, temps, self.n_states)

    def transitions_pi(self, temps: Tensor) -> Tensor:
        """P_pi(s'|s) at each temperature -> [S, T, n, n] (float64)."""
        P = self.transitions(temps)                                   # [S, T, n, A, n]
        return torch.einsum("sna,stnam->stnm", self.policy, P)


def make_garnet(n_states: int, n_succ: int, seeds: Sequence[int], gamma: float = 0.9,
                n_actions: int = 1, reward: str = "normal") -> Garnet:
    """Draw one Garnet per seed (see the module docstring for the distribution)."""
    if not 1 <= n_succ <= n_states:
        raise ValueError(f"successors must be in [1, {n_states}], got {n_succ}")
    if reward not in REWARDS:
        raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma}")
    succ, weights, rewards, policy = [], [], [], []
    for seed in seeds:                         # one generator per seed: seed-stable MDPs
        g = torch.Generator().manual_seed(int(seed))
        # k successors without replacement: the first k of a uniformly random permutation
        perm = torch.rand(n_states, n_actions, n_states, generator=g, dtype=torch.float64)
        succ.append(perm.argsort(-1)[..., :n_succ])
        weights.append(torch.randn(n_states, n_actions, n_succ, generator=g, dtype=torch.float64))
        if reward == "normal":
            rewards.append(torch.randn(n_states, n_actions, generator=g, dtype=torch.float64))
        else:
            rewards.append(torch.rand(n_states, n_actions, generator=g, dtype=torch.float64))
        act = torch.randint(n_actions, (n_states,), generator=g)
        policy.append(torch.nn.functional.one_hot(act, n_actions).double())
    return Garnet(torch.stack(succ), torch.stack(weights), torch.stack(rewards),
                  torch.stack(policy), float(gamma))


def garnet_transitions(succ: Tensor, weights: Tensor, temps: Tensor, n_states: int) -> Tensor:
    """softmax(w / tau) over the successors, exactly zero elsewhere (Voelcker et al. 2025 App. B).

    succ, weights: [S, ..., k]; temps: [T]  ->  [S, T, ..., n_states] (float64)
    """
    temps = torch.as_tensor(temps, dtype=torch.float64)
    if (temps <= 0).any():
        raise ValueError("temperatures must be > 0")
    shape = (temps.shape[0],) + (1,) * (weights.dim() - 1)
    probs = torch.softmax(weights.unsqueeze(1) / temps.view(shape), dim=-1)  # [S, T, ..., k]
    out = torch.zeros(*probs.shape[:-1], n_states, dtype=torch.float64)
    return out.scatter_(-1, succ.unsqueeze(1).expand_as(probs), probs)


def exact_values(P: Tensor, r: Tensor, gamma: float) -> Tensor:
    """V = (I - gamma P)^-1 r by a direct solve.  P: [..., n, n], r: [..., n] -> [..., n]."""
    eye = torch.eye(P.shape[-1], dtype=P.dtype)
    return torch.linalg.solve(eye - gamma * P, r.unsqueeze(-1)).squeeze(-1)


def policy_evaluation(P: Tensor, r: Tensor, gamma: float, tol: float = 1e-12,
                      max_iter: int = 100_000) -> Tensor:
    """Iterative policy evaluation V <- r + gamma P V until the sup-norm change is below tol.

    Independent of ``exact_values`` (no linear solve); used to check it.
    """
    V = torch.zeros_like(r)
    for _ in range(max_iter):
        V_new = r + gamma * (P @ V.unsqueeze(-1)).squeeze(-1)
        if (V_new - V).abs().max() < tol:
            return V_new
        V = V_new
    raise RuntimeError(f"policy evaluation did not converge in {max_iter} iterations")


def row_entropy(P: Tensor) -> Tensor:
    """Mean entropy (nats) of the rows of a stochastic matrix.  [..., n, n] -> [...]."""
    return -torch.xlogy(P, P).sum(-1).mean(-1)
