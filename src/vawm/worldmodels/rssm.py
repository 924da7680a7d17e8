"""DreamerV3's recurrent state-space model (``rssm``), 2023 and 2025 variants.

    sequence model   h_t  = f(h_{t-1}, z_{t-1}, a_{t-1})            (GRU; block GRU in 2025)
    encoder          z_t  ~ q(z_t | h_t, o_t)                        (32 x 32 categorical, 1% unimix)
    dynamics         z~_t ~ p(z~_t | h_t)
    decoder / heads  o_t, r_t (255-bin symlog twohot), c_t (Bernoulli)  from s_t = (h_t, z_t)

Loss (VaR, anon. 2025, eq. 3), free bits per (batch, time) sample:

    beta_pred L_pred + beta_dyn max(1, KL[sg(q) || p]) + beta_rep max(1, KL[q || sg(p)])

VaR (anon. 2025) writes sg() on both sides of the rep term; we read it as DreamerV3 does: dyn stops
the posterior's gradient, rep stops the prior's (docs/faithfulness.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vawm.nets.conv import (
    ConvDecoder,
    ConvDecoder2025,
    ConvDecoderV2,
    ConvEncoder,
    ConvEncoder2025,
    ConvEncoderV2,
    conv_stages,
)
from vawm.nets.dist import (
    MSEHead,
    TwoHotSymlog,
    free_bits,
    free_bits_mean,
    full_precision,
    gaussian_entropy,
    gaussian_kl,
    kl_split,
    sample_categorical_st,
    symexp,
    symlog,
    twohot_head,
    unimix_logits,
)
from vawm.nets.layers import MLP, BlockGRU, LayerNormGRU, NormDense, make_act, make_norm
from vawm.nets.onehot import carry_classes, onehot_linear
from vawm.settings import ConfigError, Min, Range, section
from vawm.worldmodels.base import Backbone, Observed, register_backbone

Norm = Literal["layer", "rms", "none"]
Act = Literal["silu", "elu", "relu", "tanh", "gelu"]
Pos = Annotated[int, Min(1)]


@section("rssm")
class RSSMConfig:
    """DreamerV3 RSSM (Hafner et al. 2023/2025; the 2025 values are VaR (anon. 2025) Table 15)."""
    deter: Pos = 256            # GRU state h_t
    hidden: Pos = 256           # width of the img/obs layers around the GRU
    stoch: Pos = 32             # number of categorical latents
    classes: Pos = 32           # classes per latent
    unimix: Annotated[float, Range(0, 1, hi_open=True)] = 0.01   # uniform mix in the latents
    free_nats: Annotated[float, Min(0)] = 1.0   # free bits, per (batch, time) sample
    beta_pred: Annotated[float, Min(0)] = 1.0   # recon + reward + continue
    beta_dyn: Annotated[float, Min(0)] = 0.5    # 2023: 0.5, 2025: 1.0 (Table 15)
    beta_rep: Annotated[float, Min(0)] = 0.1
    gru: Literal["layernorm", "block"] = "layernorm"   # 2023 | 2025
    # the layernorm GRU's norm: auto = rssm.norm | layer whatever rssm.norm (DreamerV2: no norm in
    # its layers but a LayerNorm GRU)
    gru_norm: Literal["auto", "layer"] = "auto"
    blocks: Pos = 8             # block GRU groups (2025)
    dynlayers: Pos = 1
    # the sequence model's input: joint (2023: one dense layer of [z, a]) | split (2025: dense
    # layers of h, z and a / max(1, |a|) each, concatenated; needs gru=block)
    dyn_input: Literal["joint", "split"] = "joint"
    imglayers: Pos = 1          # hidden layers of the prior p(z | h) (2025: 2)
    initial: Literal["learned", "zeros"] = "learned"   # h_0: tanh(learned) (2023) | zeros (2025)
    twohot: Literal["symlog", "symexp"] = "symlog"     # reward bins (2025: symexp-spaced)
    # continuation target of non-terminal steps: 1 (2023) | 1 - 1/horizon = gamma (2025's contdisc:
    # the predicted continuation carries the discount; set agent.cont_disc with it)
    cont_target: Annotated[float, Range(0, 1)] = 1.0
    # image encoder/decoder: v2023 (4x4 stride-2 convs) | v2025 (5x5 convs + max-pool, channels
    # cnn_depth x (2, 3, 4, 4), block-linear spatial decoder input, sigmoid output)
    # v2: DreamerV2's valid-padding 4x4 convs, transposed (5, 5, 6, 6) decoder, 64x64 only
    cnn: Literal["v2023", "v2025", "v2"] = "v2023"
    units: Pos = 256            # MLP width of encoder/decoder/heads
    layers: Annotated[int, Min(0)] = 2          # MLP depth of vector encoder/decoder
    head_layers: Annotated[int, Min(0)] = 1     # MLP depth of reward/continue heads
    cnn_depth: Pos = 32
    norm: Norm = "layer"        # "layer" (2023) | "rms" (2025)
    act: Act = "silu"
    reward_bins: Annotated[int, Min(2)] = 255
    recon_scale: Annotated[float, Min(0)] = 1.0
    reward_scale: Annotated[float, Min(0)] = 1.0
    cont_scale: Annotated[float, Min(0)] = 1.0
    # the continuation loss of terminal steps times this (ours, not DreamerV3's: terminals are rare,
    # 1 in ~250 CartPole steps, and the head learns to predict "continue" everywhere; see
    # docs/default_job.md)
    cont_terminal_weight: Annotated[float, Min(0)] = 1.0
    # ---- DreamerV2 (Hafner et al. 2021, its public code; presets dreamerv2-atari, dreamerv2-dmc)
    # z_t: stoch x classes categoricals | a stoch-dim diagonal Gaussian, std = 2 sigmoid(x / 2) +
    # min_std (its ``sigmoid2``), rollouts by the reparameterisation trick
    latent: Literal["categorical", "gaussian"] = "categorical"
    min_std: Annotated[float, Min(0, strict=True)] = 0.1
    # free bits on the batch mean of each KL term (DreamerV2's free_avg) | per (batch, time) sample
    free_avg: bool = False
    # reward head: 255-bin twohot (DreamerV3) | unit-variance Normal, loss 0.5 (r - mean)^2 (DreamerV2)
    reward_dist: Literal["twohot", "mse"] = "twohot"
    # the reward head's target: r | tanh(r) (DreamerV2's clip_rewards on Atari)
    reward_transform: Literal["identity", "tanh"] = "identity"
    symlog_obs: bool = True     # vector observations in symlog space (DreamerV3) | raw (DreamerV2)
    # false: no continuation head; the imagination continues with 1 (DreamerV2 on DMC, pred_discount)
    cont_head: bool = True


@dataclass
class RState:
    deter: Tensor   # [N, D]
    stoch: Tensor   # [N, S, C] one-hot (straight-through); [N, S, 1] for the Gaussian latent

    def feat(self) -> Tensor:
        return carry_classes(self.stoch, torch.cat([self.deter, self.stoch.flatten(-2)], -1))


@register_backbone("rssm")
class RSSM(Backbone):
    Config = RSSMConfig
    term_names = ("recon", "reward", "cont", "dyn", "rep")
    free_bits_terms = ("dyn", "rep")
    graph_safe = True

    def __init__(self, cfg: RSSMConfig, obs_shape: tuple[int, ...], act_dim: int,
                 image: bool):
        super().__init__()
        self.cfg, self.obs_shape, self.act_dim, self.image = cfg, tuple(obs_shape), act_dim, image
        S, D, H = cfg.stoch, cfg.deter, cfg.hidden
        self.gaussian = cfg.latent == "gaussian"
        C = 1 if self.gaussian else cfg.classes                    # a Gaussian z is [S, 1]
        self.zshape = (S, C)
        self.feat_dim = D + S * C
        self.latent_slice = slice(D, D + S * C)                    # feat = [h, z]
        stats = 2 * S if self.gaussian else S * C                  # mean and std | logits
        self.onehot_layout = None if self.gaussian else (D, S, C)
        self.onehot_core = False        # run.onehot_gather: img_in gathers on a no-grad one-hot z
        n, a = cfg.norm, cfg.act
        if image and cfg.cnn == "v2025":
            st = conv_stages(obs_shape[1:], 4)
            self.encoder = ConvEncoder2025(obs_shape[0], cfg.cnn_depth, st, n, a, obs_shape[1:])
            self.decoder = ConvDecoder2025(D, S * C, obs_shape[0], cfg.cnn_depth, st, n, a,
                                           obs_shape[1:], cfg.units)
        elif image and cfg.cnn == "v2":
            self.encoder = ConvEncoderV2(obs_shape[0], cfg.cnn_depth, a, size=obs_shape[1:])
            self.decoder = ConvDecoderV2(self.feat_dim, obs_shape[0], cfg.cnn_depth, a)
        elif image:
            st = conv_stages(obs_shape[1:], 4)    # 64x64 -> 4x4 as DreamerV3; 10x10 -> 5x5
            self.encoder = ConvEncoder(obs_shape[0], cfg.cnn_depth, st, n, a, obs_shape[1:])
            self.decoder = ConvDecoder(self.feat_dim, obs_shape[0], cfg.cnn_depth, st, n, a,
                                       obs_shape[1:])
        else:
            self.encoder = MLP(obs_shape[0], None, cfg.layers, cfg.units, n, a)
            self.decoder = MLP(self.feat_dim, obs_shape[0], cfg.layers, cfg.units, n, a)
        embed = self.encoder.dout
        if cfg.dyn_input == "split":          # DreamerV3 2025: dynin0 (h), dynin1 (z), dynin2 (a)
            self.dyn_in = nn.ModuleList([NormDense(d, H, n, a) for d in (D, S * C, act_dim)])
            self.gru = BlockGRU(3 * H, D, cfg.blocks, None, cfg.dynlayers, n, a, embed=False)
        else:
            self.img_in = NormDense(S * C + act_dim, H, n, a)
            if cfg.gru == "block":
                self.gru = BlockGRU(H, D, cfg.blocks, H, cfg.dynlayers, n, a)
            else:
                self.gru = LayerNormGRU(H, D, n if cfg.gru_norm == "auto" else cfg.gru_norm)
        self.img_out = NormDense(D, H, n, a) if cfg.imglayers == 1 else nn.Sequential(
            *[NormDense(D if i == 0 else H, H, n, a) for i in range(cfg.imglayers)])
        self.img_logits = nn.Linear(H, stats)
        # posterior layer on [h, e] split in two so the embedding half runs once for all T
        self.obs_h = nn.Linear(D, H, bias=False)
        self.obs_e = nn.Linear(embed, H, bias=n == "none")
        self.obs_norm, self.obs_act = make_norm(n, H), make_act(a)
        self.obs_logits = nn.Linear(H, stats)
        if cfg.initial == "learned":
            self.h0 = nn.Parameter(torch.zeros(D))  # learned initial state (DreamerV3 2023)
        self.twohot, bins = twohot_head(cfg.twohot, cfg.reward_bins)
        self.register_buffer("bins", bins, persistent=False)
        mse = cfg.reward_dist == "mse"
        self.reward_head = MLP(self.feat_dim, 1 if mse else cfg.reward_bins, cfg.head_layers,
                               cfg.units, n, a, zero_out=not mse)
        self.cont_head = MLP(self.feat_dim, 1, cfg.head_layers, cfg.units, n, a) \
            if cfg.cont_head else None

    @classmethod
    def check(cls, cfg) -> None:
        r = cfg.rssm
        if r.dyn_input == "split" and r.gru != "block":
            raise ConfigError("rssm.dyn_input=split is DreamerV3 2025's core: it needs "
                              "rssm.gru=block")
        if r.latent == "gaussian" and r.cnn == "v2025":
            raise ConfigError("rssm.cnn=v2025's decoder reads a categorical z; use rssm.cnn=v2 or "
                              "v2023 with rssm.latent=gaussian")
        if r.cnn == "v2" and tuple(cfg.env_cfg.size) != (64, 64):
            raise ConfigError(f"rssm.cnn=v2 (DreamerV2's CNN) needs 64x64 images, not "
                              f"env_cfg.size={list(cfg.env_cfg.size)}; use rssm.cnn=v2023")

    @classmethod
    def from_config(cls, cfg, info: dict) -> RSSM:
        return cls(cfg.rssm, tuple(info["obs_shape"]), info["action_dim"], info["obs_kind"] == "image")

    def representation_parameters(self) -> list[nn.Parameter]:
        """Encoder + dynamics (sequence model, posterior and prior); no decoder or heads."""
        mods = [self.encoder, self.gru, self.img_out, self.img_logits, self.obs_h, self.obs_e,
                self.obs_norm, self.obs_logits,
                self.dyn_in if self.cfg.dyn_input == "split" else self.img_in]
        return [p for m in mods for p in m.parameters()] + \
            ([self.h0] if self.cfg.initial == "learned" else [])

    # ------------------------------------------------------------------ pieces
    def _logits(self, x: Tensor) -> Tensor:
        """The latent's parameters from a layer's output: normalised log-probs [..., S, C] with
        unimix (categorical) or mean and std stacked [..., S, 2] (Gaussian)."""
        if self.gaussian:
            mean, raw = full_precision(x).chunk(2, -1)
            return torch.stack([mean, 2.0 * torch.sigmoid(raw / 2.0) + self.cfg.min_std], -1)
        S, C = self.cfg.stoch, self.cfg.classes
        return unimix_logits(x.reshape(*x.shape[:-1], S, C), self.cfg.unimix)

    def _sample(self, stats: Tensor) -> Tensor:
        """z ~ the latent: one-hot [..., S, C] (straight-through) | [..., S, 1] (reparameterised)."""
        if self.gaussian:
            mean, std = stats.unbind(-1)
            return (mean + std * torch.randn_like(mean)).unsqueeze(-1)
        return sample_categorical_st(stats)

    def _kl(self, post: Tensor, prior: Tensor) -> tuple[Tensor, Tensor]:
        """(dyn, rep): KL[sg(q) || p] and KL[q || sg(p)] per sample."""
        if self.gaussian:
            (mq, sq), (mp, sp) = post.unbind(-1), prior.unbind(-1)
            return (gaussian_kl(mq.detach(), sq.detach(), mp, sp),
                    gaussian_kl(mq, sq, mp.detach(), sp.detach()))
        return kl_split(post, prior)

    def _entropy(self, stats: Tensor) -> Tensor:
        if self.gaussian:
            return gaussian_entropy(stats[..., 1])
        return -(stats.exp() * stats).sum((-2, -1))

    def prior_logits(self, deter: Tensor) -> Tensor:
        return self._logits(self.img_logits(self.img_out(deter)))

    def initial(self, n: int) -> RState:
        c = self.cfg
        if c.initial == "zeros":                 # DreamerV3 2025, DreamerV2
            w = self.img_logits.weight
            return RState(w.new_zeros(n, c.deter), w.new_zeros(n, *self.zshape))
        deter = torch.tanh(self.h0).expand(n, -1)
        logits = self.prior_logits(deter)
        if self.gaussian:                        # the prior's mean
            return RState(deter, logits[..., :1])
        stoch = F.one_hot(logits.argmax(-1), c.classes).to(deter.dtype)
        return RState(deter, stoch)

    def core(self, deter: Tensor, stoch: Tensor, action: Tensor) -> Tensor:
        """h_t = f(h_{t-1}, z_{t-1}, a_{t-1}); stoch: [N, S, C]. Actions outside the box are
        scaled into it, a * sg(1 / max(1, |a|)) (DreamerV3 2023 ``action_clip``, 2025 alike)."""
        action = action / action.abs().clamp(min=1).detach()
        if self.cfg.dyn_input == "split":        # 2025: three embeddings
            x = torch.cat([m(v) for m, v in zip(self.dyn_in, (deter, stoch.flatten(-2), action),
                                                 strict=True)], -1)
        elif self.onehot_core and not stoch.requires_grad:      # [z, a]: z one-hot, no grad
            x, m = carry_classes(stoch, torch.cat([stoch.flatten(-2), action], -1)), self.img_in
            x = m.act(m.norm(onehot_linear(x, m.linear, (0, *self.zshape))))
        else:
            x = self.img_in(torch.cat([stoch.flatten(-2), action], -1))
        return self.gru(x, deter)

    def img_step(self, s: RState, action: Tensor) -> RState:
        """s_t, a_t -> prior state s~_{t+1} (the dynamics alone)."""
        deter = self.core(s.deter, s.stoch, action)
        return RState(deter, self._sample(self.prior_logits(deter)))

    def _vec(self, obs: Tensor) -> Tensor:
        """Vector observations in the model's space: symlog (DreamerV3) or raw (DreamerV2)."""
        return symlog(obs.float()) if self.cfg.symlog_obs else obs.float()

    def encode(self, obs: Tensor) -> Tensor:
        if self.image:
            return self.encoder(obs.float() / 255.0 - 0.5)
        return self.encoder(self._vec(obs))

    def decode(self, feat: Tensor) -> Tensor:
        out = self.decoder(feat)
        if self.image:
            return (out + 0.5) * 255.0
        return symexp(out) if self.cfg.symlog_obs else out

    def reward_dist(self, feat: Tensor) -> TwoHotSymlog | MSEHead:
        if self.cfg.reward_dist == "mse":
            return MSEHead(self.reward_head(feat))
        return self.twohot(self.reward_head(feat), self.bins)

    def reward_mean(self, feat: Tensor) -> Tensor:
        return self.reward_dist(feat).mean

    def cont_prob(self, feat: Tensor) -> Tensor:
        if self.cont_head is None:               # DreamerV2 on DMC: always continue
            return feat.new_ones(feat.shape[:-1]).float()
        return torch.sigmoid(self.cont_head(feat).squeeze(-1))

    # ------------------------------------------------------------------ filtering
    def _obs_step(self, s: RState, prev_action: Tensor, e_proj: Tensor, is_first: Tensor,
                  init: RState) -> tuple[RState, Tensor]:
        """Posterior step: reset where ``is_first``, then h_t = f(h, z, a) and z_t ~ q(z | h_t, e_t)."""
        m = is_first.to(s.deter.dtype).unsqueeze(-1)                  # [N, 1]
        deter = torch.lerp(s.deter, init.deter, m)
        stoch = torch.lerp(s.stoch, init.stoch, m.unsqueeze(-1))
        prev_action = prev_action * (1 - m)
        deter = self.core(deter, stoch, prev_action)
        post = self._logits(self.obs_logits(self.obs_act(self.obs_norm(self.obs_h(deter) + e_proj))))
        return RState(deter, self._sample(post)), post

    def observe(self, batch: dict[str, Tensor], step: int = 0) -> Observed:
        # obs: [B, T, *obs_shape], action: [B, T, A] (taken at o_t), is_first: [B, T]
        obs, action, is_first = batch["obs"], batch["action"], batch["is_first"]
        B, T = is_first.shape
        e_proj = self.obs_e(self.encode(obs))                        # [B, T, H]
        prev_action = torch.cat([torch.zeros_like(action[:, :1]), action[:, :-1]], 1)
        first = is_first.clone()
        first[:, 0] = True                                           # each replayed chunk starts fresh
        init = self.initial(B)
        s = init
        deters, stochs, posts = [], [], []
        for t in range(T):
            s, post = self._obs_step(s, prev_action[:, t], e_proj[:, t], first[:, t], init)
            deters.append(s.deter)
            stochs.append(s.stoch)
            posts.append(post)
        deter = torch.stack(deters, 1)                               # [B, T, D]
        stoch = torch.stack(stochs, 1)                               # [B, T, S, C]
        post_logits = torch.stack(posts, 1)
        prior_logits = self.prior_logits(deter)
        prior_stoch = self._sample(prior_logits)
        post_feat = torch.cat([deter, stoch.flatten(-2)], -1)
        prior_feat = torch.cat([deter, prior_stoch.flatten(-2)], -1)
        terms = self._terms(batch, post_feat, post_logits, prior_logits)
        start = RState(deter.reshape(B * T, -1), stoch.reshape(B * T, *stoch.shape[2:]))
        # the objectives' categorical logits (var); a Gaussian latent keeps its stats in extras
        cat = (None, None) if self.gaussian else (post_logits, prior_logits)
        return Observed(post_feat, prior_feat, terms["dyn"], terms, start, *cat, step,
                        extras={"post": post_logits, "prior": prior_logits})

    def _terms(self, batch, feat, post_logits, prior_logits) -> dict[str, Tensor]:
        obs = batch["obs"]
        if self.image:
            target = obs.float() / 255.0 - 0.5
            recon = (self.decoder(feat) - target).pow(2).sum((-3, -2, -1))
        else:
            recon = (self.decoder(feat) - self._vec(obs)).pow(2).sum(-1)
        r = batch["reward"]
        reward = -self.reward_dist(feat).log_prob(torch.tanh(r) if self.cfg.reward_transform ==
                                                  "tanh" else r)
        cont_target = self.cfg.cont_target * (1.0 - batch["is_terminal"].float())
        if self.cont_head is None:
            cont = torch.zeros_like(cont_target)
        else:
            cont = F.binary_cross_entropy_with_logits(self.cont_head(feat).squeeze(-1),
                                                      cont_target, reduction="none")
            if self.cfg.cont_terminal_weight != 1.0:
                cont = cont * (1.0 + (self.cfg.cont_terminal_weight - 1.0)
                               * batch["is_terminal"].to(cont.dtype))
        dyn, rep = self._kl(post_logits, prior_logits)
        return {"recon": recon, "reward": reward, "cont": cont, "dyn": dyn, "rep": rep}

    def loss(self, obs: Observed, weights: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        c, t = self.cfg, obs.terms
        w = 1.0 if weights is None else weights
        pred = c.recon_scale * t["recon"] + c.reward_scale * t["reward"] + c.cont_scale * t["cont"]
        clip = free_bits_mean if c.free_avg else free_bits        # weights before free bits
        dyn = clip(w * t["dyn"], c.free_nats)
        rep = clip(w * t["rep"], c.free_nats)
        total = c.beta_pred * w * pred + c.beta_dyn * dyn + c.beta_rep * rep
        metrics = {f"wm/loss_{k}": v.detach().mean() for k, v in t.items()}
        post = obs.extras.get("post", obs.post_logits)             # an Observed built elsewhere
        prior = obs.extras.get("prior", obs.prior_logits)          # may carry the logits only
        metrics["wm/post_ent"] = self._entropy(post).mean().detach()
        metrics["wm/prior_ent"] = self._entropy(prior).mean().detach()
        return total.mean(), metrics

    # ------------------------------------------------------------------ imagination / acting
    def initial_carry(self, n: int):
        return (self.initial(n), torch.zeros(n, self.act_dim))

    def act_step(self, carry, obs: Tensor, prev_action: Tensor, is_first: Tensor):
        s, _ = carry
        e_proj = self.obs_e(self.encode(obs))
        s, _ = self._obs_step(s, prev_action, e_proj, is_first, self.initial(obs.shape[0]))
        return (s, prev_action), s.feat()
