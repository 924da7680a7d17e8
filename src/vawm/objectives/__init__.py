"""Value-aware objectives. Each module defines one objective; ``build_objective`` picks it.

An objective receives what a backbone exposes (:class:`vawm.worldmodels.base.Observed`) plus a
:class:`Context`, and returns a :class:`Contribution`: extra loss terms added to the world-model
loss, optional per-step weights [B, T] that multiply the backbone's terms, and metrics.
"""

from __future__ import annotations

from vawm.objectives.base import Context, Contribution, NoObjective, Objective


def build_objective(name: str, cfg, feat_dim: int, latent_slice: slice | None = None
                    ) -> Objective:
    """The objective ``name`` for a backbone whose features are ``feat_dim`` wide, with its
    stochastic latent at ``latent_slice`` of a feature (default: the whole feature)."""
    if name == "none":
        return NoObjective()
    if name == "var":
        from vawm.objectives.var import ValueAlignment
        return ValueAlignment(cfg.var)
    if name == "tempo":
        from vawm.objectives.tempo import Tempo
        return Tempo(cfg.tempo, feat_dim)
    if name == "dream-critic":
        from vawm.objectives.dream_critic import DreamCritic
        return DreamCritic(cfg.dream_critic, feat_dim, latent_slice)
    raise ValueError(f"unknown objective {name!r}; valid: none, var, tempo, dream-critic")


__all__ = ["Context", "Contribution", "Objective", "NoObjective", "build_objective"]
