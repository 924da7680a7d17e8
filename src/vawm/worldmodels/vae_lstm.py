"""World Models' VAE + LSTM (``vae-lstm``), the baseline of anon. 2026 §3.1, §4.1 (Ha & Schmidhuber).

    VAE encoder  z_t  ~ q(z_t | o_t) = N(mu_q, std_q)   2-layer ReLU MLP (CNN for images)
    VAE decoder  o^_t = g(z_t)                           2-layer ReLU MLP (deconvs for images)
    LSTM (M)     h_t  = LSTM(h_{t-1}, [z_{t-1}, a_{t-1}])  128 units; h = c = 0 at episode starts
    prediction   z~_t ~ p(z_t | h_t) = N(mu_p, std_p)   linear on h_t (World Models' MDN, K=1)
    reward       r^_t = w . [z_t, h_t] + b               linear (anon. 2026, §4.1)
    continue     c^_t = sigmoid(MLP([z_t, h_t]))         (deviation, see below)

Features of a state (what actor, critic and objectives read) are [z_t, h_t] as in World Models'
controller; the posterior state is s_t = (z_t ~ q, h_t) and the prior state s~_t = (z~_t ~ p, h_t):
the LSTM's prediction of the same step from the history before o_t. Imagination feeds z~ back.

Loss per (batch, time) step, weights w_t multiplying every term before free bits:

    L_t = recon_t + beta KL[q(z_t|o_t) || N(0, I)] + reward_t + dyn_t + cont_t   (anon. 2026, L_base)
    recon_t = ||g(z_t) - o_t||^2 (sum over dims)     reward_t = (r^_t - r_t)^2
    dyn_t   = KL[sg(q(z_t|o_t)) || p(z_t|h_t)] (``dyn_loss=kl``) or -ln p(sg(z_t)|h_t) (``nll``)
    beta    = linear from beta_start (1.0) to beta_end (0.1) over ``beta_anneal`` world-model
              updates, at the update ``observe(batch, step)`` is told (``Observed.step``), so a
              re-run of ``observe`` or ``loss`` for the same update uses the same beta.

A replayed chunk starts from h = c = 0 (like ``rssm``); where that reset is artificial (t = 0 and
not ``is_first``) the dyn term is masked to 0. ``Observed.kl`` = KL[q(z_t|o_t) || p(z_t|h_t)]
is what value-aware objectives read. Readings and deviations (the dyn term, the continue head,
the std parameterisation): docs/faithfulness.md.

Prediction error (anon. 2026, §4.3, Table 1, Fig. 2): for vector observations ``observe`` also returns
``extras["pred_err"]`` [B, T], the MSE between g(mean of p(z_t | h_t)) and o_t wherever h_t has a
real predecessor (``extras["pred_valid"]``), logged as ``wm/pred_mse``; :func:`next_obs_error`
scores held-out sequences the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vawm.nets.conv import ConvDecoder, ConvEncoder
from vawm.nets.dist import full_precision, gaussian_kl, symexp, symlog
from vawm.nets.layers import MLP
from vawm.settings import ConfigError, Min, section
from vawm.worldmodels.base import Backbone, Observed, register_backbone

Pos = Annotated[int, Min(1)]
NonNeg = Annotated[float, Min(0)]


@section("vae_lstm")
class VAELSTMConfig:
    """World Models VAE + LSTM (Ha & Schmidhuber 2018, as the baseline of anon. 2026 §3.1, §4.1)."""
    latent: Pos = 32            # z_t, diagonal Gaussian
    hidden: Pos = 256           # VAE MLP width (2 layers, ReLU); also the continue head's width
    layers: Annotated[int, Min(0)] = 2   # hidden layers of the VAE encoder / decoder MLPs
    lstm: Pos = 128             # h_t
    beta_start: NonNeg = 1.0    # KL weight annealed beta_start -> beta_end (anon. 2026, §4.2)
    beta_end: NonNeg = 0.1
    beta_anneal: Annotated[int, Min(0)] = 10_000   # world-model updates of the linear annealing
    free_nats: NonNeg = 0.0     # World Models' kl_tolerance; 0 = off (anon. 2026, has none)
    min_std: Annotated[float, Min(0, strict=True)] = 0.01   # std = softplus(raw) + min_std
    dyn_loss: Literal["kl", "nll"] = "kl"   # kl: KL[sg(q) || p] | nll: -ln p(sg(z)) (MDN, K=1)
    recon_scale: NonNeg = 1.0
    reward_scale: NonNeg = 1.0
    dyn_scale: NonNeg = 1.0     # the next-latent prediction loss (absent from anon. 2026 eq. L_base)
    cont_scale: NonNeg = 1.0
    cont_head: bool = True      # deviation: anon. 2026 has no continue head; false -> cont = 1
    imag_temp: NonNeg = 1.0     # World Models' temperature tau of the dream's latent samples
    symlog: bool = False        # symlog vector inputs / reconstruction targets (not in anon. 2026)
    cnn_depth: Pos = 32         # image VAE: 4 stride-2 convs of depth x (1, 2, 4, 8), ReLU


# ---------------------------------------------------------------------------- small pure math
def kl_beta(update: int, start: float = 1.0, end: float = 0.1, anneal: int = 10_000) -> float:
    """KL weight after ``update`` world-model updates: linear from ``start`` to ``end`` over
    ``anneal`` updates, then constant (anon. 2026, §4.2: 0.1, annealed from 1.0)."""
    if anneal <= 0:
        return end
    frac = min(max(update, 0) / anneal, 1.0)
    return start + (end - start) * frac


def std_normal_kl(mean: Tensor, std: Tensor) -> Tensor:
    """KL[N(mean, std^2) || N(0, I)] summed over the last axis: [..., Z] -> [...]."""
    return 0.5 * (mean.pow(2) + std.pow(2) - 1.0 - 2.0 * torch.log(std)).sum(-1)


def gaussian_nll(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """-ln N(x; mean, std^2) summed over the last axis: [..., Z] -> [...]."""
    return (0.5 * ((x - mean) / std).pow(2) + torch.log(std) + 0.5 * math.log(2 * math.pi)).sum(-1)


def vae_terms(target: Tensor, recon: Tensor, mean: Tensor, std: Tensor, event_dims: int = 1
              ) -> tuple[Tensor, Tensor]:
    """The VAE's two terms (anon. 2026, L_recon, L_KL): squared error summed over the ``event_dims``
    trailing observation axes, and KL[q(z|o) || N(0, I)] summed over the latent axis."""
    dims = tuple(range(-event_dims, 0))
    return (recon - target).pow(2).sum(dims), std_normal_kl(mean, std)


def split_gaussian(x: Tensor, min_std: float) -> tuple[Tensor, Tensor]:
    """[..., 2Z] -> mean [..., Z], std [..., Z] with std = softplus(raw) + min_std."""
    mean, raw = full_precision(x).chunk(2, -1)
    return mean, F.softplus(raw) + min_std


# ---------------------------------------------------------------------------- state
@dataclass
class VState:
    h: Tensor   # [N, L] LSTM output h_t
    c: Tensor   # [N, L] LSTM cell c_t
    z: Tensor   # [N, Z] latent z_t (posterior sample when filtering, prediction when dreaming)

    def feat(self) -> Tensor:
        return torch.cat([self.z, self.h], -1)   # World Models' controller input [z_t, h_t]


@register_backbone("vae-lstm")
class VAELSTM(Backbone):
    Config = VAELSTMConfig
    term_names = ("recon", "kl", "reward", "dyn", "cont")
    free_bits_terms = ("kl",)

    def __init__(self, cfg: VAELSTMConfig, obs_shape: tuple[int, ...], act_dim: int, image: bool):
        super().__init__()
        self.cfg, self.obs_shape, self.act_dim, self.image = cfg, tuple(obs_shape), act_dim, image
        Z, L, Hd = cfg.latent, cfg.lstm, cfg.hidden
        self.feat_dim = Z + L
        self.latent_slice = slice(0, Z)                                # feat = [z, h]
        if image:
            if len(self.obs_shape) != 3 or self.obs_shape[1] % 16 or self.obs_shape[2] % 16:
                raise ConfigError(f"vae-lstm images must be [C, H, W] with H, W divisible by 16, "
                                  f"got {self.obs_shape}")
            conv = ConvEncoder(obs_shape[0], cfg.cnn_depth, 4, "none", "relu", obs_shape[1:])
            self.encoder = nn.Sequential(conv, nn.Linear(conv.dout, 2 * Z))
            self.decoder = ConvDecoder(Z, obs_shape[0], cfg.cnn_depth, 4, "none", "relu",
                                       obs_shape[1:])
        else:
            self.encoder = MLP(obs_shape[0], 2 * Z, cfg.layers, Hd, "none", "relu")
            self.decoder = MLP(Z, obs_shape[0], cfg.layers, Hd, "none", "relu")
        self.lstm = nn.LSTMCell(Z + act_dim, L)
        self.prior_head = nn.Linear(L, 2 * Z)
        self.reward_head = nn.Linear(self.feat_dim, 1)
        self.cont_net = MLP(self.feat_dim, 1, cfg.layers, Hd, "none", "relu") if cfg.cont_head \
            else None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "updates", None)    # checkpoints of the hidden update counter
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @classmethod
    def from_config(cls, cfg, info: dict) -> VAELSTM:
        return cls(cfg.vae_lstm, tuple(info["obs_shape"]), info["action_dim"],
                   info["obs_kind"] == "image")

    def representation_parameters(self) -> list[nn.Parameter]:
        """Encoder + dynamics (VAE encoder, LSTM, latent prediction); no decoder or heads."""
        return [p for m in (self.encoder, self.lstm, self.prior_head) for p in m.parameters()]

    # ------------------------------------------------------------------ pieces
    def beta(self, step: int) -> float:
        """The KL weight at world-model update ``step``."""
        c = self.cfg
        return kl_beta(step, c.beta_start, c.beta_end, c.beta_anneal)

    def _target(self, obs: Tensor) -> Tensor:
        """Observation in the space the VAE reads and reconstructs."""
        if self.image:
            return obs.float() / 255.0 - 0.5
        return symlog(obs.float()) if self.cfg.symlog else obs.float()

    def posterior(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """q(z | o): obs [..., *obs_shape] -> mean, std [..., Z]."""
        return split_gaussian(self.encoder(self._target(obs)), self.cfg.min_std)

    def prior(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """p(z_t | h_t): h [..., L] -> mean, std [..., Z]."""
        return split_gaussian(self.prior_head(h), self.cfg.min_std)

    def decode_obs(self, z: Tensor) -> Tensor:
        """z [..., Z] -> predicted observation in raw observation units ([0, 255] for images)."""
        out = self.decoder(z)
        if self.image:
            return (out + 0.5) * 255.0
        return symexp(out) if self.cfg.symlog else out

    def decode(self, feat: Tensor) -> Tensor:
        return self.decode_obs(feat[..., :self.cfg.latent])

    def _lstm_inputs(self, z: Tensor, action: Tensor) -> Tensor:
        """Input projection W_ih [z, a] + b for all steps at once: [..., Z + A] -> [..., 4L]."""
        return F.linear(torch.cat([z, action], -1), self.lstm.weight_ih,
                        self.lstm.bias_ih + self.lstm.bias_hh)

    def _lstm_step(self, xw: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """nn.LSTMCell's update with the input projection precomputed (gate order i, f, g, o)."""
        i, f, g, o = (xw + F.linear(h, self.lstm.weight_hh)).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def reward_mean(self, feat: Tensor) -> Tensor:
        return full_precision(self.reward_head(feat)).squeeze(-1)

    def cont_logit(self, feat: Tensor) -> Tensor:
        if self.cont_net is None:
            return torch.full(feat.shape[:-1], 30.0, device=feat.device, dtype=feat.dtype)
        return self.cont_net(feat).squeeze(-1)

    def cont_prob(self, feat: Tensor) -> Tensor:
        return torch.sigmoid(self.cont_logit(feat))

    # ------------------------------------------------------------------ filtering
    def observe(self, batch: dict[str, Tensor], step: int = 0) -> Observed:
        # obs: [B, T, *obs_shape], action: [B, T, A] (taken at o_t), is_first: [B, T]
        obs, action, is_first = batch["obs"], batch["action"].float(), batch["is_first"].bool()
        B, T = is_first.shape
        q_mean, q_std = self.posterior(obs)                           # [B, T, Z]
        z = q_mean + q_std * torch.randn_like(q_std)                  # reparameterised sample
        first = is_first.clone()
        first[:, 0] = True                                            # each chunk starts fresh
        xw = self._lstm_inputs(z[:, :-1], action[:, :-1])             # [B, T-1, 4L] for h_1..h_T-1
        h = c = z.new_zeros(B, self.cfg.lstm)
        hs, cs = [h], [c]
        for t in range(1, T):
            h, c = self._lstm_step(xw[:, t - 1], h, c)                # LSTM(h_t-1, [z, a]_t-1)
            keep = (~first[:, t]).unsqueeze(-1).to(h.dtype)           # reset at episode starts
            h, c = h * keep, c * keep
            hs.append(h)
            cs.append(c)
        h, c = torch.stack(hs, 1), torch.stack(cs, 1)                 # [B, T, L]
        p_mean, p_std = self.prior(h)                                 # [B, T, Z]
        z_prior = p_mean + p_std * torch.randn_like(p_std)
        post, prior = torch.cat([z, h], -1), torch.cat([z_prior, h], -1)   # [B, T, Z + L]
        # steps whose h carries real history (or is a true episode start): the dyn term applies
        dyn_mask = (~(first & ~is_first)).to(h.dtype)                 # [B, T]
        terms = self._terms(batch, z, post, q_mean, q_std, p_mean, p_std, dyn_mask)
        extras = {"post_mean": q_mean, "post_std": q_std, "prior_mean": p_mean,
                  "prior_std": p_std, "dyn_mask": dyn_mask}
        if not self.image:
            with torch.no_grad():                                     # one-step prediction error
                pred = self.decode_obs(p_mean)                        # o^_t = g(mean of z~_t)
                extras["pred_err"] = (pred - obs.float()).pow(2).mean(-1)     # [B, T]
                extras["pred_valid"] = (~first).to(h.dtype)           # t has a predecessor
        start = VState(h.reshape(B * T, -1), c.reshape(B * T, -1), z.reshape(B * T, -1))
        kl = gaussian_kl(q_mean, q_std, p_mean, p_std)
        return Observed(post, prior, kl, terms, start, step=step, extras=extras)

    def _terms(self, batch, z, feat, q_mean, q_std, p_mean, p_std, dyn_mask) -> dict[str, Tensor]:
        event = 3 if self.image else 1
        recon, kl = vae_terms(self._target(batch["obs"]), self.decoder(z), q_mean, q_std, event)
        reward = (self.reward_mean(feat) - batch["reward"].float()).pow(2)
        if self.cfg.dyn_loss == "kl":
            dyn = gaussian_kl(q_mean.detach(), q_std.detach(), p_mean, p_std)
        else:
            dyn = gaussian_nll(z.detach(), p_mean, p_std)
        cont_target = 1.0 - batch["is_terminal"].float()
        if self.cont_net is None:
            cont = torch.zeros_like(reward)
        else:
            cont = F.binary_cross_entropy_with_logits(self.cont_logit(feat), cont_target,
                                                      reduction="none")
        return {"recon": recon, "kl": kl, "reward": reward, "dyn": dyn * dyn_mask, "cont": cont}

    def loss(self, obs: Observed, weights: Tensor | None = None
             ) -> tuple[Tensor, dict[str, Tensor]]:
        """L = recon + beta KL + reward + dyn + cont per step (weights first), mean over [B, T],
        with beta at the update the batch was observed for (``obs.step``)."""
        c, t = self.cfg, obs.terms
        w = 1.0 if weights is None else weights
        beta = self.beta(obs.step)
        kl = w * t["kl"]
        if c.free_nats > 0:
            kl = torch.clamp(kl, min=c.free_nats)                     # weights before free bits
        total = (w * (c.recon_scale * t["recon"] + c.reward_scale * t["reward"]
                      + c.dyn_scale * t["dyn"] + c.cont_scale * t["cont"]) + beta * kl)
        metrics = {f"wm/loss_{k}": v.detach().mean() for k, v in t.items()}
        metrics["wm/beta"] = torch.tensor(beta)
        ex = obs.extras
        if "post_std" in ex:
            metrics["wm/post_std"] = ex["post_std"].detach().mean()
            metrics["wm/prior_std"] = ex["prior_std"].detach().mean()
            metrics["wm/kl_post_prior"] = obs.kl.detach().mean()
        if "pred_err" in ex:
            valid = ex["pred_valid"]
            metrics["wm/pred_mse"] = (ex["pred_err"] * valid).sum() / valid.sum().clamp(min=1)
        return total.mean(), metrics

    # ------------------------------------------------------------------ imagination / acting
    def img_step(self, s: VState, action: Tensor) -> VState:
        """s_t, a_t -> s~_{t+1}: one LSTM step, then z~_{t+1} ~ p(z | h_{t+1}) at temperature
        tau (World Models' dream temperature)."""
        h, c = self.lstm(torch.cat([s.z, action], -1), (s.h, s.c))
        mean, std = self.prior(h)
        z = mean + self.cfg.imag_temp * std * torch.randn_like(std)
        return VState(h, c, z)

    def initial_carry(self, n: int) -> tuple[VState, Tensor]:
        L, Z = self.cfg.lstm, self.cfg.latent
        dev = self.prior_head.weight.device
        zeros = lambda d: torch.zeros(n, d, device=dev)
        return VState(zeros(L), zeros(L), zeros(Z)), zeros(self.act_dim)

    def act_step(self, carry, obs: Tensor, prev_action: Tensor, is_first: Tensor):
        """h_t = LSTM(h_{t-1}, [z_{t-1}, a_{t-1}]) (zero at episode starts), z_t ~ q(z | o_t)."""
        s, _ = carry
        h, c = self.lstm(torch.cat([s.z, prev_action.float()], -1), (s.h, s.c))
        keep = (~torch.as_tensor(is_first, device=h.device).bool()).unsqueeze(-1).to(h.dtype)
        h, c = h * keep, c * keep
        mean, std = self.posterior(obs)
        s = VState(h, c, mean + std * torch.randn_like(std))
        return (s, prev_action), s.feat()


@torch.no_grad()
def next_obs_error(model: VAELSTM, batch: dict[str, Tensor]) -> tuple[float, int]:
    """Held-out one-step prediction error: sum over predicted steps of the MSE (mean over obs
    dims) between the decoded LSTM prediction g(mean p(z_{t+1} | h_{t+1})) and o_{t+1}, and the
    number of such steps. ``batch`` is [B, T] sequences as in replay; vector observations only."""
    was = model.training
    model.eval()
    try:
        obs = model.observe(batch)
    finally:
        model.train(was)
    valid = obs.extras["pred_valid"]
    return float((obs.extras["pred_err"] * valid).sum()), int(valid.sum())
