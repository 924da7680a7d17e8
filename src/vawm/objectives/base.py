"""The objective interface (see ``vawm.worldmodels.base`` for what backbones expose)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import Tensor, nn

from vawm.worldmodels.base import Backbone, Observed


class ActorCriticView(Protocol):
    """What objectives may use of the behaviour learner (``agents.actor_critic.ActorCritic``)."""
    critic: nn.Module           # feat [..., F] -> value distribution (``.mean``, ``.logits``)
    slow_critic: nn.Module      # its EMA copy

    def value(self, feat: Tensor, slow: bool = False) -> Tensor: ...   # [..., F] -> [...]

    def policy(self, feat: Tensor) -> Any: ...   # a distribution with sample()/rsample()/mode()


@dataclass
class Context:
    """What an objective gets besides the backbone's ``Observed``."""
    backbone: Backbone          # for rollouts, ``loss`` re-runs and its parameter groups
    agent: ActorCriticView
    update: int                 # world-model updates done so far (before this one)
    batch: dict[str, Tensor]    # the replayed batch [B, T, ...]
    wm_lr: float = 1e-4         # the world model's learning rate (look-ahead steps)


@dataclass
class Contribution:
    losses: dict[str, Tensor] = field(default_factory=dict)   # scalar terms added to the WM loss
    weights: Tensor | None = None                             # [B, T] per-step weights
    metrics: dict[str, Tensor] = field(default_factory=dict)
    #: the gradient of ``backbone.loss(obs, weights)`` already computed by the objective, as
    #: (parameter, gradient) pairs over every trainable backbone parameter; the agent then
    #: back-propagates only the rest of the world-model loss (TEMPO: one backward, #17)
    wm_grads: list[tuple[Tensor, Tensor]] | None = None


class Objective(nn.Module):
    """Base class; register one with :func:`register_objective`. Parameters of an objective that
    should train *with* the world model (e.g. the dream critic) are returned by
    :meth:`wm_parameters`; an objective with its own optimiser (TEMPO's meta weighter) steps it
    inside :meth:`contribute`."""

    name = "base"
    #: its config dataclass (the run-config section ``cfg.<config_key>``), or None
    Config: type | None = None
    config_key: str = ""
    #: prefix of its logged metrics and loss terms
    log_name: str = ""
    #: whether its contribution can be captured in a CUDA graph (``run.cuda_graph``, see
    #: ``vawm.graphs``): no host synchronisation; Python branches on the update count only
    #: through :meth:`phase`
    graph_safe: bool = False

    @classmethod
    def from_config(cls, cfg, backbone: Backbone) -> Objective:
        """Build from the run config for ``backbone`` (its ``feat_dim``, ``latent_slice``)."""
        return cls()

    @classmethod
    def check(cls, cfg) -> None:
        """Cross-field checks of a run config that uses this objective; raise ConfigError."""

    def contribute(self, obs: Observed, ctx: Context) -> Contribution:
        raise NotImplementedError

    def wm_parameters(self) -> list[nn.Parameter]:
        return []

    def phase(self, update: int) -> Hashable:
        """What of :meth:`contribute`'s Python control flow depends on the update count (a CUDA
        graph is captured per phase); the default: nothing."""
        return None


#: objective name -> class, filled by :func:`register_objective` (see ``vawm.objectives``)
OBJECTIVES: dict[str, type[Objective]] = {}


def register_objective(name: str, config_key: str | None = None, log_name: str | None = None):
    """Class decorator: make an objective available as ``--objective NAME``; its ``Config``
    dataclass becomes the run-config section ``config_key`` (default: NAME with ``_``)."""
    def deco(cls: type[Objective]) -> type[Objective]:
        cls.name = name
        cls.config_key = config_key or name.replace("-", "_")
        cls.log_name = log_name or cls.config_key
        OBJECTIVES[name] = cls
        return cls
    return deco


@register_objective("none")
class NoObjective(Objective):
    """Pure maximum likelihood: the baseline of every table."""

    graph_safe = True

    def contribute(self, obs: Observed, ctx: Context) -> Contribution:
        return Contribution()
