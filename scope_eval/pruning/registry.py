"""Name -> method class. Each method file registers itself with ``@register``."""

from __future__ import annotations

import dataclasses
from typing import Any

from .base import PruningError, PruningMethod

METHODS: dict[str, type[PruningMethod]] = {}
# entry-point name -> why that plugin failed to import (scope_eval.pruning.methods fills it, warning once)
BROKEN_PLUGINS: dict[str, str] = {}


def register(cls: type[PruningMethod]) -> type[PruningMethod]:
    """Register a method class by its ``name``; refuses, at once, what would fail on first use."""
    if not isinstance(cls, type) or not issubclass(cls, PruningMethod):
        raise TypeError(
            f"register() takes a PruningMethod subclass (a dataclass), got {cls!r}; subclass "
            "scope_eval.pruning.PruningMethod and decorate it with @register above @dataclass"
        )
    if "__dataclass_fields__" not in vars(cls):  # inherited fields alone would hide its own options
        raise TypeError(f"{cls.__name__} must be a dataclass (its options are its fields): put @dataclass below @register")
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
        if name in BROKEN_PLUGINS:
            raise PruningError(f"method '{name}' is unavailable: {BROKEN_PLUGINS[name]}")
        broken = f" (plugins that failed to import: {', '.join(sorted(BROKEN_PLUGINS))})" if BROKEN_PLUGINS else ""
        raise PruningError(f"unknown pruning method '{name}'; choose one of: {', '.join(sorted(METHODS))}{broken}")
    return METHODS[name]
