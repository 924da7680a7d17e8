"""Garnet generation and exact policy evaluation (Voelcker et al. 2025 §5, App. B)."""

import torch

from vawm.garnet.mdp import exact_values, make_garnet, policy_evaluation, row_entropy


def test_generation_is_reproducible_and_seed_stable():
    a = make_garnet(20, 4, [0, 1, 2, 3])
    b = make_garnet(20, 4, [0, 1, 2, 3])
    c = make_garnet(20, 4, [3])
    for x, y in ((a.succ, b.succ), (a.weights, b.weights), (a.rewards, b.rewards)):
        assert torch.equal(x, y)
    # seed 3 is the same MDP whichever other seeds are drawn with it
    assert torch.equal(a.succ[3], c.succ[0]) and torch.equal(a.weights[3], c.weights[0])
    assert not torch.equal(a.weights[0], a.weights[1])


def test_successors_without_replacement_and_rows_sum_to_one():
    g = make_garnet(30, 6, [0, 1])
    succ = g.succ.squeeze(2)                                          # [S, n, k]
    assert all(len(set(row.tolist())) == 6 for row in succ.reshape(-1, 6))
    P = g.transitions_pi(torch.tensor([0.3, 1.0, 30.0]))              # [S, T, n, n]
    assert torch.allclose(P.sum(-1), torch.ones(2, 3, 30, dtype=torch.float64))
    # probability on exactly the sampled successors, at every temperature
    mask = torch.zeros(2, 30, 30, dtype=torch.bool).scatter_(-1, succ, True)     # [S, n, n]
    assert torch.equal(P > 0, mask.unsqueeze(1).expand_as(P))


def test_temperature_interpolates_deterministic_to_uniform():
    g = make_garnet(25, 5, [7])
    P = g.transitions_pi(torch.tensor([1e-3, 1e4]))[0]                # [T, n, n]
    det, uni = P[0], P[1]
    best = g.succ[0, :, 0].gather(-1, g.weights[0, :, 0].argmax(-1, keepdim=True)).squeeze(-1)
    assert torch.equal(det.argmax(-1), best)
    top2 = g.weights[0, :, 0].topk(2, dim=-1).values
    clear = top2[:, 0] - top2[:, 1] > 0.05                            # exp(-50) of mass left
    assert clear.sum() > 15 and (det.max(-1).values[clear] > 1 - 1e-12).all()
    assert torch.allclose(uni[uni > 0], torch.full_like(uni[uni > 0], 0.2), atol=1e-3)
    assert row_entropy(det) < 1e-3 < 1.6 < row_entropy(uni)          # log 5 = 1.609


def test_exact_values_match_iterative_policy_evaluation():
    g = make_garnet(40, 5, [0, 1, 2], gamma=0.95, n_actions=3)
    P = g.transitions_pi(torch.tensor([0.01, 0.5, 10.0]))             # [S, T, n, n]
    r = g.reward_pi().unsqueeze(1).expand(3, 3, 40)
    V = exact_values(P, r, g.gamma)
    V_it = policy_evaluation(P, r, g.gamma, tol=1e-13)
    assert torch.allclose(V, V_it, atol=1e-9, rtol=0)
    # and the Bellman equation holds
    assert torch.allclose(V, r + g.gamma * (P @ V.unsqueeze(-1)).squeeze(-1), atol=1e-10)
    # a wrong discount gives different values (the check can fail)
    assert not torch.allclose(V, policy_evaluation(P, r, 0.9), atol=1e-3)


def test_fixed_policy_is_deterministic_and_mixes_actions():
    g = make_garnet(10, 3, [0], n_actions=4)
    assert torch.equal(g.policy.sum(-1), torch.ones(1, 10, dtype=torch.float64))
    assert set(g.policy.unique().tolist()) == {0.0, 1.0}
    P = g.transitions(torch.tensor([1.0]))[0, 0]                      # [n, A, n]
    P_pi = g.transitions_pi(torch.tensor([1.0]))[0, 0]
    a = g.policy[0].argmax(-1)
    assert torch.equal(P_pi, P[torch.arange(10), a])


def test_uniform_rewards_and_bad_arguments():
    g = make_garnet(10, 3, [0], reward="uniform")
    assert (g.rewards >= 0).all() and (g.rewards <= 1).all()
    for kwargs in ({"n_succ": 11}, {"reward": "cauchy"}, {"gamma": 1.0}):
        args = {"n_states": 10, "n_succ": 3, "seeds": [0], **kwargs}
        try:
            make_garnet(**args)
        except ValueError:
            continue
        raise AssertionError(f"accepted {kwargs}")
