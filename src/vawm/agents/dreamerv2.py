"""DreamerV2's behaviour learning in imagination (Hafner et al. 2021, §2 and its public code).

Indices as DreamerV2's code has them (``agent.py``: ``target``, ``actor_loss``, ``critic_loss``):
r_t and d_t are the reward and discount predicted *at* state s_t (so V_t includes the reward of
arriving at s_t), v' is the target critic, a copy of the critic every ``target_every`` updates:

    V_t      = r_t + d_t ((1 - lam) v'(s_{t+1}) + lam V_{t+1}),   V_H = v'(s_H),   t = 0..H-1
    w_t      = prod_{k<t} d_k   (w_0 = 1);  d_0 = gamma (1 - terminal of the start state),
               d_t = the discount head's mean for t >= 1 (gamma without a head)
    L_critic = mean_t w_t 0.5 (v(s_t) - sg(V_t))^2                                t = 0..H-1
    L_actor  = -mean_t w_t [ ln pi(a_t | s_t) sg(V_{t+1} - v'(s_t))   (reinforce)
                             or V_{t+1}                               (dynamics) ]
               - eta mean_t w_t H[pi(. | s_t)]                                    t = 0..H-2

No return normalisation (its ``reward_norm`` has momentum 1: the identity) and no slow-critic
regulariser. The discount head is the backbone's continuation head trained on gamma (1 - terminal)
(``rssm.cont_target`` = gamma with ``agent.cont_disc``); without one (``rssm.cont_head=false``, its
DMC setting) every step continues with gamma.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from vawm.agents.actor_critic import ActorCritic, lambda_returns
from vawm.worldmodels.base import Backbone, Observed


def dreamerv2_returns(reward: Tensor, disc: Tensor, value: Tensor, lam: float) -> Tensor:
    """V_t = r_t + d_t ((1 - lam) v_{t+1} + lam V_{t+1}), V_H = v_H: [H+1, N] each -> [H, N].

    DreamerV3's recursion (:func:`lambda_returns`) with the reward and discount of the state the
    step leaves instead of the one it reaches: one implementation of the recursion, shifted.
    """
    return lambda_returns(torch.cat([reward[:1], reward[:-1]]), torch.cat([disc[:1], disc[:-1]]),
                          value, 1.0, lam)


class DreamerV2ActorCritic(ActorCritic):
    """Actor, critic and target critic (``slow_critic``) with DreamerV2's losses."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # updates done; the target critic copies the critic after updates 0, k, 2k, ...
        self.register_buffer("target_updates", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def update_slow(self) -> None:
        """Hard copy every ``target_every`` updates (DreamerV2's slow_target_fraction 1), decided
        on the device (no host read, so the update stays capturable)."""
        copy = (self.target_updates % self.cfg.target_every) == 0
        for s, p in zip(self.slow_critic.parameters(), self.critic.parameters(), strict=True):
            s.copy_(torch.where(copy, p, s))
        self.target_updates.add_(1)

    def train_step(self, wm: Backbone, obs: Observed, batch: dict[str, Tensor],
                   amp=contextlib.nullcontext) -> dict[str, Tensor]:
        cfg = self.cfg
        dyn_grad = self.actor_grad == "dynamics"
        with amp():
            imag, cont, is_terminal = self.imagine(wm, obs, batch)
            feat = imag.feat                                        # [H+1, N, F]
            disc = self.disc * cont                                 # the head carries gamma
            disc[0] = cfg.gamma * (1.0 - is_terminal)               # the replayed start's flag
            weight = torch.cumprod(torch.cat([torch.ones_like(disc[:1]), disc[:-1]]), 0).detach()
            value = self.slow_critic(feat).mean                     # v'(s_t), [H+1, N]
            ret = dreamerv2_returns(imag.reward, disc, value, cfg.lam)  # V_0..V_{H-1}
            pol = self.actor(feat[:-2].detach())
            ent = pol.entropy()
            if dyn_grad:
                actor_obj = ret[1:]
            else:
                adv = (ret[1:] - value[:-2]).detach()
                actor_obj = pol.log_prob(imag.action[:-2].detach()) * adv
            actor_loss = -(weight[:-2] * (actor_obj + cfg.actor_ent * ent)).mean() * cfg.actor_scale
        actor_gn = self.descend(self.actor_opt, actor_loss)
        with amp():
            dist = self.critic(feat[:-1].detach())
            critic_loss = -(weight[:-1] * dist.log_prob(ret.detach())).mean() * cfg.critic_scale
        critic_gn = self.descend(self.critic_opt, critic_loss)
        self.update_slow()
        return {
            "agent/actor_loss": actor_loss.detach(), "agent/critic_loss": critic_loss.detach(),
            "agent/entropy": ent.mean().detach(), "agent/return": ret.mean().detach(),
            "agent/value": dist.mean.mean().detach(), "agent/target_value": value.mean().detach(),
            "agent/actor_gradnorm": actor_gn, "agent/critic_gradnorm": critic_gn,
            "agent/imag_reward": imag.reward.mean().detach(),
        }
