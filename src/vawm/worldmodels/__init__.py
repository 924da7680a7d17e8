"""World-model backbones: one module each, registered by name with ``register_backbone``.

A new backbone is one module that defines a :class:`Backbone` subclass with its ``Config``
dataclass and ``@register_backbone("name")``, plus its import line below.
"""

from __future__ import annotations

from vawm.worldmodels import latent, rssm, tssm, vae_lstm  # noqa: E402,F401  (register the built-ins)
from vawm.worldmodels.base import BACKBONES, Backbone, Imagined, Observed, register_backbone


def build_backbone(cfg, info: dict) -> Backbone:
    """Build ``cfg.backbone`` for an environment described by ``info`` (see ``envs.env_info``)."""
    return BACKBONES[cfg.backbone].from_config(cfg, info)


__all__ = ["BACKBONES", "Backbone", "Imagined", "Observed", "build_backbone", "register_backbone"]
