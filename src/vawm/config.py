"""Configuration: nested dataclasses that fail loudly on unknown keys, YAML presets, overrides.

A run's config is built as  defaults -> presets (in order) -> ``--set key=value`` overrides, then
written to ``config.yaml`` in the run directory. Keys are dotted paths (``rssm.deter``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from vawm.envs.base import EnvConfig


class ConfigError(ValueError):
    """Bad configuration input; the message is one line and names the valid choices."""


@dataclass
class RSSMConfig:
    """DreamerV3 RSSM (``000`` §4.2, Table 15; DreamerV3 2023 for the ``2023`` presets)."""
    deter: int = 256            # GRU state h_t
    hidden: int = 256           # width of the img/obs layers around the GRU
    stoch: int = 32             # number of categorical latents
    classes: int = 32           # classes per latent
    unimix: float = 0.01        # 1% uniform mix in the latent categoricals
    free_nats: float = 1.0      # free bits, per (batch, time) sample
    beta_pred: float = 1.0      # recon + reward + continue
    beta_dyn: float = 0.5       # 2023: 0.5, 2025: 1.0 (Table 15)
    beta_rep: float = 0.1
    gru: str = "layernorm"      # "layernorm" (2023) | "block" (2025)
    blocks: int = 8             # block GRU groups (2025)
    dynlayers: int = 1
    units: int = 256            # MLP width of encoder/decoder/heads
    layers: int = 2             # MLP depth of vector encoder/decoder
    head_layers: int = 1        # MLP depth of reward/continue heads
    cnn_depth: int = 32
    norm: str = "layer"         # "layer" (2023) | "rms" (2025)
    act: str = "silu"
    reward_bins: int = 255
    recon_scale: float = 1.0
    reward_scale: float = 1.0
    cont_scale: float = 1.0


@dataclass
class AgentConfig:
    """Dreamer actor-critic in imagination (``000`` §4.3 eq. 6–9, Table 15)."""
    horizon: int = 15
    gamma: float = 0.997        # 1 - 1/333
    lam: float = 0.95
    units: int = 256
    layers: int = 2
    norm: str = "layer"
    act: str = "silu"
    actor_ent: float = 3e-4     # eta; 2025 table: 1e-3
    actor_unimix: float = 0.01
    actor_grad: str = "auto"    # auto | reinforce | dynamics (auto: reinforce discrete, dynamics cont.)
    min_std: float = 0.1
    max_std: float = 1.0
    critic_scale: float = 1.0
    actor_scale: float = 1.0
    slow_decay: float = 0.98    # critic EMA decay
    slowreg: float = 1.0        # critic EMA regulariser
    repval_scale: float = 0.0   # replay value loss (2025: 0.3)
    retnorm_decay: float = 0.99
    retnorm_limit: float = 1.0
    imag_starts: int = 0        # 0 = imagine from all B*T posterior states; else a random subset
    # STORM's agent (weipu-zhang/STORM agents.py) differs from DreamerV3's in two places; preset
    # ``storm-agent`` selects both: the slow critic's regulariser target is the lambda-return
    # computed with the slow critic's values (``return``) instead of its value (``value``), and
    # the losses are plain means instead of weighted by the imagined continuation product.
    slow_target: str = "value"  # value (DreamerV3) | return (STORM)
    cont_weight: bool = True    # weight actor/critic losses by prod c (DreamerV3); STORM: false


@dataclass
class OptimConfig:
    kind: str = "adam"          # "adam" (2023) | "laprop" (2025)
    model_lr: float = 1e-4
    actor_lr: float = 3e-5
    critic_lr: float = 3e-5
    model_eps: float = 1e-8
    ac_eps: float = 1e-5
    model_clip: float = 1000.0  # adam: global-norm clip; laprop: AGC factor
    ac_clip: float = 100.0


@dataclass
class RunConfig:
    """Data collection, replay and bookkeeping."""
    train_ratio: float = 64.0   # replayed steps per agent step of each env (not per frame, not per E)
    batch_size: int = 16
    batch_length: int = 64
    num_envs: int = 1
    parallel_envs: bool = False
    prefill: int = 1000         # env steps (frames, summed over envs) of random actions first
    replay_capacity: int = 1_000_000
    replay_persist: str = "chunks"  # chunks: RUN/replay/chunk_*.pt, written once | checkpoint: all
    replay_chunk: int = 1024        # steps per stream in one chunk file
    log_every: int = 1000       # env steps
    eval_every: int = 0         # env steps; 0 = only at the end
    eval_episodes: int = 10
    eval_mode: str = "sample"   # sample (DreamerV3, STORM) | mode: how the final policy acts in eval
    checkpoint_every: int = 5000  # env steps (also written at the end)
    device: str = "auto"        # auto | cpu | cuda
    threads: int = 0            # torch CPU threads; 0 = torch default
    compile: bool = False       # torch.compile the small hot modules (nets.layers.compile_hot_modules)
    precision: str = "fp32"     # fp32 | bf16: bfloat16 autocast of the update's forward passes
    deterministic: bool = True  # cuDNN deterministic kernels, no autotuning (CPU runs always are)


@dataclass
class VarConfig:
    """Value-alignment regularisation (``000`` eq. 2–5); see ``vawm/objectives/var.py``."""
    scale: float = 1.0          # extra factor on beta_var * L_var (1 in ``000``)
    warmup: int = 10_000        # world-model updates with L_var off (eq. 2, paper 1e4)
    weight: str = "adaptive"    # adaptive: 1/max(1, sg(KL)) (eq. 5) | static: ``static_beta``
    static_beta: float = 0.5    # Table 3 ablation: 0.5; App. D "large" weight: 50
    per_sample: bool = True     # eq. 5 per (batch, time) sample; False: 1/max(1, batch-mean KL)
    kl_floor: float = 1.0       # the 1 in max(1, KL) of eq. 5
    beta_dyn: float = 0.5       # eq. 4 dyn side: KL[sg(V(s)) || V(s~)], trains the prior state
    beta_rep: float = 0.1       # eq. 4 rep side: KL[V(s) || sg(V(s~))], trains the posterior state
    direction: str = "post_prior"  # post_prior: KL[V(s) || V(s~)] (eq. 4) | prior_post: swapped
    critic: str = "critic"      # V_theta of eq. 4: critic (online, ``000``) | slow (EMA critic)


@dataclass
class TempoConfig:
    """TEMPO meta weighting (``003`` §2.2–2.3, Alg. 1, App. C); defaults follow the public code.

    Preset ``tempo-paper`` (configs/tempo.yaml) switches to the paper's text: 5 hidden layers, no
    BatchNorm on the output, values normalised by a moving mean/variance.
    """
    layers: int = 4             # hidden dense layers (code 4, + output = 5 dense; paper text: 5)
    units: int = 400
    out_norm: bool = True       # BatchNorm on the output layer too (code); paper: hidden only
    lr: float = 1e-4            # Adam of the meta weighter (App. C)
    eps: float = 1e-8           # Adam epsilon (the meta gradient carries the small factor eta)
    clip: float = 100.0         # global-norm clip of the meta gradient (public code)
    wd: float = 1e-6            # weight decay per meta step, alpha <- (1 - wd) alpha (public code)
    w_low: float = 0.75         # w = 0.5 * sigmoid(out) + 0.75
    w_range: float = 0.5
    meta_grad: str = "exact"    # exact (double backward) | finite_diff (theta +- eps g re-runs)
    fd_eps: float = 1e-4        # finite_diff: norm of the parameter step along g_up / |g_up|
    lookahead_lr: float = 0.0   # eta of the look-ahead step; 0 = the world model's lr
    every: int = 1              # meta step every k world-model updates (weights: every update)
    value_source: str = "slow"  # slow (target critic, public code) | critic
    value_norm: str = "batch"   # batch (post + prior together, public code) | moving (paper §2.3)
    norm_decay: float = 0.99    # value_norm=moving: EMA decay of the mean/variance
    sign: str = "lookahead"     # lookahead: descend dL_upper(theta')/dalpha | public_code: opposite


@dataclass
class DreamCriticConfig:
    """Dream critic (``002`` §3.2, §4.1); see ``vawm/objectives/dream_critic.py``."""
    scale: float = 0.5          # lambda in L_dream = L_base + lambda L_critic
    gamma: float = 0.99
    units: int = 64             # 2-layer MLP of 64 units, ReLU (``002`` §4.1)
    layers: int = 2
    act: str = "relu"
    norm: str = "none"
    target: str = "sg"          # sg: semi-gradient TD (target detached) | full: residual gradient
    features: str = "post"      # post: V_phi on the posterior feature | latent: on z_t alone (002)
    imagine: bool = True        # evaluate imagined rollouts with V_phi (diagnostics, no gradient)
    horizon: int = 15           # H of those rollouts (``002`` §4.2)
    imag_starts: int = 64       # posterior start states per rollout batch (0 = all B*T)
    imag_every: int = 1         # rollout every k world-model updates


@dataclass
class TSSMConfig:
    """STORM transformer state-space model (``000`` App. L.1, Tables 7–14). Owned by tssm.py."""
    stoch: int = 32             # categorical latents (32 x 32, Table 7)
    classes: int = 32
    unimix: float = 0.01        # 1% uniform mix in the latent categoricals
    dim: int = 512              # D (Table 14)
    layers: int = 2             # K transformer blocks
    heads: int = 8
    ffn_mult: int = 2           # FFN width 2D (Table 11)
    dropout: float = 0.1
    max_len: int = 64           # positional-encoding length (STORM: 64 = batch length)
    free_nats: float = 1.0
    free_bits: str = "batch"    # batch: max(1, batch-mean KL) (STORM's code) | sample: per (b, t)
    beta_pred: float = 1.0      # recon + reward + continue
    beta_dyn: float = 0.5
    beta_rep: float = 0.1
    cnn_depth: int = 32         # first conv block's channels (32-64-128-256, Table 7)
    cnn_stages: int = 4         # conv blocks (fewer when the image side is not divisible by 2^4)
    units: int = 512            # MLP width: vector encoder/decoder and reward/continue heads (D)
    layers_mlp: int = 2         # hidden layers of the vector encoder/decoder
    head_layers: int = 2        # hidden layers of reward/continue heads (3 MLP layers, Table 13)
    context: int = 8            # imagination context C: real steps fed through the KV cache
    act_context: int = 16       # environment context length while acting (Table 14)
    imag_start: str = "posterior"  # posterior: from the real z_t | prior: STORM's predicted z~_{t+1}
    act_latent: str = "posterior"  # posterior: act on [z_t, h] | prior: on a prior sample (STORM)
    episode_mask: bool = True   # attention stops at episode starts (STORM's code: False)
    kv_cache: bool = True       # imagine through the key/value cache (False: re-run the sequence)
    reward_bins: int = 255


@dataclass
class VAELSTMConfig:
    """World Models VAE + LSTM (``002`` §3.1, §4.1). Owned by vae_lstm.py (see its docstring)."""
    latent: int = 32            # z_t, diagonal Gaussian
    hidden: int = 256           # VAE MLP width (2 layers, ReLU); also the continue head's width
    layers: int = 2             # hidden layers of the VAE encoder / decoder MLPs
    lstm: int = 128             # h_t
    beta_start: float = 1.0     # KL weight annealed beta_start -> beta_end (``002`` §4.2)
    beta_end: float = 0.1
    beta_anneal: int = 10_000   # world-model updates of the (linear) annealing
    free_nats: float = 0.0      # World Models' kl_tolerance; 0 = off (``002`` has none)
    min_std: float = 0.01       # std = softplus(raw) + min_std, encoder and LSTM prediction
    dyn_loss: str = "kl"        # kl: KL[sg(q) || p] | nll: -ln p(sg(z)) (World Models' MDN, K=1)
    recon_scale: float = 1.0
    reward_scale: float = 1.0
    dyn_scale: float = 1.0      # the next-latent prediction loss (absent from ``002`` eq. L_base)
    cont_scale: float = 1.0
    cont_head: bool = True      # deviation: ``002`` has no continue head; false -> cont = 1
    imag_temp: float = 1.0      # World Models' temperature tau of the dream's latent samples
    symlog: bool = False        # symlog vector inputs / reconstruction targets (not in ``002``)
    cnn_depth: int = 32         # image VAE: 4 stride-2 convs of depth x (1, 2, 4, 8), ReLU


@dataclass
class Config:
    env: str = "gym:CartPole-v1"
    backbone: str = "rssm"
    objective: str = "none"
    preset: str = "cpu"
    seed: int = 0
    steps: int = 20_000         # env steps: frames (agent steps x action repeat) summed over envs
    env_cfg: EnvConfig = field(default_factory=EnvConfig)
    rssm: RSSMConfig = field(default_factory=RSSMConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    var: VarConfig = field(default_factory=VarConfig)
    tempo: TempoConfig = field(default_factory=TempoConfig)
    dream_critic: DreamCriticConfig = field(default_factory=DreamCriticConfig)
    tssm: TSSMConfig = field(default_factory=TSSMConfig)
    vae_lstm: VAELSTMConfig = field(default_factory=VAELSTMConfig)


BACKBONES = ("rssm", "tssm", "vae-lstm")
OBJECTIVES = ("none", "var", "tempo", "dream-critic")


# ---------------------------------------------------------------------------- dict <-> dataclass
def to_dict(cfg: Any) -> dict:
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = to_dict(v) if dataclasses.is_dataclass(v) else (list(v) if isinstance(v, tuple) else v)
    return out


def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls)


def _coerce(value: Any, typ: Any, key: str) -> Any:
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(typ)
        if value is None and type(None) in args:
            return None
        typ = next(a for a in args if a is not type(None))
        origin = typing.get_origin(typ)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} expects a list, got {value!r}")
        args = typing.get_args(typ)
        return tuple(_coerce(v, args[0] if args else Any, key) for v in value)
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key!r} expects true/false, got {value!r}")
    if typ in (int, float) and isinstance(value, str):
        try:  # PyYAML reads "1e-4" (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"config key {key!r} expects an integer, got {value!r}")
        return int(value)
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r} expects a number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {key!r} expects a string, got {value!r}")
        return value
    return value


def apply_dict(cfg: Any, data: dict, prefix: str = "") -> None:
    """Merge a nested dict into a dataclass in place; unknown keys raise :class:`ConfigError`."""
    hints = _hints(type(cfg))
    names = [f.name for f in dataclasses.fields(cfg)]
    for k, v in data.items():
        key = f"{prefix}{k}"
        if k not in names:
            raise ConfigError(f"unknown config key {key!r}; valid keys here: {', '.join(names)}")
        cur = getattr(cfg, k)
        if dataclasses.is_dataclass(cur):
            if not isinstance(v, dict):
                raise ConfigError(f"config key {key!r} is a section; set its fields as {key}.NAME")
            apply_dict(cur, v, key + ".")
        else:
            setattr(cfg, k, _coerce(v, hints[k], key))


def set_path(cfg: Any, path: str, raw: str) -> None:
    """Apply one ``key.sub=value`` override. String fields take the text as is; other values are
    parsed as YAML (``1e-4``, ``true``, ``[64, 64]``)."""
    parts = path.split(".")
    node = cfg
    for i, p in enumerate(parts[:-1]):
        sub = getattr(node, p, None) if dataclasses.is_dataclass(node) else None
        if not dataclasses.is_dataclass(sub):
            names = [f.name for f in dataclasses.fields(node)]
            bad = ".".join(parts[: i + 1])
            raise ConfigError(f"unknown config section {bad!r}; valid keys here: {', '.join(names)}")
        node = sub
    typ = _hints(type(node)).get(parts[-1])
    if typ is str:
        value: Any = raw
    else:
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
    nested: dict = {parts[-1]: value}
    for p in reversed(parts[:-1]):
        nested = {p: nested}
    apply_dict(cfg, nested)


# ---------------------------------------------------------------------------- presets
def load_presets() -> dict[str, dict]:
    """All presets from every ``vawm/configs/*.yaml`` (one file per topic; names must be unique)."""
    out: dict[str, dict] = {}
    folder = resources.files("vawm").joinpath("configs")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        for name, body in (yaml.safe_load(entry.read_text()) or {}).items():
            if name in out:
                raise ConfigError(f"preset {name!r} is defined twice (second time in {entry.name})")
            out[str(name)] = body
    return out


def preset_names() -> list[str]:
    return sorted(load_presets())


def _resolve_preset(name: str, presets: dict, seen: tuple = ()) -> list[dict]:
    if name not in presets:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(sorted(presets))}")
    if name in seen:
        raise ConfigError(f"preset {name!r} inherits from itself")
    body = dict(presets[name] or {})
    chain: list[dict] = []
    for base in _as_list(body.pop("base", [])):
        chain += _resolve_preset(base, presets, seen + (name,))
    body.pop("doc", None)
    return chain + [body]


def _as_list(x: Any) -> list:
    return [] if x is None else (list(x) if isinstance(x, (list, tuple)) else [x])


def build_config(preset: str = "cpu", overrides: dict | None = None, sets: list[str] | None = None
                 ) -> Config:
    """defaults -> presets (comma-separated, applied in order) -> dict overrides -> ``--set``."""
    cfg = Config()
    presets = load_presets()
    for name in [p for p in preset.split(",") if p]:
        for body in _resolve_preset(name, presets):
            apply_dict(cfg, body)
    cfg.preset = preset
    if overrides:
        apply_dict(cfg, overrides)
    for s in sets or []:
        if "=" not in s:
            raise ConfigError(f"override {s!r} must look like key=value (e.g. rssm.deter=512)")
        k, v = s.split("=", 1)
        set_path(cfg, k.strip(), v.strip())
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    if cfg.backbone not in BACKBONES:
        raise ConfigError(f"unknown backbone {cfg.backbone!r}; valid backbones: {', '.join(BACKBONES)}")
    if cfg.objective not in OBJECTIVES:
        raise ConfigError(
            f"unknown objective {cfg.objective!r}; valid objectives: {', '.join(OBJECTIVES)}")
    choices = {"rssm.gru": ("layernorm", "block"), "rssm.norm": ("layer", "rms", "none"),
               "agent.actor_grad": ("auto", "reinforce", "dynamics"),
               "agent.slow_target": ("value", "return"),
               "run.replay_persist": ("chunks", "checkpoint"),
               "optim.kind": ("adam", "laprop"), "var.weight": ("adaptive", "static"),
               "tempo.meta_grad": ("exact", "finite_diff"), "tempo.value_source": ("slow", "critic"),
               "tempo.value_norm": ("batch", "moving"), "tempo.sign": ("lookahead", "public_code"),
               "var.direction": ("post_prior", "prior_post"), "var.critic": ("critic", "slow"),
               "dream_critic.target": ("sg", "full"),
               "dream_critic.features": ("post", "latent"),
               "run.device": ("auto", "cpu", "cuda"),
               "run.eval_mode": ("mode", "sample"), "run.precision": ("fp32", "bf16")}
    for path, valid in choices.items():
        sec, key = path.split(".")
        val = getattr(getattr(cfg, sec), key)
        if val not in valid:
            raise ConfigError(f"config key {path!r} is {val!r}; valid values: {', '.join(valid)}")
    if cfg.run.compile and cfg.objective == "tempo" and cfg.tempo.meta_grad == "exact":
        raise ConfigError("run.compile=true cannot run tempo.meta_grad=exact: torch.compile does "
                          "not support the double backward of the exact meta-gradient; use "
                          "tempo.meta_grad=finite_diff or run.compile=false")
    if cfg.steps <= 0:
        raise ConfigError(f"steps must be positive, got {cfg.steps}")


def load_config_file(path: str) -> Config:
    with open(path) as f:
        data = yaml.safe_load(f)
    cfg = Config()
    apply_dict(cfg, data)
    validate(cfg)
    return cfg


def save_config(cfg: Config, path: str) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)
