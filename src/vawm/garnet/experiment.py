"""The sweeps: value error against temperature and rank (Voelcker et al. 2025 Fig. 2) and cliff-walk policy
iteration (Voelcker et al. 2025 App. C.5).

Work is split into groups, one per (experiment, loss, rank); a group trains all seeds x
temperatures of its setting as one batch (``train.py``). Groups are independent and each runs
on one thread, so a sweep gives the same numbers, bit for bit, whether its groups run in this
process or in ``workers`` processes, in any order.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import Tensor

from vawm.garnet import cliff as cw
from vawm.garnet.mdp import exact_values, make_garnet, row_entropy
from vawm.garnet.models import init_low_rank, policy_mix
from vawm.garnet.train import Learner, Task, TrainConfig, parse_loss, train

DEFAULT_LOSSES = ("mle", "vaml-1-0", "cvaml-1-0", "vaml-1-1", "cvaml-1-1")   # + "itervaml"
DEFAULT_TEMPS = tuple(float(f"{10 ** (e / 2):.6g}") for e in range(-4, 5))   # 1e-2 .. 1e2
EXPERIMENTS = ("garnet", "cliff")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class GarnetSettings:
    """Garnet sweep of Voelcker et al. 2025 §5 / Fig. 2 (its sizes were lost from the text: our
    defaults, docs/faithfulness.md)."""
    states: int = 50
    successors: int = 5
    actions: int = 1
    gamma: float = 0.9
    reward: str = "normal"
    temps: tuple[float, ...] = DEFAULT_TEMPS
    ranks: tuple[int, ...] = (2, 5, 10, 25, 50)


@dataclass(frozen=True)
class CliffSettings:
    """5x5 stochastic cliff-walk with greedy policy iteration (Voelcker et al. 2025 App. C.5)."""
    size: int = 5
    probs: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)
    ranks: tuple[int, ...] = (2, 5, 10, 25)
    gamma: float = 0.9
    iterations: int = 6
    steps: int = 200            # gradient steps per policy-evaluation phase
    improve: str = "model"      # greedy step with the learned model ("model") or the true P
    eps: float = 1e-8           # Adam's epsilon here: the short warm-started phases stop before
    #                             the drift of eps 1e-8 sets in (~1k steps) and are too short for
    #                             the vanishing steps of the Garnets' 1e-3 (docs/garnet.md)


@dataclass(frozen=True)
class SweepConfig:
    seeds: tuple[int, ...] = tuple(range(10))
    losses: tuple[str, ...] = DEFAULT_LOSSES
    experiments: tuple[str, ...] = EXPERIMENTS
    dtype: str = "float32"      # training; MDPs, exact values and metrics are float64
    scale_rewards: bool = True  # learn on r / max|r| (Adam steps are absolute); report unscaled
    train: TrainConfig = field(default_factory=TrainConfig)
    garnet: GarnetSettings = field(default_factory=GarnetSettings)
    cliff: CliffSettings = field(default_factory=CliffSettings)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Group:
    experiment: str
    loss: str
    rank: int
    cost: float = 1.0           # rough relative cost, to schedule big groups first


def groups(cfg: SweepConfig) -> list[Group]:
    out = []
    for exp in cfg.experiments:
        ranks = cfg.garnet.ranks if exp == "garnet" else cfg.cliff.ranks
        steps = cfg.train.steps if exp == "garnet" else cfg.cliff.steps * cfg.cliff.iterations
        out += [Group(exp, loss, rank, steps * (1 + rank / 25)) for loss in cfg.losses
                for rank in ranks]
    return out


def reward_scale(r: Tensor, on: bool) -> Tensor:
    """max |r| of each problem (1 if off or all zero).  r: [G, R] -> [G, 1]."""
    if not on:
        return torch.ones(r.shape[0], 1, dtype=r.dtype)
    m = r.abs().amax(-1, keepdim=True)
    return torch.where(m > 0, m, torch.ones_like(m))


# --------------------------------------------------------------------------- metrics
def value_error(V: Tensor, V_true: Tensor) -> Tensor:
    """Relative L2 error ||V - V_true|| / ||V_true||.  [..., n] -> [...]."""
    return (V - V_true).norm(dim=-1) / V_true.norm(dim=-1)


def _kl_rows(P: Tensor, Q: Tensor) -> Tensor:
    """Mean over rows of KL(P || Q) (nats); inf if Q misses P's support.  [..., R, n] -> [...]."""
    logq = torch.log(Q)
    cross = torch.where(P > 0, P * logq, torch.zeros_like(logq)).sum(-1)
    return (torch.xlogy(P, P).sum(-1) - cross).mean(-1)


