"""Config sections -> frozen, typed settings.

Library functions take small frozen dataclasses, never a whole `ConfigDict`: a setting is then a
hashable constant of a jitted trace, its fields are documented in one place, and a typo'd or
stale config field fails when the settings are built, naming it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def from_section(cls: type[T], section: Mapping[str, Any] | T | None, prefix: str = "",
                 **overrides) -> T:
    """Builds the frozen dataclass `cls` from a config section (a mapping of its fields).

    `section` may already be a `cls` (returned as is) or None (the defaults). Lists become
    tuples (configs written to JSON come back with lists). Unknown fields raise ValueError naming
    them as `prefix.field`; `cls.__post_init__` may raise ValueErrors that start with the bad
    field's name, and they get the prefix too.
    """
    if isinstance(section, cls):
        return dataclasses.replace(section, **overrides) if overrides else section
    items = {} if section is None else dict(section.items())
    items.update(overrides)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(items) - known)
    dot = f"{prefix}." if prefix else ""
    if unknown:
        raise ValueError(f"unknown field(s) {[dot + k for k in unknown]}; expected some of "
                         f"{sorted(known)}")
    items = {k: tuple(v) if isinstance(v, list) else v for k, v in items.items()}
    try:
        return cls(**items)
    except ValueError as e:  # __post_init__ names the field; add the section
        raise ValueError(f"{dot}{e}") from e


def check_choice(value, choices, field: str) -> None:
    """Raises ValueError naming `field` when `value` is not one of `choices`."""
    if value not in choices:
        raise ValueError(f"{field}={value!r}: expected one of {tuple(choices)}")


def check_positive(obj, *fields: str, prefix: str = "") -> None:
    """Raises ValueError naming the first of `fields` of `obj` that is not > 0."""
    for name in fields:
        value = getattr(obj, name)
        if not value > 0:
            raise ValueError(f"{prefix}{name} must be > 0, got {value}")


def float_dtype(name, field: str):
    """The numpy dtype named `name` ('float32', 'bfloat16', ...); ValueError naming `field` when it
    is no float type."""
    import jax.numpy as jnp  # settings stays importable without initialising JAX

    try:
        dtype = jnp.dtype(name)
    except TypeError:
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{field}={name!r}: expected a float dtype such as 'float32' or "
                         "'bfloat16'")
    return dtype
