"""The (m,b)-VAML family on latent models (``vaml``): IterVAML, the MuZero loss and their calibrated
versions (CVAML), Voelcker et al. 2025 eq. 2, §4 and App. C.1.

From the encoded start z_0 of every replayed sequence the backbone rolls its model m steps along
the replayed actions, n times (``samples``; a deterministic model is rolled once and its one
prediction stands for all n). With x^_j^k the k-th rollout's step j and x_j the real states:

    L = sum_{j=1}^{m} ( 1/n sum_k V(x^_j^k) - y_j )^2  [ - s_j^2 / n  if calibrated ]

s_j^2 the unbiased sample variance of the n values (Voelcker et al. 2025 §4.2): its expectation
over the model's samples is (E V(x^_j) - y_j)^2, while the uncalibrated loss adds Var / n. The
formulas are ``vawm.garnet.losses.bootstrap_targets`` and ``mb_vaml_samples`` (one
implementation for the Garnet lab and here).

Who trains what (App. C.1):
  * b = 0 (IterVAML setting): y_j = V-bar(sg x_j); values by the target critic, the loss trains
    the model only (encoder and dynamics). With the ``latent`` backbone V(x) = Q-bar(x, a_j) with
    a_j = pi(sg z_j) the actor's action at the real state, for prediction and target alike
    (MAD-TD's VAML term).
  * b >= 1 (MuZero setting): y_j = sum_{i<b} gamma^i r_{j+i+1} + gamma^b V-bar(sg z_{j+b}); the
    prediction is the online critic, Q(x^_j, a_j) with the replayed action a_j on ``latent``, so
    the loss trains model *and* value at the predicted latent (the value at the real state, the
    j = 0 term of eq. 2, is the behaviour learner's own TD loss, not repeated here).
Windows that cross an episode start are masked. On recurrent backbones (``rssm``, ``tssm``) the
prior rollout gives the model samples, the posterior features the targets, and V is the slow
critic; there the imagination actor-critic owns its critic, so b >= 1 is a config error.
"""

from __future__ import annotations

from typing import Annotated

import torch

from vawm.garnet.losses import bootstrap_targets, mb_vaml_samples
from vawm.objectives.base import Context, Contribution, Objective, register_objective
from vawm.settings import ConfigError, Min, section
from vawm.state import tree_map
from vawm.worldmodels.base import Backbone, Observed


@section("vaml")
class VamlConfig:
    """(m,b)-VAML / CVAML (Voelcker et al. 2025 eq. 2, §4.2; Table 2: m = 1, b in {0, 1},
    n in {1, 4})."""
    m: Annotated[int, Min(1)] = 1           # model rollout steps of the loss
    b: Annotated[int, Min(0)] = 0           # bootstrap steps (0: IterVAML, >= 1: MuZero)
    samples: Annotated[int, Min(1)] = 1     # n model rollouts per start
    calibrated: bool = False                # CVAML: subtract s^2 / n
    scale: Annotated[float, Min(0)] = 1.0   # weight of the loss in the world-model loss
    gamma: Annotated[float, Min(0)] = 0.99  # discount of the bootstrap targets (b >= 1)


@register_objective("vaml")
class VAML(Objective):
    Config = VamlConfig

    def __init__(self, cfg: VamlConfig):
        super().__init__()
        self.cfg = cfg

    @classmethod
    def from_config(cls, cfg, backbone: Backbone) -> VAML:
        return cls(cfg.vaml)

    @classmethod
    def check(cls, cfg) -> None:
        c = cfg.vaml
        if c.calibrated and c.samples < 2:
            raise ConfigError("vaml.calibrated=true needs vaml.samples >= 2 (the calibration "
                              "term is the sample variance of the model rollouts' values)")
        need = c.m + max(c.b, 1) + 1
        if cfg.run.batch_length < need:
            raise ConfigError(f"vaml with m={c.m}, b={c.b} needs run.batch_length >= {need} "
                              f"(got {cfg.run.batch_length})")
        if c.b >= 1 and cfg.backbone != "latent":
            raise ConfigError(f"vaml.b={c.b} (MuZero setting) trains the value, which on "
                              f"{cfg.backbone} belongs to the imagination actor-critic; use "
                              "vaml.b=0 or --backbone latent")

    def contribute(self, obs: Observed, ctx: Context) -> Contribution:
        c, wm, agent, batch = self.cfg, ctx.backbone, ctx.agent, ctx.batch
        B, T = batch["reward"].shape
        m, b, n = c.m, c.b, c.samples
        action = batch["action"].float()
        idx = torch.arange(B, device=action.device) * T               # flattened (b, t = 0)
        start = tree_map(lambda t: t[idx], obs.start)
        reps = n if wm.stochastic else 1
        if reps > 1:
            start = tree_map(lambda t: t.repeat_interleave(reps, 0), start)
        acts = action[:, :m].repeat_interleave(reps, 0).transpose(0, 1)   # [m, B*reps, A]
        feat = wm.rollout(start, acts)[1:]                            # [m, B*reps, F]
        feat = feat.unflatten(1, (B, reps)).permute(1, 0, 2, 3)       # [B, m, reps, F]
        real = obs.post.detach()                                      # [B, T, F]
        q = getattr(agent, "q", None)                                 # latent: twin Q(z, a)
        with torch.no_grad():
            if b == 0:
                if q is not None:
                    a_pi = agent.pi(real[:, 1:m + 1])                 # [B, m, A]
                    y = q(real[:, 1:m + 1], a_pi, True)               # [2, B, m]
                else:
                    y = agent.value(real[:, 1:m + 1], slow=True)      # [B, m]
            else:
                v_bar = agent.value(real[:, :m + b + 1], slow=True)   # [B, m+b+1]
                rew = batch["reward"][:, 1:m + b + 1].float()         # r(x_i) = reward[i + 1]
                y = bootstrap_targets(rew, v_bar, m, b, c.gamma)[:, 1:]   # [B, m]
        if q is not None:
            a = a_pi if b == 0 else action[:, 1:m + 1]                # [B, m, A]
            a = a.unsqueeze(2).expand(B, m, reps, a.shape[-1])
            v = q(feat, a, b == 0)                                    # [2, B, m, reps]
            if y.dim() == 2:
                y = y.unsqueeze(0).expand(2, B, m)
        else:
            v = agent.value(feat, slow=True)                          # [B, m, reps]
        if reps < n:                                                  # deterministic model
            v = v.expand(*v.shape[:-1], n)
        mask = torch.cumprod(1.0 - batch["is_first"][:, 1:m + b + 1].float(), 1)[:, -1]   # [B]
        per = mb_vaml_samples(v, y, c.calibrated)                           # [(2,) B]
        loss = (per * mask).mean()                                    # mean over twin heads too
        with torch.no_grad():
            plain = mb_vaml_samples(v, y, False)                            # the uncalibrated value
            plain = (plain * mask).mean()
        return Contribution(losses={"loss": c.scale * loss},
                            metrics={"vaml/uncalibrated": plain})