def _model_metrics(P_rows: Tensor, P_hat_rows: Tensor, P_pi: Tensor, P_hat_pi: Tensor,
                   r_pi: Tensor, V: Tensor, V_true: Tensor, gamma: float) -> dict[str, Tensor]:
    """All [G, ...] float64 -> dict of [G] metrics."""
    V_model = exact_values(P_hat_pi, r_pi, gamma)        # value the learned model implies
    var_true = (P_pi @ (V_true * V_true).unsqueeze(-1)).squeeze(-1) - (
        P_pi @ V_true.unsqueeze(-1)).squeeze(-1) ** 2    # Var_{P(s,.)}[V*]: what eq. 3 scales
    return {
        "value_error": value_error(V, V_true),
        "value_rmse": (V - V_true).pow(2).mean(-1).sqrt(),
        "model_value_error": value_error(V_model, V_true),
        "model_kl": _kl_rows(P_rows, P_hat_rows),
        "model_entropy": row_entropy(P_hat_rows),
        "env_entropy": row_entropy(P_rows),
        "env_value_var": var_true.mean(-1),
    }


# --------------------------------------------------------------------------- groups
def run_garnet_group(cfg: SweepConfig, group: Group) -> list[dict]:
    """Train one (loss, rank) on every seed x temperature of the Garnet sweep."""
    gs, tc, dtype = cfg.garnet, cfg.train, DTYPES[cfg.dtype]
    spec = parse_loss(group.loss)
    S, T = len(cfg.seeds), len(gs.temps)
    garnet = make_garnet(gs.states, gs.successors, cfg.seeds, gs.gamma, gs.actions, gs.reward)
    P = garnet.transitions_pi(torch.tensor(gs.temps, dtype=torch.float64))    # [S, T, n, n]
    r = garnet.reward_pi().unsqueeze(1).expand(S, T, gs.states)               # [S, T, n]
    V_true = exact_values(P, r, gs.gamma)                                     # [S, T, n]
    scale = reward_scale(r.flatten(0, 1), cfg.scale_rewards)                  # [S*T, 1]
    task = Task(P.flatten(0, 1).to(dtype), (r.flatten(0, 1) / scale).to(dtype), None,
                gs.gamma)
    A, B = init_low_rank(cfg.seeds, gs.states, gs.states, group.rank, tc.init_std, dtype)
    learner = Learner.create(A.repeat_interleave(T, 0), B.repeat_interleave(T, 0))
    train(task, learner, spec, tc)
    P_hat = learner.model(torch.float64)                                          # [S*T, n, n]
    flat = lambda x: x.flatten(0, 1)                                          # noqa: E731
    metrics = _model_metrics(flat(P), P_hat, flat(P), P_hat, flat(r),
                             learner.V.double() * scale, flat(V_true), gs.gamma)
    rows = []
    for i in range(S * T):
        s, t = divmod(i, T)
        rows.append({"experiment": "garnet", "loss": group.loss, "rank": group.rank,
                     "temperature": gs.temps[t], "p_intended": "", "seed": cfg.seeds[s],
                     "iteration": "",
                     "steps": tc.steps, **{k: v[i].item() for k, v in metrics.items()}})
    return rows


