"""The 5x5 stochastic cliff-walk and greedy policy iteration with learned models (Voelcker et al. 2025
App. C.5).

Grid (row, col), row 0 on top; start bottom-left, goal bottom-right, the cells between them on
the bottom row are the cliff (Gymnasium's CliffWalking, shrunk to size x size):

    . . . . .
    . . . . .
    . . . . .
    . . . . .
    S C C C G

Actions 0 up, 1 right, 2 down, 3 left. The move goes in the intended direction with probability
``p`` ("temp" in Voelcker et al. 2025 App. C.5) and in each of the other three with (1 - p) / 3; moves off the
grid stay put. Each step costs -1; stepping into the cliff costs -100 and puts the agent back at
the start (as in Gymnasium). The goal is absorbing with reward 0. The cliff cells are never
occupied; their rows copy the start's (the agent "is" back at the start), so every state has a
well-defined value. p = 1 is deterministic, p = 0.25 a uniform random walk.

Policy iteration (App. C.5): evaluate the current policy with a learned model and value (the
losses of ``train.py``, warm-started across iterations), then improve greedily,
pi(s) = argmax_a r(s, a) + gamma sum_s' P_hat(s'|s, a) V(s') (ties: lowest action), starting
from the uniform random policy.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vawm.garnet.mdp import exact_values

MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))          # up, right, down, left
N_ACTIONS = 4


def cliff_walk(p_intended: Tensor, size: int = 5, step_reward: float = -1.0,
               cliff_reward: float = -100.0) -> tuple[Tensor, Tensor, int]:
    """Transitions and rewards of the cliff-walk for each slip level.

    p_intended: [T] -> P [T, n, A, n], R [T, n, A] (expected reward of (s, a)), start index.
    """
    p = torch.as_tensor(p_intended, dtype=torch.float64)
    if ((p < 0) | (p > 1)).any():
        raise ValueError("the probability of the intended move must be in [0, 1]")
    if size < 3:
        raise ValueError("the cliff-walk needs size >= 3")
    n = size * size
    start, goal = (size - 1) * size, n - 1
    cliff = set(range(start + 1, goal))
    # outcome of moving in direction d from s: (next state, reward)
    outcome: dict[tuple[int, int], tuple[int, float]] = {}
    for s in range(n):
        row, col = divmod(s, size)
        for d, (dr, dc) in enumerate(MOVES):
            r2, c2 = min(max(row + dr, 0), size - 1), min(max(col + dc, 0), size - 1)
            s2 = r2 * size + c2
            outcome[s, d] = (start, cliff_reward) if s2 in cliff else (s2, step_reward)
    # D[a, d]: probability that intended action a moves in direction d   [T, A, A]
    eye = torch.eye(N_ACTIONS, dtype=torch.float64)
    D = p.view(-1, 1, 1) * eye + (1 - p.view(-1, 1, 1)) / (N_ACTIONS - 1) * (1 - eye)
    P = torch.zeros(p.shape[0], n, N_ACTIONS, n, dtype=torch.float64)
    R = torch.zeros(p.shape[0], n, N_ACTIONS, dtype=torch.float64)
    for s in range(n):
        if s == goal:
            P[:, s, :, s] = 1.0
            continue
        src = start if s in cliff else s
        for a in range(N_ACTIONS):
            for d in range(N_ACTIONS):
                s2, rew = outcome[src, d]
                P[:, s, a, s2] += D[:, a, d]
                R[:, s, a] += D[:, a, d] * rew
    return P, R, start


def greedy_policy(Q: Tensor) -> Tensor:
    """One-hot argmax policy (ties: lowest action).  Q: [..., n, A] -> [..., n, A]."""
    return torch.nn.functional.one_hot(Q.argmax(-1), Q.shape[-1]).to(Q.dtype)


def q_values(P: Tensor, R: Tensor, V: Tensor, gamma: float) -> Tensor:
    """Q(s, a) = R(s, a) + gamma sum_s' P(s'|s, a) V(s').

    P: [..., n, A, n]; R: [..., n, A]; V: [..., n] -> [..., n, A]
    """
    return R + gamma * (P @ V.unsqueeze(-2).unsqueeze(-1)).squeeze(-1)


def policy_values(P: Tensor, R: Tensor, policy: Tensor, gamma: float) -> Tensor:
    """Exact V^pi.  P: [..., n, A, n]; R, policy: [..., n, A] -> [..., n]."""
    P_pi = (policy.unsqueeze(-1) * P).sum(-2)
    return exact_values(P_pi, (policy * R).sum(-1), gamma)


def optimal_values(P: Tensor, R: Tensor, gamma: float, max_iter: int = 1000) -> Tensor:
    """V* by exact policy iteration on the true MDP.  -> [..., n]."""
    V = policy_values(P, R, torch.full_like(R, 1.0 / R.shape[-1]), gamma)
    for _ in range(max_iter):
        V_new = policy_values(P, R, greedy_policy(q_values(P, R, V, gamma)), gamma)
        if (V_new - V).abs().max() <= 1e-10 * (1 + V.abs().max()):
            return V_new
        V = V_new
    raise RuntimeError("policy iteration did not converge")
