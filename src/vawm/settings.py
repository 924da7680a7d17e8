"""Typed, strict config sections: every module declares its own dataclass, validated from its types.

A section is a dataclass declared with ``@section("key")`` whose field types say what is valid:

    gru: Literal["layernorm", "block"] = "layernorm"       # one of these strings
    deter: Annotated[int, Min(1)] = 256                     # an integer >= 1
    unimix: Annotated[float, Range(0, 1, hi_open=True)] = 0.01

Every float must be finite. :func:`apply_dict` and :func:`set_path` coerce and check each value as
it is set (YAML presets, ``--set key=value``, a run's ``config.yaml``), so a bad key or value is a
:class:`ConfigError` whose one-line message names the key and what is valid. No other module
re-checks choices.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml

__all__ = ["ConfigError", "Min", "Range", "section", "apply_dict", "set_path",
           "to_dict", "hints"]


class ConfigError(ValueError):
    """Bad configuration input; the message is one line and names the valid choices."""


@dataclass(frozen=True)
class Range:
    """A number in [lo, hi] (either bound open or absent)."""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def check(self, v: float, key: str) -> None:
        bad = ((self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)))
               or (self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi))))
        if bad:
            raise ConfigError(f"config key {key!r} must be {self.describe()}, got {v!r}")

    def describe(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        lo = "(" if self.lo_open else "["
        hi = ")" if self.hi_open else "]"
        return f"in {lo}{'-inf' if self.lo is None else f'{self.lo:g}'}, {self.hi:g}{hi}"


def Min(lo: float, strict: bool = False) -> Range:  # noqa: N802 (reads like a type)
    """A number >= lo (> lo with ``strict``)."""
    return Range(lo, None, lo_open=strict)


def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _unwrap(typ: Any) -> tuple[Any, list]:
    checks: list = []
    while typing.get_origin(typ) is Annotated:
        typ, *meta = typing.get_args(typ)
        checks += [m for m in meta if isinstance(m, Range)]
    return typ, checks


def is_text(typ: Any) -> bool:
    """Whether ``--set`` should take the value of a field of this type as raw text."""
    typ, _ = _unwrap(typ)
    if typing.get_origin(typ) is Literal:
        return all(isinstance(a, str) for a in typing.get_args(typ))
    return typ is str


def coerce(value: Any, typ: Any, key: str) -> Any:
    typ, checks = _unwrap(typ)
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(typ)
        if value is None and type(None) in args:
            return None
        return coerce(value, next(a for a in args if a is not type(None)), key)
    if origin is Literal:
        choices = typing.get_args(typ)
        if value not in choices or isinstance(value, bool) != isinstance(choices[0], bool):
            raise ConfigError(f"config key {key!r} is {value!r}; valid values: "
                              f"{', '.join(str(c) for c in choices)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} expects a list, got {value!r}")
        args = [a for a in typing.get_args(typ) if a is not Ellipsis]
        if Ellipsis not in typing.get_args(typ) and len(args) != len(value):
            raise ConfigError(f"config key {key!r} expects {len(args)} values, got {value!r}")
        out = tuple(coerce(v, args[min(i, len(args) - 1)] if args else Any, key)
                    for i, v in enumerate(value))
        for c in checks:
            for v in out:
                c.check(v, key)
        return out
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
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or int(value) != value:
            raise ConfigError(f"config key {key!r} expects an integer, got {value!r}")
        value = int(value)
    elif typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r} expects a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"config key {key!r} must be a finite number, got {value!r}")
    elif typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {key!r} expects a string, got {value!r}")
    for c in checks:
        c.check(value, key)
    return value


def section(key: str):
    """Class decorator: a dataclass config section named ``key`` in the run config whose
    constructor checks every field against its type (so direct construction is as strict as
    a config file)."""
    def deco(cls: type) -> type:
        def __post_init__(self) -> None:  # noqa: N807
            for name, typ in hints(type(self)).items():
                v = getattr(self, name)
                if not dataclasses.is_dataclass(v):
                    setattr(self, name, coerce(v, typ, f"{key}.{name}"))
        cls.__post_init__ = __post_init__
        cls.section_key = key
        return dataclass(cls)
    return deco


def to_dict(cfg: Any) -> dict:
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = to_dict(v) if dataclasses.is_dataclass(v) else \
            (list(v) if isinstance(v, tuple) else v)
    return out


def apply_dict(cfg: Any, data: dict, prefix: str = "") -> None:
    """Merge a nested dict into a dataclass in place; an unknown key or a bad value raises
    :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix.rstrip('.') or 'top level'!r} must be a "
                          f"mapping, got {data!r}")
    h = hints(type(cfg))
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
            setattr(cfg, k, coerce(v, h[k], key))


def set_path(cfg: Any, path: str, raw: str) -> None:
    """Apply one ``key.sub=value`` override. Text fields take the text as is; other values are
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
    typ = hints(type(node)).get(parts[-1])
    if typ is not None and is_text(typ):
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