def run_cliff_group(cfg: SweepConfig, group: Group) -> list[dict]:
    """Greedy policy iteration with one (loss, rank) on every seed x slip level."""
    cs, dtype = cfg.cliff, DTYPES[cfg.dtype]
    tc = replace(cfg.train, eps=cs.eps)
    spec = parse_loss(group.loss)
    S, T = len(cfg.seeds), len(cs.probs)
    P, R, start = cw.cliff_walk(torch.tensor(cs.probs, dtype=torch.float64), cs.size)
    n, A_ = P.shape[1], P.shape[2]
    P = P.unsqueeze(0).expand(S, T, n, A_, n).flatten(0, 1)                   # [G, n, A, n]
    R = R.unsqueeze(0).expand(S, T, n, A_).flatten(0, 1)                      # [G, n, A]
    V_opt = cw.optimal_values(P, R, cs.gamma)                                 # [G, n]
    P_rows, r_rows = P.flatten(1, 2), R.flatten(1, 2)                         # [G, nA, n], [G, nA]
    scale = reward_scale(r_rows, cfg.scale_rewards)                           # [G, 1]
    A, B = init_low_rank(cfg.seeds, n * A_, n, group.rank, tc.init_std, dtype)
    learner = Learner.create(A.repeat_interleave(T, 0), B.repeat_interleave(T, 0))
    policy = torch.full((S * T, n, A_), 1.0 / A_, dtype=torch.float64)        # uniform start
    rows = []
    for it in range(cs.iterations):
        task = Task(P_rows.to(dtype), (r_rows / scale).to(dtype), policy.to(dtype), cs.gamma)
        train(task, learner, spec, tc, steps=cs.steps)
        V = learner.V.double() * scale
        P_hat_rows = learner.model(torch.float64)
        P_hat = P_hat_rows.unflatten(1, (n, A_))
        V_pi = cw.policy_values(P, R, policy, cs.gamma)
        metrics = _model_metrics(P_rows, P_hat_rows, policy_mix(P_rows, policy),
                                 policy_mix(P_hat_rows, policy), (policy * R).sum(-1), V, V_pi,
                                 cs.gamma)
        policy = cw.greedy_policy(cw.q_values(P_hat if cs.improve == "model" else P, R, V,
                                              cs.gamma))
        V_new = cw.policy_values(P, R, policy, cs.gamma)
        metrics["regret_start"] = V_opt[:, start] - V_new[:, start]
        metrics["regret_mean"] = (V_opt - V_new).mean(-1)
        for i in range(S * T):
            s, t = divmod(i, T)
            rows.append({"experiment": "cliff", "loss": group.loss, "rank": group.rank,
                         "temperature": "", "p_intended": cs.probs[t], "seed": cfg.seeds[s],
                         "iteration": it + 1,
                         "steps": (it + 1) * cs.steps,
                         **{k: v[i].item() for k, v in metrics.items()}})
    return rows


def run_group(cfg: SweepConfig, group: Group) -> list[dict]:
    """One group's CSV rows, computed on a single thread."""
    with single_thread():
        if group.experiment == "garnet":
            return run_garnet_group(cfg, group)
        return run_cliff_group(cfg, group)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run on one intra-op thread (same float reductions wherever a group runs)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_sweep(cfg: SweepConfig, workers: int = 1,
              on_done: Callable[[Group], None] | None = None) -> list[dict]:
    """Run every group; rows sorted by (experiment, loss, rank, temperature, seed, iteration)."""
    todo = sorted(groups(cfg), key=lambda g: -g.cost)
    results: list[dict] = []
    if workers <= 1:
        for g in todo:
            results += run_group(cfg, g)
            if on_done:
                on_done(g)
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {pool.submit(run_group, cfg, g): g for g in todo}
            for fut in as_completed(futures):
                results += fut.result()
                if on_done:
                    on_done(futures[fut])
    return sort_rows(cfg, results)


def sort_rows(cfg: SweepConfig, rows: list[dict]) -> list[dict]:
    loss_order = {name: i for i, name in enumerate(cfg.losses)}
    exp_order = {name: i for i, name in enumerate(EXPERIMENTS)}

    def key(row: dict) -> tuple:
        x = row["temperature"] if row["experiment"] == "garnet" else -row["p_intended"]
        it = row["iteration"] if row["iteration"] != "" else 0
        return (exp_order[row["experiment"]], loss_order[row["loss"]], row["rank"], x,
                row["seed"], it)
    return sorted(rows, key=key)
