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
    keep_ratio: float | None = None,
    saliency_layer: int | None = None,
    **options: Any,
) -> PruningHandle:
    """Apply a registered pruning method to a LLaVA-1.5 / LLaVA-NeXT / Qwen2-VL / Qwen2.5-VL model instance.

    budget: visual tokens reaching the language model per image (None for method 'none'). On LLaVA-NeXT
    with budget_policy='per_crop' (the paper's), each of an image's n crops keeps floor(budget / n), so
    n * floor(budget / n) tokens reach the model; with 'global', exactly budget.
    keep_ratio: instead of budget, the share of each image's own visual tokens it keeps,
    K = max(1, floor(r * N + 1/2)) (Qwen's N varies with the image size; PruningPlan.ratio_budget).
    saliency_layer: Qwen only, the ViT block whose attention received is the saliency (default: Qwen2-VL
    -2, Qwen2.5-VL its last full-attention block); LLaVA's is its config's vision_feature_layer.
    ``method`` may also be a PruningPlan built at another edge (lmms-eval model args, a sweep), which is
    used as it is; budget, keep_ratio, budget_policy and options must then be left out.
    Returns a handle: use it as a context manager or call ``remove()`` to restore the model exactly.
    """
    handle_class = _handle_class_for(model)
    if model in _ACTIVE:
        raise PruningError("this model is already pruned; call restore(model) or handle.remove() first")
    if isinstance(method, PruningPlan):
        if budget is not None or keep_ratio is not None or options or budget_policy != "per_crop":
            raise PruningError("prune(model, plan) takes the budget and options from the plan; pass nothing else")
        plan = method
    else:
        plan = PruningPlan.build(method, budget, budget_policy, keep_ratio=keep_ratio, **options)
    plan.check_available(handle_class.visual_tokens_per_image(model))
    host_options: dict[str, Any] = {}
    if saliency_layer is not None:
        if not getattr(handle_class, "takes_saliency_layer", False):
            raise PruningError(
                f"saliency_layer is a Qwen2-VL / Qwen2.5-VL option; a {type(model).__name__} takes its saliency at its "
                "config's vision_feature_layer: drop saliency_layer"
            )
        host_options["saliency_layer"] = saliency_layer
    if processor is not None:
        host_options["processor"] = processor
    handle = handle_class(model, plan, **host_options)
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
    from .hf_qwen2_vl import QWEN_VL_CLASSES, HfQwen2VLHandle

    if isinstance(model, QWEN_VL_CLASSES):
        return HfQwen2VLHandle
    original = _original_llava_classes()
    if original and isinstance(model, original):
        from .llava_original import LlavaOriginalHandle

        return LlavaOriginalHandle
    raise PruningError(
        f"cannot prune a {type(model).__name__}: supported are transformers' LlavaForConditionalGeneration / "
        "LlavaNextForConditionalGeneration / Qwen2VLForConditionalGeneration / Qwen2_5_VLForConditionalGeneration and the original LLaVA codebase's LlavaLlamaForCausalLM (and siblings)"
    )


def _original_llava_classes() -> tuple[type, ...]:
    try:
        from llava.model.llava_arch import LlavaMetaForCausalLM
    except ImportError:  # the original LLaVA codebase is an optional, separately installed dependency
        return ()
    return (LlavaMetaForCausalLM,)
