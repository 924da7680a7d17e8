"""The seam between backbones, objectives and behaviour learning.

A backbone turns a replayed batch into an :class:`Observed` (states and unreduced per-step loss
terms), reduces those terms into its maximum-likelihood loss (optionally with per-step weights),
and rolls its dynamics forward in imagination. Objectives only ever see these plain tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from vawm.state import tree_map


@dataclass
class Observed:
    """What a backbone returns for a replayed batch (all [B, T, ...])."""
    post: Tensor                # features of s_t = (h_t, z_t), z_t ~ q(z | h_t, o_t)
    prior: Tensor               # features of s~_t = (h_t, z~_t), z~_t ~ p(z | h_t)
    kl: Tensor                  # [B, T] KL[q(z_t | .) || p(z_t | h_t)] per step (raw, before free bits)
    terms: dict[str, Tensor]    # per-step, unreduced [B, T]: the terms ``loss`` weights and sums
    start: Any = None           # backbone state at every (b, t), flattened, to start imagination
    post_logits: Tensor | None = None   # [B, T, S, C] normalised log-probs (categorical latents)
    prior_logits: Tensor | None = None
    step: int = 0               # the world-model update this batch is observed for (schedules)
    #: the backbone's own intermediate values (its ``loss`` and metrics); objectives never read it
    extras: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class Imagined:
    """An imagined rollout of horizon H from N start states (time-major)."""
    feat: Tensor                # [H+1, N, F]; index 0 is the start state
    action: Tensor              # [H+1, N, A]; action taken at each state (last is sampled too)
    reward: Tensor              # [H+1, N] predicted reward on arrival (index 0: unused)
    cont: Tensor                # [H+1, N] predicted continuation probability (index 0: from data)


class Policy(Protocol):
    def __call__(self, feat: Tensor) -> Any: ...  # returns a distribution with sample()/rsample()


class Backbone(nn.Module):
    """Interface every world model implements; register one with :func:`register_backbone`."""

    name: str = ""
    #: its config dataclass (a section of the run config, ``cfg.<config_key>``), or None
    Config: type | None = None
    config_key: str = ""
    feat_dim: int
    #: where the stochastic latent z_t sits inside a feature [..., feat_dim]
    latent_slice: slice
    #: names of the per-step terms that ``loss`` sums (and that weights multiply)
    term_names: tuple[str, ...] = ()
    #: the terms free bits clamp (after the weights multiply them)
    free_bits_terms: tuple[str, ...] = ()
    #: behaviour learner that fits it: "imagination" (``agents.actor_critic``, DreamerV3-style)
    #: or "td" (``agents.td``: TD3 critics, MAD-TD data mixing, MPC)
    behaviour: str = "imagination"
    #: whether its model's predictions are random (several rollouts from one state differ)
    stochastic: bool = True
    #: whether ``decode`` maps features back to observations (``vawm imagine`` needs it)
    has_decoder: bool = True
    #: whether the behaviour learner must not use the model (data, planning): a model-free
    #: baseline on the backbone's encoder (``latent.model_free``, the TD3 baseline)
    model_free: bool = False
    #: whether its observe/loss/imagine can be captured in a CUDA graph (``run.cuda_graph``; see
    #: ``vawm.graphs``): no host synchronisation and no dependence on the update count
    graph_safe: bool = False
    #: (offset, S, C) of the one-hot latent block in the features (categorical latents), or None:
    #: ``run.onehot_gather`` lets the behaviour learner's heads gather their weight rows there
    onehot_layout: tuple[int, int, int] | None = None

    @classmethod
    def from_config(cls, cfg, info: dict) -> Backbone:
        """Build from the run config (reading ``cfg.<config_key>``) and the env's ``info``
        (``obs_kind``, ``obs_shape``, ``discrete``, ``action_dim``; see ``envs.env_info``)."""
        raise NotImplementedError

    @classmethod
    def check(cls, cfg) -> None:
        """Cross-field checks of a run config that uses this backbone; raise ConfigError."""

    def observe(self, batch: dict[str, Tensor], step: int = 0) -> Observed:
        """Filter a replayed batch [B, T, ...]; ``step`` is the world-model update it serves
        (a schedule such as a KL annealing reads it; it is recorded as ``Observed.step``)."""
        raise NotImplementedError

    def loss(self, obs: Observed, weights: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Scalar ML loss; ``weights`` [B, T] multiply each step's terms *before* free bits."""
        raise NotImplementedError

    def imagine(self, start: Any, policy: Policy, horizon: int) -> Imagined:
        """Roll the dynamics ``horizon`` steps from N start states (detached) under ``policy``.

        The default serves recurrent backbones: a state with ``.feat()`` [N, F] and
        ``img_step(state, action)`` -> next prior state. The policy always reads a stop-gradient
        state (DreamerV3: ``actor(sg(s))``); under ``torch.enable_grad`` the actions' gradients
        flow through the dynamics, never into the start state."""
        s = tree_map(Tensor.detach, start)
        feats, actions = [s.feat()], []
        for _ in range(horizon):
            a = policy(feats[-1].detach())
            actions.append(a)
            s = self.img_step(s, a)
            feats.append(s.feat())
        actions.append(policy(feats[-1].detach()))
        feat = torch.stack(feats, 0)                                  # [H+1, N, F]
        return Imagined(feat, torch.stack(actions, 0), self.reward_mean(feat), self.cont_prob(feat))

    def rollout(self, start: Any, actions: Tensor) -> Tensor:
        """Features [H+1, N, F] of the states the dynamics reach from ``start`` under the given
        actions [H, N, A], differentiable through the dynamics *and* the start state (index 0
        is the start). The default serves recurrent backbones (``img_step``)."""
        s = start
        feats = [s.feat()]
        for a in actions:
            s = self.img_step(s, a)
            feats.append(s.feat())
        return torch.stack(feats, 0)

    def img_step(self, state: Any, action: Tensor) -> Any:
        """s_t, a_t -> the prior state s~_{t+1} (recurrent backbones; see ``imagine``)."""
        raise NotImplementedError

    def param_groups(self, lr: float) -> list[dict]:
        """Optimiser groups of the world model (one learning rate by default)."""
        return [{"params": list(self.parameters()), "lr": lr}]

    def after_update(self) -> None:
        """Called after each world-model optimiser step (e.g. target-network updates)."""

    def representation_parameters(self) -> list[nn.Parameter]:
        """Encoder + dynamics parameters (what TEMPO's upper-level gradient is taken over)."""
        return list(self.parameters())

    def reward_mean(self, feat: Tensor) -> Tensor:
        raise NotImplementedError

    def decode(self, feat: Tensor) -> Tensor:
        """Decoded observation of features [..., F] in raw observation units (images: [0, 255])."""
        raise NotImplementedError

    def cont_prob(self, feat: Tensor) -> Tensor:
        raise NotImplementedError

    # acting in the environment
    def initial_carry(self, n: int) -> Any:
        raise NotImplementedError

    def act_step(self, carry: Any, obs: Tensor, prev_action: Tensor, is_first: Tensor
                 ) -> tuple[Any, Tensor]:
        """One filtering step while acting: returns (new carry, feature [N, F])."""
        raise NotImplementedError


#: backbone name -> class, filled by :func:`register_backbone` (see ``vawm.worldmodels``)
BACKBONES: dict[str, type[Backbone]] = {}


def register_backbone(name: str, config_key: str | None = None):
    """Class decorator: make a backbone available as ``--backbone NAME``; its ``Config``
    dataclass becomes the run-config section ``config_key`` (default: NAME with ``_``)."""
    def deco(cls: type[Backbone]) -> type[Backbone]:
        cls.name, cls.config_key = name, config_key or name.replace("-", "_")
        BACKBONES[name] = cls
        return cls
    return deco


class ReplayActions:
    """A "policy" for ``Backbone.imagine`` that plays given actions [H(+1), N, A] in order (the
    last one again once they run out)."""

    def __init__(self, actions: Tensor):
        self.actions, self.k = actions, 0

    def __call__(self, feat: Tensor) -> Tensor:
        a = self.actions[min(self.k, len(self.actions) - 1)]
        self.k += 1
        return a
