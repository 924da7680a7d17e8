"""Value-aware objectives: one module each, registered by name with ``register_objective``.

An objective receives what a backbone exposes (:class:`vawm.worldmodels.base.Observed`) plus a
:class:`Context`, and returns a :class:`Contribution`: extra loss terms added to the world-model
loss, optional per-step weights [B, T] that multiply the backbone's terms, and metrics. A new
objective is one module with an :class:`Objective` subclass, its ``Config`` dataclass and
``@register_objective("name")``, plus its import line below.
"""

from __future__ import annotations

from vawm.objectives import dream_critic, tempo, vagram, vaml, var  # noqa: E402,F401  (register the built-ins)
from vawm.objectives.base import (
    OBJECTIVES,
    Context,
    Contribution,
    NoObjective,
    Objective,
    register_objective,
)


def build_objective(cfg, backbone) -> Objective:
    """The objective ``cfg.objective`` for ``backbone``."""
    return OBJECTIVES[cfg.objective].from_config(cfg, backbone)


__all__ = ["OBJECTIVES", "Context", "Contribution", "Objective", "NoObjective", "build_objective",
           "register_objective"]
