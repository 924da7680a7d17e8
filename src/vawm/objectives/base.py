"""The objective interface (see ``vawm.worldmodels.base`` for what backbones expose)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from vawm.worldmodels.base import Backbone, Observed


@dataclass
class Context:
    backbone: Backbone
    agent: Any                  # ActorCritic: .critic, .slow_critic, .value(), .policy()
    update: int                 # world-model updates done so far (before this one)
    batch: dict[str, Tensor]
    wm_params: list[nn.Parameter] = field(default_factory=list)
    wm_lr: float = 1e-4


@dataclass
class Contribution:
    losses: dict[str, Tensor] = field(default_factory=dict)   # scalar terms added to the WM loss
    weights: Tensor | None = None                             # [B, T] per-step weights
    metrics: dict[str, Tensor] = field(default_factory=dict)


class Objective(nn.Module):
    """Base class. Parameters of an objective that should train *with* the world model (e.g. the
    dream critic) are returned by :meth:`wm_parameters`; an objective with its own optimiser
    (TEMPO's meta weighter) steps it inside :meth:`contribute`."""

    name = "base"

    def contribute(self, obs: Observed, ctx: Context) -> Contribution:
        raise NotImplementedError

    def wm_parameters(self) -> list[nn.Parameter]:
        return []


class NoObjective(Objective):
    """Pure maximum likelihood: the baseline of every table."""

    name = "none"

    def contribute(self, obs: Observed, ctx: Context) -> Contribution:
        return Contribution()
