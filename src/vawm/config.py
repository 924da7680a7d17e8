"""The run config: the trainer's own sections plus one section per registered backbone/objective.

Each backbone, objective and the agent declare their config dataclass next to their code
(``RSSM.Config``, ``ValueAlignment.Config``, ``AgentConfig``, ...); this module composes them into
one ``Config`` and applies presets and overrides. A run's config is built as
defaults -> presets (in order) -> ``--set key=value`` overrides and written to ``config.yaml`` in
the run directory. Keys are dotted paths (``rssm.deter``); every value is checked against its
field's type as it is set (``vawm.settings``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from typing import Annotated, Any, Literal

import yaml

from vawm.agents.actor_critic import AgentConfig
from vawm.agents.td import TDConfig
from vawm.envs.base import EnvConfig
from vawm.nets.optim import OptimConfig
from vawm.objectives import OBJECTIVES
from vawm.settings import ConfigError, Min, apply_dict, section, set_path, to_dict
from vawm.worldmodels import BACKBONES

__all__ = ["Config", "ConfigError", "DEFAULT_PRESETS", "RunConfig", "BACKBONES", "OBJECTIVES",
           "apply_dict", "build_config", "default_preset", "load_config_file", "load_presets",
           "new_config", "preset_names", "save_config", "set_path", "to_dict", "validate"]

Pos = Annotated[int, Min(1)]
NonNeg = Annotated[int, Min(0)]


@section("run")
class RunConfig:
    """Data collection, replay and bookkeeping (the training loop's own settings)."""
    train_ratio: Annotated[float, Min(0, strict=True)] = 64.0   # replayed steps per agent step
    batch_size: Pos = 16
    batch_length: Annotated[int, Min(2)] = 64
    num_envs: Pos = 1
    parallel_envs: bool = False
    prefill: NonNeg = 1000      # env steps (frames, summed over envs) of random actions first
    replay_capacity: Pos = 1_000_000
    replay_persist: Literal["chunks", "checkpoint"] = "chunks"  # RUN/replay/chunk_*.pt | all in ckpt
    replay_chunk: Pos = 1024    # steps per stream in one chunk file
    log_every: Pos = 1000       # env steps
    eval_every: NonNeg = 0      # env steps; 0 = only at the end
    eval_episodes: Pos = 10
    eval_mode: Literal["sample", "mode"] = "sample"   # how the final policy acts (DreamerV3: sample)
    checkpoint_every: Pos = 5000   # env steps (also written at the end)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: NonNeg = 0         # torch CPU threads; 0 = torch default
    compile: bool = False       # torch.compile the small hot modules (nets.layers.compile_hot_modules)
    # bf16: bfloat16 autocast of the update's forwards; auto: bf16 where it pays (agent.uses_bf16)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # capture the whole update as a CUDA graph and replay it (vawm.graphs; CUDA, Adam, no warm-up)
    cuda_graph: bool = False
    # layers that read the one-hot latent (heads, actor, critics, the sequence model's input)
    # gather their weight rows for inputs without gradient (imagination, targets) instead of
    # multiplying the S*C-wide one-hot (nets.onehot.onehot_linear); equal up to summation order.
    # auto: on where the one-hot block is >= 1024 wide (measured: XS's 32x32 0.78x time per
    # update, the cpu preset's 16x16 0.99x; README)
    onehot_gather: Literal["auto", "on", "off"] = "auto"
    deterministic: bool = True  # cuDNN deterministic kernels, no autotuning (CPU runs always are)


# What `vawm train` applies when no --preset is given, per backbone: the CPU preset screened on
# CartPole for it (docs/default_job.md: rssm's cpu-cartpole; tssm scored no better with those
# settings and took 2.5x as long as with cpu), else cpu. Experiment files name their presets.
DEFAULT_PRESETS = {"rssm": "cpu-cartpole"}


def default_preset(backbone: str) -> str:
    return DEFAULT_PRESETS.get(backbone, "cpu")


@dataclass
class Config:
    """What every run has; :func:`new_config` adds one section per registered component."""
    env: str = "gym:CartPole-v1"
    backbone: str = "rssm"
    objective: str = "none"
    preset: str = DEFAULT_PRESETS["rssm"]
    seed: int = 0
    steps: Pos = 20_000         # env steps: frames (agent steps x action repeat) summed over envs
    env_cfg: EnvConfig = field(default_factory=EnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    td: TDConfig = field(default_factory=TDConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __reduce__(self):           # the composed class is built at run time: pickle by value
        return (_from_dict, (to_dict(self),))


def sections() -> dict[str, type]:
    """config key -> dataclass of every registered backbone and objective that has a Config."""
    return {c.config_key: c.Config for c in [*BACKBONES.values(), *OBJECTIVES.values()]
            if c.Config is not None}


_COMPOSED: dict[tuple, type] = {}


def config_class() -> type:
    """``Config`` with a field per registered section (rebuilt when the registries change)."""
    secs = sections()
    key = tuple((k, id(v)) for k, v in secs.items())
    if key not in _COMPOSED:
        _COMPOSED[key] = dataclasses.make_dataclass(
            "Config", [(k, v, field(default_factory=v)) for k, v in secs.items()],
            bases=(Config,), namespace={"__module__": __name__})
    return _COMPOSED[key]


def new_config() -> Config:
    """A config with every default (and a section for every registered component)."""
    return config_class()()


def _from_dict(data: dict) -> Config:
    cfg = new_config()
    apply_dict(cfg, data)
    return cfg


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


def build_config(preset: str | None = None, overrides: dict | None = None,
                 sets: list[str] | None = None) -> Config:
    """defaults -> presets (comma-separated, applied in order) -> dict overrides -> ``--set``.
    Without ``preset``: the backbone's default (:func:`default_preset`)."""
    cfg = new_config()
    if preset is None:
        preset = default_preset((overrides or {}).get("backbone") or cfg.backbone)
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
    """Choices that depend on the registries, then the chosen components' cross-field checks
    (every single value was already checked against its type when it was set)."""
    if cfg.backbone not in BACKBONES:
        raise ConfigError(f"unknown backbone {cfg.backbone!r}; valid backbones: "
                          f"{', '.join(BACKBONES)}")
    if cfg.objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective {cfg.objective!r}; valid objectives: "
                          f"{', '.join(OBJECTIVES)}")
    BACKBONES[cfg.backbone].check(cfg)
    OBJECTIVES[cfg.objective].check(cfg)
    if cfg.run.cuda_graph:
        _check_cuda_graph(cfg)


def _check_cuda_graph(cfg: Config) -> None:
    """What ``run.cuda_graph`` can capture (vawm.graphs); the device is checked at start-up."""
    fix = "or set run.cuda_graph=false"
    for kind, name, cls in (("backbone", cfg.backbone, BACKBONES[cfg.backbone]),
                            ("objective", cfg.objective, OBJECTIVES[cfg.objective])):
        if not cls.graph_safe:
            raise ConfigError(f"run.cuda_graph=true cannot capture the {kind} {name!r} (its update "
                              f"synchronises or depends on the update count); {fix}")
    if cfg.optim.kind != "adam" or cfg.optim.warmup:
        raise ConfigError("run.cuda_graph=true captures Adam without learning-rate warm-up; use "
                          f"optim.kind=adam optim.warmup=0 {fix}")
    if cfg.run.compile:
        raise ConfigError(f"run.cuda_graph=true and run.compile=true exclude each other; {fix}")


def load_config_file(path: str) -> Config:
    with open(path) as f:
        data = yaml.safe_load(f)
    cfg = _from_dict(data or {})
    validate(cfg)
    return cfg


def save_config(cfg: Config, path: str) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)
