"""What a sweep may ask of a pruning method, checked against scope_eval.pruning's registry.

The registry is imported on first use: it pulls in torch (over a second), which a report never needs.
"""

from __future__ import annotations

from typing import Any, Mapping


def check(name: str, options: Mapping[str, Any]) -> str | None:
    """None when `name` is a registered method accepting `options`; otherwise the reason, naming the fix."""
    from ..pruning import registry
    from ..pruning.base import PruningError

    try:
        registry.build_method(name, **options)
    except PruningError as error:
        return str(error)
    except (TypeError, ValueError) as error:  # a method's own __post_init__ rejecting a value
        return f"method '{name}' rejects options {dict(options)}: {error}"
    return None


def check_budget(name: str, options: Mapping[str, Any], budget: int) -> str | None:
    """None when the method with these options can run at this budget (e.g. VisionZip's contextual tokens
    must fit in it); otherwise the reason. Known before any model is loaded."""
    from ..pruning import registry
    from ..pruning.base import PruningError

    method = registry.build_method(name, **options)
    split = getattr(method, "split", None)
    if split is None:
        return None
    try:
        split(budget)
    except PruningError as error:
        return str(error)
    return None


def keeps_all(name: str) -> bool:
    """True for the unpruned reference ('none'), which takes no budget."""
    from ..pruning import registry

    registry.method_options(name)  # raises for unknown names
    return registry.METHODS[name].keeps_all


def accepts(name: str, option: str) -> bool:
    from ..pruning import registry

    return option in registry.method_options(name)
