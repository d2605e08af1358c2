"""What a sweep may ask of a pruning method, checked against scope_eval.pruning's registry.

The registry is imported on first use: it pulls in torch (over a second), which a dry run or a report
never needs otherwise.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Mapping


# TEMPORARY, until scope_eval.pruning.methods lands (issue 2): the names the paper's tables need.
# Options cannot be checked against this list; the registry replaces it as soon as it imports.
_PLANNED = ("none", "random", "saliency", "coverage", "scope", "divprune", "visionzip")


def check(name: str, options: Mapping[str, Any]) -> str | None:
    """None when `name` is a registered method accepting `options`; otherwise the reason, naming the fix."""
    if not _registry_ready():
        return None if name in _PLANNED else f"unknown pruning method '{name}'; choose one of: {', '.join(_PLANNED)}"
    from ..pruning import registry
    from ..pruning.base import PruningError

    try:
        registry.build_method(name, **options)
    except PruningError as error:
        return str(error)
    except (TypeError, ValueError) as error:  # a method's own __post_init__ rejecting a value
        return f"method '{name}' rejects options {dict(options)}: {error}"
    return None


def keeps_all(name: str) -> bool:
    """True for the unpruned reference ('none'), which takes no budget."""
    if not _registry_ready():
        return name == "none"
    from ..pruning import registry

    registry.method_options(name)  # raises for unknown names
    return registry.METHODS[name].keeps_all


def accepts(name: str, option: str) -> bool:
    if not _registry_ready():
        return name == "random" and option == "seed"
    from ..pruning import registry

    return option in registry.method_options(name)


def _registry_ready() -> bool:
    return importlib.util.find_spec("scope_eval.pruning.methods") is not None
