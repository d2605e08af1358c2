"""The public entry points: ``prune`` (any method, any supported model) and ``scope`` (the SCOPE README form)."""

from __future__ import annotations

import weakref
from typing import Any

import torch

from scope_eval.pruning import PruningError
from scope_eval.pruning.plan import PruningPlan

from .base import PruningHandle

_ACTIVE: "weakref.WeakKeyDictionary[Any, PruningHandle]" = weakref.WeakKeyDictionary()


def prune(
    model: Any,
    method: str | PruningPlan = "scope",
    budget: int | None = None,
    *,
    processor: Any = None,
    budget_policy: str = "per_crop",
    **options: Any,
) -> PruningHandle:
    """Apply a registered pruning method to a LLaVA-1.5 / LLaVA-NeXT model instance.

    budget: visual tokens reaching the language model per image (None for method 'none'). On LLaVA-NeXT
    with budget_policy='per_crop' (the paper's), each of an image's n crops keeps floor(budget / n), so
    n * floor(budget / n) tokens reach the model; with 'global', exactly budget.
    ``method`` may also be a PruningPlan built at another edge (lmms-eval model args, a sweep), which is
    used as it is; budget, budget_policy and options must then be left out.
    Returns a handle: use it as a context manager or call ``remove()`` to restore the model exactly.
    """
    handle_class = _handle_class_for(model)
    if model in _ACTIVE:
        raise PruningError("this model is already pruned; call restore(model) or handle.remove() first")
    if isinstance(method, PruningPlan):
        if budget is not None or options or budget_policy != "per_crop":
            raise PruningError("prune(model, plan) takes the budget and options from the plan; pass nothing else")
        plan = method
    else:
        plan = PruningPlan.build(method, budget, budget_policy, **options)
    plan.check_available(handle_class.visual_tokens_per_image(model))
    handle = handle_class(model, plan, processor) if processor is not None else handle_class(model, plan)
    _ACTIVE[model] = handle
    return handle


def scope(
    model: Any,
    token_num: int,
    processor: Any = None,
    alpha: float = 1.0,
    combine: str = "multi",
    budget_policy: str = "per_crop",
) -> Any:
    """SCOPE on ``model`` keeping ``token_num`` visual tokens per image; returns the model (pruned in place).

    ``restore(model)`` undoes it; ``handle_of(model)`` gives the handle (realised counts, removal).
    """
    prune(model, "scope", token_num, processor=processor, budget_policy=budget_policy, alpha=alpha, combine=combine)
    return model


def handle_of(model: Any) -> PruningHandle | None:
    return _ACTIVE.get(_as_model(model, "handle_of"))


def restore(model: Any) -> Any:
    """Undo pruning on ``model`` (no-op if it is not pruned); returns the model."""
    handle = _ACTIVE.get(_as_model(model, "restore"))
    if handle is not None:
        handle.remove()
    return model


def _as_model(model: Any, caller: str) -> Any:
    """``model`` if it can be a pruned model (a torch module), else a PruningError naming what to pass."""
    if not isinstance(model, torch.nn.Module):
        raise PruningError(f"{caller}() takes the model that prune() or scope() was given, got {type(model).__name__}")
    return model


def _forget(model: Any, handle: PruningHandle) -> None:
    if _ACTIVE.get(model) is handle:
        del _ACTIVE[model]


def _handle_class_for(model: Any) -> type[PruningHandle]:
    from .hf_llava import HF_LLAVA_CLASSES, HfLlavaHandle

    if isinstance(model, HF_LLAVA_CLASSES):
        return HfLlavaHandle
    original = _original_llava_classes()
    if original and isinstance(model, original):
        from .llava_original import LlavaOriginalHandle

        return LlavaOriginalHandle
    raise PruningError(
        f"cannot prune a {type(model).__name__}: supported are transformers' LlavaForConditionalGeneration / "
        "LlavaNextForConditionalGeneration and the original LLaVA codebase's LlavaLlamaForCausalLM (and siblings)"
    )


def _original_llava_classes() -> tuple[type, ...]:
    try:
        from llava.model.llava_arch import LlavaMetaForCausalLM
    except ImportError:  # the original LLaVA codebase is an optional, separately installed dependency
        return ()
    return (LlavaMetaForCausalLM,)
