"""STORM's transformer state-space model (``tssm``; Zhang et al. 2023): VaR (anon. 2025) App. L.1, Tab. 7–14.

    encoder     z_t ~ q(z_t | o_t)                    CNN (Conv+BN+ReLU, 32-64-128-256, Table 7)
                                                      or MLP; 32 x 32 categorical, 1% unimix,
                                                      straight-through samples
    mixer       e_t = LN(W2 ReLU(LN(W1 [z_t, a_t])))  (Table 9)
    sequence    x_{1:T} = Transformer(LN(e_{1:T} + w_{1:T}))  K causal post-LN blocks (Tab. 10–12)
    dynamics    z~_{t+1} ~ p(z | x_t)                 (Table 13)
    reward/cont r_{t+1}, c_{t+1} from x_t             255-bin symlog twohot / Bernoulli (Table 13)
    decoder     o_t from z_t                          mirrored CNN (Table 8) or MLP

Loss (STORM's code): recon + reward + cont + 0.5 max(1, KL[sg(q) || p]) + 0.1 max(1, KL[q || sg(p)])

Our reading of states, in the RSSM's index convention. ``h_t`` below is the transformer output at
token t-1, i.e. it has seen z_{<t}, a_{<t} (STORM's ``dist_feat`` of the previous step):

    post  s_t  = [z_t,  h_t]   z_t  ~ q(z | o_t)     (encoder)
    prior s~_t = [z~_t, h_t]   z~_t ~ p(z | h_t)     (dynamics head's prediction from token t-1)

Both share h_t, exactly as the RSSM's post/prior share its GRU state, so a critic evaluated at the
two (``var``) compares only what the observation adds. These are also the states STORM's actor sees
in imagination ([z~_{t+1}, x_t]) and ours while acting. Where a step has no earlier token in its
episode, h_t is a learned vector ``h0``; at a replayed chunk's first step that is not an episode
start the history is unknown, so its reward/continue/KL terms are left out of the loss (STORM's code
trains the KL on steps 1..T-1 only for the same reason).

Imagination (Table 14: context C = 8, horizon 16): ``Observed.start`` holds, for every replayed
(b, t), the window of the last C+1 real steps ending at t. The first C (z, a) tokens go through the
key/value cache, then the rollout starts at s_t = [z_t, h_t] (``imag_start=posterior``, the default:
the start is a real state, matching ``Observed.post`` and the agent's ``cont[0]`` flag) or, as
STORM's code does, feeds the last C tokens including the real a_t and starts at the predicted
[z~_{t+1}, x_t] (``imag_start=prior``). Every imagined step appends one token to the cache. The
starts are the B*T windows of the world-model batch (the agent keeps ``agent.imag_starts`` of them);
STORM samples a separate batch of 1024 length-8 windows from replay (with its 16 x 64 batch both
give 1024 starts). Positions: replayed tokens sit at their chunk index 0..T-1 (as STORM's); a window
is left-padded, so its context takes positions 0..C-1 and the rollout C..C+H-1 (as STORM's), and
the acting window (``act_context`` tokens) likewise ends at position act_context-1.

Imagination and acting run in eval mode (dropout off, BatchNorm running statistics), as STORM's.
Deviations from STORM's code and their switches (episode mask, acting latent, free bits,
imagination start): docs/faithfulness.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vawm.nets.conv import BNConvDecoder, BNConvEncoder, conv_stages
from vawm.nets.dist import (
    TwoHotSymlog,
    free_bits,
    kl_split,
    sample_categorical_st,
    symexp,
    symlog,
    symlog_bins,
    unimix_logits,
)
from vawm.nets.layers import MLP, ActionMixer
from vawm.nets.transformer import CausalTransformer, KVCache, causal_mask, segment_mask
from vawm.settings import ConfigError, Min, Range, section
from vawm.worldmodels.base import (
    Backbone,
    Imagined,
    Observed,
    ReplayActions,
    register_backbone,
)

Pos = Annotated[int, Min(1)]
NonNeg = Annotated[float, Min(0)]


@section("tssm")
class TSSMConfig:
    """STORM transformer state-space model (Zhang et al. 2023; VaR (anon. 2025) App. L.1, Tables 7-14)."""
    stoch: Pos = 32             # categorical latents (32 x 32, Table 7)
    classes: Pos = 32
    unimix: Annotated[float, Range(0, 1, hi_open=True)] = 0.01   # uniform mix in the latents
    dim: Pos = 512              # D (Table 14)
    layers: Pos = 2             # K transformer blocks
    heads: Pos = 8
    ffn_mult: Pos = 2           # FFN width 2D (Table 11)
    dropout: Annotated[float, Range(0, 1, hi_open=True)] = 0.1
    max_len: Pos = 64           # positional-encoding length (STORM: 64 = batch length)
    free_nats: NonNeg = 1.0
    free_bits: Literal["batch", "sample"] = "batch"  # batch: max(1, batch-mean KL) (STORM's code)
    beta_pred: NonNeg = 1.0     # recon + reward + continue
    beta_dyn: NonNeg = 0.5
    beta_rep: NonNeg = 0.1
    cnn_depth: Pos = 32         # first conv block's channels (32-64-128-256, Table 7)
    cnn_stages: Pos = 4         # conv blocks (fewer when the image side is not divisible by 2^4)
    units: Pos = 512            # MLP width: vector encoder/decoder and reward/continue heads (D)
    layers_mlp: Annotated[int, Min(0)] = 2   # hidden layers of the vector encoder/decoder
    head_layers: Annotated[int, Min(0)] = 2  # hidden layers of reward/continue heads (Table 13)
    context: Annotated[int, Min(0)] = 8      # imagination context C fed through the KV cache
    act_context: Pos = 16       # environment context length while acting (Table 14)
    imag_start: Literal["posterior", "prior"] = "posterior"  # prior: STORM's predicted z~_{t+1}
    act_latent: Literal["posterior", "prior"] = "posterior"  # prior: act on a prior sample (STORM)
    episode_mask: bool = True   # attention stops at episode starts (STORM's code: False)
    kv_cache: bool = True       # imagine through the key/value cache (False: re-run the sequence)
    reward_bins: Annotated[int, Min(2)] = 255


@dataclass
class TSSMStart:
    """Imagination starts, one per replayed (b, t): the last W = C+1 real steps ending at t."""
    z: Tensor       # [N, W, S*C] posterior samples (one-hot)
    action: Tensor  # [N, W, A]
    valid: Tensor   # [N, W] bool: the step exists and lies in t's episode (a suffix of the window)


@dataclass
class TSSMCarry:
    """Acting state: the last ``act_context`` complete (z, a) tokens and the pending latent."""
    z: Tensor       # [N, L, S*C]
    action: Tensor  # [N, L, A]
    valid: Tensor   # [N, L] bool
    last_z: Tensor  # [N, S*C] latent of the previous observation (its action arrives next step)
    has_last: Tensor  # [N] bool


# ---------------------------------------------------------------------------- the backbone
@register_backbone("tssm")
class TSSM(Backbone):
    Config = TSSMConfig
    term_names = ("recon", "reward", "cont", "dyn", "rep")
    free_bits_terms = ("dyn", "rep")
    graph_safe = True

    def __init__(self, cfg: TSSMConfig, obs_shape: tuple[int, ...], act_dim: int, image: bool):
        super().__init__()
        self.cfg, self.obs_shape, self.act_dim, self.image = cfg, tuple(obs_shape), act_dim, image
        S, C, D = cfg.stoch, cfg.classes, cfg.dim
        self.zdim = S * C
        self.feat_dim = self.zdim + D                      # s = [z, h] (STORM's agent input)
        self.latent_slice = slice(0, self.zdim)
        self.onehot_layout = (0, S, C)                     # z: straight-through one-hot samples
        if image:
            size = tuple(obs_shape[1:])
            stages = conv_stages(size, cfg.cnn_stages)
            depth = cfg.cnn_depth
            self.encoder: nn.Module = BNConvEncoder(obs_shape[0], depth, stages, size)
            self.decoder: nn.Module = BNConvDecoder(self.zdim, obs_shape[0], depth, stages, size)
        else:
            self.encoder = MLP(obs_shape[0], None, cfg.layers_mlp, cfg.units, "layer", "relu")
            self.decoder = MLP(self.zdim, obs_shape[0], cfg.layers_mlp, cfg.units, "layer", "relu")
        self.post_head = nn.Linear(self.encoder.dout, self.zdim)        # Table 7: Linear -> 32 x 32
        self.mixer = ActionMixer(self.zdim + act_dim, D)
        self.transformer = CausalTransformer(D, cfg.layers, cfg.heads, cfg.dropout, cfg.max_len,
                                             cfg.ffn_mult)
        self.prior_head = nn.Linear(D, self.zdim)                       # dynamics head (Table 13)
        self.h0 = nn.Parameter(torch.zeros(D))                          # h without history
        self.register_buffer("bins", symlog_bins(cfg.reward_bins), persistent=False)
        self.reward_head = MLP(D, cfg.reward_bins, cfg.head_layers, cfg.units, "layer", "relu",
                               zero_out=True)
        self.cont_head = MLP(D, 1, cfg.head_layers, cfg.units, "layer", "relu")

    @classmethod
    def check(cls, cfg) -> None:
        c = cfg.tssm
        need = {"run.batch_length": cfg.run.batch_length,
                "tssm.context + agent.horizon": c.context + cfg.agent.horizon,
                "tssm.act_context": c.act_context}
        for name, n in need.items():
            if n > c.max_len:
                raise ConfigError(f"{name} = {n} exceeds tssm.max_len = {c.max_len} (the "
                                  "learnable positional encoding's length); raise tssm.max_len")

    @classmethod
    def from_config(cls, cfg, info: dict) -> TSSM:
        return cls(cfg.tssm, tuple(info["obs_shape"]), info["action_dim"],
                   info["obs_kind"] == "image")

    def representation_parameters(self) -> list[nn.Parameter]:
        """Encoder + sequence model + dynamics head; no decoder, reward or continue head."""
        mods = [self.encoder, self.post_head, self.mixer, self.transformer, self.prior_head]
        return [p for m in mods for p in m.parameters()] + [self.h0]

    # ------------------------------------------------------------------ pieces
    def _logits(self, x: Tensor) -> Tensor:
        c = self.cfg
        return unimix_logits(x.reshape(*x.shape[:-1], c.stoch, c.classes), c.unimix)

    def _sample(self, logits: Tensor) -> Tensor:
        return sample_categorical_st(logits).flatten(-2)                # [..., S*C]

    def post_logits(self, obs: Tensor) -> Tensor:
        """q(z | o): obs [..., *obs_shape] -> normalised log-probs [..., S, C]."""
        x = obs.float() / 255.0 if self.image else symlog(obs.float())
        return self._logits(self.post_head(self.encoder(x)))

    def prior_logits(self, h: Tensor) -> Tensor:
        return self._logits(self.prior_head(h))

    def _h(self, feat: Tensor) -> Tensor:
        return feat[..., self.zdim:]

    def decode(self, feat: Tensor) -> Tensor:
        out = self.decoder(feat[..., :self.zdim])          # the decoder reads z only (Table 8)
        return out * 255.0 if self.image else symexp(out)

    def reward_dist(self, h: Tensor) -> TwoHotSymlog:
        return TwoHotSymlog(self.reward_head(h), self.bins)

    def reward_mean(self, feat: Tensor) -> Tensor:
        return self.reward_dist(self._h(feat)).mean

    def cont_prob(self, feat: Tensor) -> Tensor:
        return torch.sigmoid(self.cont_head(self._h(feat)).squeeze(-1))

    @contextlib.contextmanager
    def _eval_mode(self) -> Iterator[None]:
        """Dropout off, BatchNorm on running statistics (STORM imagines and acts in eval mode)."""
        was = self.training
        self.train(False)
        try:
            yield
        finally:
            self.train(was)

    def _history_h(self, out: Tensor, has_prev: Tensor) -> Tensor:
        """h for the next step: the last output where there is an earlier token, else h0."""
        return torch.where(has_prev.unsqueeze(-1), out, self.h0.to(out.dtype).expand_as(out))

    # ------------------------------------------------------------------ training
    def observe(self, batch: dict[str, Tensor], step: int = 0) -> Observed:
        # obs: [B, T, *obs_shape], action: [B, T, A] (taken at o_t), is_first: [B, T]
        obs, action, is_first = batch["obs"], batch["action"].float(), batch["is_first"].bool()
        B, T = is_first.shape
        post_logits = self.post_logits(obs)                              # [B, T, S, C]
        z = self._sample(post_logits)                                    # [B, T, S*C]
        mask = segment_mask(is_first) if self.cfg.episode_mask else \
            torch.ones(T, T, dtype=torch.bool, device=z.device).tril()[None]
        out = self.transformer(self.mixer(z, action), mask)              # [B, T, D]; sees z, a <= t
        has_prev = torch.ones_like(is_first)
        has_prev[:, 0] = False
        if self.cfg.episode_mask:
            has_prev &= ~is_first
        h = self._history_h(torch.cat([out[:, :1], out[:, :-1]], 1), has_prev)  # h_t = x_{t-1}
        prior_logits = self.prior_logits(h)
        prior_z = self._sample(prior_logits)
        post = torch.cat([z, h], -1)
        prior = torch.cat([prior_z, h], -1)
        terms = self._terms(batch, z, h, post_logits, prior_logits)
        history = has_prev | is_first                                    # h_t known (docstring)
        start = self._windows(z.detach(), action, is_first)
        return Observed(post, prior, terms["dyn"], terms, start, post_logits, prior_logits, step,
                        {"history": history.float()})

    def _terms(self, batch, z, h, post_logits, prior_logits) -> dict[str, Tensor]:
        obs = batch["obs"]
        if self.image:
            recon = (self.decoder(z) - obs.float() / 255.0).pow(2).sum((-3, -2, -1))
        else:
            recon = (self.decoder(z) - symlog(obs.float())).pow(2).sum(-1)
        reward = -self.reward_dist(h).log_prob(batch["reward"].float())
        cont_target = 1.0 - batch["is_terminal"].float()
        cont = F.binary_cross_entropy_with_logits(self.cont_head(h).squeeze(-1), cont_target,
                                                  reduction="none")
        dyn, rep = kl_split(post_logits, prior_logits)
        return {"recon": recon, "reward": reward, "cont": cont, "dyn": dyn, "rep": rep}

    def _windows(self, z: Tensor, action: Tensor, is_first: Tensor) -> TSSMStart:
        """The last W = context + 1 steps ending at every (b, t), flattened to N = B*T windows."""
        B, T = is_first.shape
        W = self.cfg.context + 1
        idx = torch.arange(T, device=z.device)[:, None] - W + 1 + torch.arange(W, device=z.device)
        valid = (idx >= 0).expand(B, T, W)                               # [B, T, W]
        idx = idx.clamp(min=0)
        if self.cfg.episode_mask:
            seg = torch.cumsum(is_first.long(), 1)                       # [B, T]
            valid = valid & (seg[:, idx] == seg[:, :, None])
        zw = z[:, idx].reshape(B * T, W, -1)                             # [B*T, W, S*C]
        aw = action[:, idx].reshape(B * T, W, -1)
        return TSSMStart(zw, aw, valid.reshape(B * T, W))

    def loss(self, obs: Observed, weights: Tensor | None = None
             ) -> tuple[Tensor, dict[str, Tensor]]:
        c, t = self.cfg, obs.terms
        w = 1.0 if weights is None else weights
        m = obs.extras.get("history")
        m = torch.ones_like(t["dyn"]) if m is None else m
        denom = m.sum().clamp(min=1.0)

        def mmean(x: Tensor) -> Tensor:                                  # mean where h_t is known
            return (x * m).sum() / denom

        pred = (w * t["recon"]).mean() + mmean(w * t["reward"]) + mmean(w * t["cont"])
        if c.free_bits == "batch":                                       # STORM: max(1, mean KL)
            dyn = free_bits(mmean(w * t["dyn"]), c.free_nats)            # weights before free bits
            rep = free_bits(mmean(w * t["rep"]), c.free_nats)
        else:
            dyn = mmean(free_bits(w * t["dyn"], c.free_nats))
            rep = mmean(free_bits(w * t["rep"], c.free_nats))
        total = c.beta_pred * pred + c.beta_dyn * dyn + c.beta_rep * rep
        metrics = {f"wm/loss_{k}": v.detach().mean() for k, v in t.items()}
        metrics["wm/kl"] = mmean(t["dyn"]).detach()
        for name, lg in (("post", obs.post_logits), ("prior", obs.prior_logits)):
            metrics[f"wm/{name}_ent"] = -(lg.exp() * lg).sum((-2, -1)).mean().detach()
        return total, metrics

    # ------------------------------------------------------------------ imagination
    def imagine(self, start: TSSMStart, policy, horizon: int) -> Imagined:
        """Roll out ``horizon`` steps from each window through the key/value cache (eval mode)."""
        C = self.cfg.context
        z, a, valid = start.z.detach(), start.action.detach().float(), start.valid.bool()
        with self._eval_mode():
            if self.cfg.imag_start == "posterior":   # C tokens before t, then the real z_t
                ctx_z, ctx_a, ctx_v = z[:, :C], a[:, :C], valid[:, :C]
            else:                                    # STORM: C tokens up to t (real a_t)
                ctx_z, ctx_a, ctx_v = z[:, 1:], a[:, 1:], valid[:, 1:]
            tokens, keys = [self.mixer(ctx_z, ctx_a)], [ctx_v]           # [N, C, D], [N, C]
            cache = KVCache.empty(z.shape[0], len(self.transformer.blocks), z.device, C + horizon)
            if self.cfg.kv_cache:
                out = self.transformer.step(tokens[0], cache, ctx_v)[:, -1]
            else:
                out = self.transformer(tokens[0], causal_mask(ctx_v, C))[:, -1]
            h = self._history_h(out, ctx_v[:, -1])                       # [N, D]
            if self.cfg.imag_start == "posterior":
                zt = z[:, C]
            else:
                zt = self._sample(self.prior_logits(h))
            feats, actions = [torch.cat([zt, h], -1)], []
            for _ in range(horizon):
                act = policy(feats[-1].detach())
                actions.append(act)
                e = self.mixer(zt, act)[:, None]                         # [N, 1, D]
                if self.cfg.kv_cache:                                    # O(context) per step
                    h = self.transformer.step(e, cache)[:, 0]
                else:                                                    # re-run the whole sequence
                    tokens.append(e)
                    keys.append(torch.ones_like(ctx_v[:, :1]))
                    kv = torch.cat(keys, 1)
                    h = self.transformer(torch.cat(tokens, 1), causal_mask(kv, kv.shape[1]))[:, -1]
                zt = self._sample(self.prior_logits(h))
                feats.append(torch.cat([zt, h], -1))
            actions.append(policy(feats[-1].detach()))
            feat = torch.stack(feats, 0)                                 # [H+1, N, F]
            return Imagined(feat, torch.stack(actions, 0), self.reward_mean(feat),
                            self.cont_prob(feat))

    def rollout(self, start: TSSMStart, actions: Tensor) -> Tensor:
        """Rollout under given actions through the KV cache (eval mode). The start window's
        latents are detached in ``observe``: the gradient reaches the dynamics, not the encoder."""
        return self.imagine(start, ReplayActions(actions), actions.shape[0]).feat

    # ------------------------------------------------------------------ acting
    def initial_carry(self, n: int) -> tuple[TSSMCarry, Tensor]:
        L, dev = self.cfg.act_context, self.h0.device
        carry = TSSMCarry(torch.zeros(n, L, self.zdim, device=dev),
                          torch.zeros(n, L, self.act_dim, device=dev),
                          torch.zeros(n, L, dtype=torch.bool, device=dev),
                          torch.zeros(n, self.zdim, device=dev),
                          torch.zeros(n, dtype=torch.bool, device=dev))
        return carry, torch.zeros(n, self.act_dim, device=dev)

    def act_step(self, carry, obs: Tensor, prev_action: Tensor, is_first: Tensor):
        """Complete the previous token with ``prev_action``, attend over the last ``act_context``
        tokens for h_t, encode o_t. Returns ((carry, prev_action), feature [N, F])."""
        c, _ = carry
        first = is_first.bool()
        with self._eval_mode():
            new_valid = c.has_last
            if self.cfg.episode_mask:
                new_valid = new_valid & ~first
            zw = torch.cat([c.z[:, 1:], c.last_z[:, None]], 1)           # [N, L, S*C]
            aw = torch.cat([c.action[:, 1:], prev_action[:, None].float()], 1)
            vw = torch.cat([c.valid[:, 1:], new_valid[:, None]], 1)      # [N, L]
            if self.cfg.episode_mask:
                vw = vw & ~first[:, None]
            out = self.transformer(self.mixer(zw, aw), causal_mask(vw, vw.shape[1]))[:, -1]
            h = self._history_h(out, vw[:, -1])
            z = self._sample(self.post_logits(obs))                      # [N, S*C]
            za = z if self.cfg.act_latent == "posterior" else self._sample(self.prior_logits(h))
            new = TSSMCarry(zw, aw, vw, z, torch.ones_like(first))
        return (new, prev_action), torch.cat([za, h], -1)
