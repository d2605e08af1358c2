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


def check_plan(
    name: str, options: Mapping[str, Any], budget: Any, budget_policy: str, visual_tokens: int, backend: str, pretrained: str
) -> str | None:
    """None when the run's plan (scope_eval.pruning.plan.PruningPlan, the one validation of a budget) holds
    for a model whose images bring at most ``visual_tokens`` tokens, and passes the checks the lmms-eval
    edge runs before loading ``pretrained`` on ``backend`` (in-LLM schedule vs depth, text encoder);
    otherwise the reason, naming the fix."""
    from ..lmms.options import check_before_loading
    from ..pruning.base import PruningError
    from ..pruning.plan import PruningPlan

    try:
        plan = PruningPlan.build(name, budget, budget_policy, **options)
        plan.check_available(visual_tokens)
        check_before_loading(backend, plan, pretrained)
    except PruningError as error:
        return str(error)
    return None


def check_ratio_plan(name: str, options: Mapping[str, Any], keep_ratio: float) -> str | None:
    """As check_plan, for a keep_ratio budget (the tokens available are only known per image, at run time)."""
    from ..pruning.base import PruningError
    from ..pruning.plan import PruningPlan

    try:
        PruningPlan.build(name, None, "per_crop", keep_ratio=keep_ratio, **options)
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
