"""The one acting loop: a policy with its recurrent carries over E environments.

Training collection, evaluation, ``vawm imagine`` and the CartPole study all step environments
through :class:`Acting`: the agent filters each observation into its carry, picks actions (its
policy's sample or mode, or an override such as uniform random actions), and the driver steps.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from vawm.driver import Driver
from vawm.state import carry_from_tensors, carry_to_tensors, tree_map


def random_actions(n: int, act_dim: int, discrete: bool, device: str | torch.device = "cpu",
                   generator: torch.Generator | np.random.Generator | None = None) -> Tensor:
    """n uniform random actions [n, A]: one-hot for discrete action spaces, U(-1, 1) otherwise.
    ``generator``: a torch or numpy generator (default: torch's global RNG)."""
    if isinstance(generator, np.random.Generator):
        if discrete:
            idx = torch.as_tensor(generator.integers(act_dim, size=n))
        else:
            return torch.as_tensor(generator.uniform(-1, 1, (n, act_dim)), dtype=torch.float32,
                                   device=device)
    elif discrete:
        idx = torch.randint(0, act_dim, (n,), generator=generator)
    else:
        return (torch.rand(n, act_dim, generator=generator) * 2 - 1).to(device)
    return torch.nn.functional.one_hot(idx, act_dim).float().to(device)


class Acting:
    """The agent acting in ``driver``'s E environments; call :meth:`reset` first, then
    :meth:`step` returns the observation step it acted on, in replay layout ([E, ...] each)."""

    def __init__(self, agent, driver: Driver, device: torch.device, mode: bool = False):
        self.agent, self.driver, self.device, self.mode = agent, driver, device, mode
        self.n = driver.num_envs
        self.pending: dict = {}       # the next observation step of every env (from the driver)
        self.carry = None
        self.prev_action: Tensor | None = None

    def reset(self) -> None:
        A = self.agent.act_dim
        self.pending = self.driver.step(np.zeros((self.n, A), np.float32))
        self.carry = tree_map(lambda t: t.to(self.device), self.agent.wm.initial_carry(self.n))
        self.prev_action = torch.zeros(self.n, A, device=self.device)

    def step(self, override: Callable[[Tensor], Tensor] | None = None) -> dict[str, np.ndarray]:
        """Filter the pending observations, act (``override`` replaces the policy's actions after
        the carry advanced), step every env. Returns obs, action, reward, is_first, is_last,
        is_terminal, life_loss of the step acted on; ``self.pending`` then holds the next one
        (with its finished ``episodes``: (env index, return, length))."""
        p = self.pending
        obs = torch.as_tensor(p["obs"], device=self.device)
        first = torch.as_tensor(p["is_first"], device=self.device)
        self.carry, a = self.agent.act(self.carry, obs, self.prev_action, first, mode=self.mode)
        if override is not None:
            a = override(a)
        self.prev_action = a
        action = a.cpu().numpy().astype(np.float32)
        rec = {"obs": p["obs"], "action": action, "reward": p["reward"],
               "is_first": p["is_first"], "is_last": p["is_last"],
               "is_terminal": p["is_terminal"], "life_loss": p["life_loss"]}
        self.pending = self.driver.step(action)
        return rec

    def state_dict(self) -> dict:
        return {"pending": {k: torch.from_numpy(np.asarray(v)) for k, v in self.pending.items()
                            if k != "episodes"},
                "carry": carry_to_tensors(self.carry), "prev_action": self.prev_action}

    def load_state_dict(self, sd: dict) -> None:
        self.pending = {k: v.numpy() for k, v in sd["pending"].items()}
        self.pending["episodes"] = []
        self.carry = carry_from_tensors(self.agent.wm, sd["carry"], self.device)
        self.prev_action = sd["prev_action"].to(self.device)


@torch.no_grad()
def evaluate_policy(agent, cfg, device: torch.device, episodes: int) -> dict:
    """Run ``episodes`` full episodes of the current policy in fresh evaluation envs.

    Each of up to 8 parallel envs gets a fixed quota of episodes (no bias towards short
    episodes). The torch RNG is restored afterwards, so evaluating never changes a training run.
    """
    n = max(1, min(episodes, 8))
    devrng = torch.get_rng_state()
    driver = Driver(cfg.env, n, cfg.seed + 10_000, cfg.env_cfg, False, training=False)
    acting = Acting(agent, driver, device, mode=cfg.run.eval_mode == "mode")
    acting.reset()
    quota = np.array([episodes // n + (i < episodes % n) for i in range(n)])
    done = np.zeros(n, int)
    returns: list[float] = []
    while (done < quota).any():
        acting.step()
        for i, ret, _ in acting.pending["episodes"]:
            if done[i] < quota[i]:
                returns.append(float(ret))
                done[i] += 1
    driver.close()
    torch.set_rng_state(devrng)
    return {"eval_return_mean": float(np.mean(returns)), "eval_return_std": float(np.std(returns)),
            "eval_episodes": len(returns), "eval_returns": returns}
