"""World-model backbones, built by name."""

from __future__ import annotations


def build_backbone(cfg, info: dict):
    """Build ``cfg.backbone`` for an environment described by ``info`` (see ``envs.env_info``)."""
    image = info["obs_kind"] == "image"
    if cfg.backbone == "rssm":
        from vawm.worldmodels.rssm import RSSM
        return RSSM(cfg.rssm, tuple(info["obs_shape"]), info["action_dim"], image)
    raise ValueError(f"unknown backbone {cfg.backbone!r}")
