"""Name -> method class. Each method file registers itself with ``@register``."""

from __future__ import annotations

import dataclasses
from typing import Any

from .base import PruningError, PruningMethod

METHODS: dict[str, type[PruningMethod]] = {}


def register(cls: type[PruningMethod]) -> type[PruningMethod]:
    if not cls.name:
        raise TypeError(f"{cls.__name__} must set a class attribute 'name'")
    if cls.name in METHODS:
        raise TypeError(f"pruning method name '{cls.name}' is registered twice")
    METHODS[cls.name] = cls
    return cls


def method_options(name: str) -> dict[str, Any]:
    """The options a method accepts, with their defaults."""
    cls = _lookup(name)
    return {f.name: f.default for f in dataclasses.fields(cls) if f.init}


def build_method(name: str, **options: Any) -> PruningMethod:
    """Instantiate a registered method; unknown options fail with the list of valid ones."""
    cls = _lookup(name)
    valid = method_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        listing = ", ".join(f"{k}={v!r}" for k, v in valid.items()) or "none"
        raise PruningError(f"method '{name}' has no option(s) {', '.join(unknown)}; its options are: {listing}")
    return cls(**options)


def _lookup(name: str) -> type[PruningMethod]:
    from . import methods  # noqa: F401  (imports every method file, which registers it)

    if name not in METHODS:
        raise PruningError(f"unknown pruning method '{name}'; choose one of: {', '.join(sorted(METHODS))}")
    return METHODS[name]
