"""World-model backbones, built by name (each in its own module, imported on demand)."""

from __future__ import annotations

import importlib

# backbone name -> (module, class)
REGISTRY = {
    "rssm": ("vawm.worldmodels.rssm", "RSSM"),
    "tssm": ("vawm.worldmodels.tssm", "TSSM"),
    "vae-lstm": ("vawm.worldmodels.vae_lstm", "VAELSTM"),
}


def build_backbone(cfg, info: dict):
    """Build ``cfg.backbone`` for an environment described by ``info`` (see ``envs.env_info``).

    Every backbone class takes ``(cfg, info)``: the full config (it reads its own section) and the
    environment metadata (``obs_kind``, ``obs_shape``, ``discrete``, ``action_dim``).
    """
    if cfg.backbone not in REGISTRY:
        raise ValueError(f"unknown backbone {cfg.backbone!r}; valid: {', '.join(REGISTRY)}")
    module, cls = REGISTRY[cfg.backbone]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            raise ValueError(f"backbone {cfg.backbone!r} is not implemented yet") from e
        raise
    return getattr(mod, cls).from_config(cfg, info)
