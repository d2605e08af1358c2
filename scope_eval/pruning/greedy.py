"""SCOPE's selection (docs/semantics.md#scope): ``scope_select`` and the choice between its exact implementations.

    S      = cosine similarity of the feature rows (float32 at least; zero rows have similarity 0)
    c_i(T) = max(0, max_{t in T} S_it)                coverage of token i by the selected set T
    g_j(T) = sum_i max(0, S_ij - c_i(T))              coverage gain of candidate j
    s_j    = g_j * a_j**alpha  (combine="multi")  or  g_j + a_j**alpha  (combine="add")
    greedy: K times add the unselected j with the largest s_j, ties to the lowest index.

Conventions: ``alpha=0`` means pure coverage, every weight is 1 (saliency ignored, even where a_j = 0:
torch defines 0**0 = 1); with alpha > 0 a token of zero saliency scores 0 under "multi". Saliency must be
non-negative (it is a softmax attention); that also keeps the lazy greedy exact.

Two exact implementations (scope_eval.pruning.greedy_kernels) give bit-identical picks: "inplace"
(batched, one preallocated buffer, no host sync per step) and "lazy" (heap-based lazy greedy on the CPU).
``variant="auto"`` picks by device and size: on CUDA always "inplace" (a host sync per lazy step would
stall the GPU; not yet measured on a GPU). On the CPU "lazy", except for batches of 3 or more rows of
fewer than LAZY_FROM_TOKENS tokens, where the batched "inplace" loop was faster (crossover measured with
single-thread CPU time on the development machine; at N = 576 and 2880, every LLaVA setting, lazy wins
at every batch size tried; results/selection_cpu.md).
"""

from __future__ import annotations

import math
import numbers
import warnings

import torch

from .base import PruningError, VisualTokens, all_finite, check_budget, check_features
from .greedy_kernels import inplace_order, lazy_order, quantise_similarity
from .similarity import cosine_similarity, unit_rows

COMBINES = ("multi", "add")
VARIANTS = ("auto", "inplace", "lazy")
LAZY_FROM_TOKENS = 192  # CPU crossover, see the module doc

_ORDER_FUNCTIONS = {"inplace": inplace_order, "lazy": lazy_order}


def scope_select(
    features: torch.Tensor,
    saliency: torch.Tensor | None,
    k: int,
    alpha: float = 1.0,
    combine: str = "multi",
    *,
    variant: str = "auto",
    warn_degenerate: bool = True,
) -> torch.Tensor:
    """LongTensor [B, k]: the k tokens SCOPE keeps per image, ascending (spatial order).

    features [B, N, D] (any float dtype; computed in float32 at least), saliency [B, N] or None (then
    alpha must be 0). ``variant`` only changes speed, never the result. Where the input gives the greedy
    no preference (all-zero saliency or features: ``decided_by_ties``), a RuntimeWarning says so, as
    ``prune()`` does; the methods pass ``warn_degenerate=False`` and flag it in ``KeptTokens.degenerate``.
    """
    order = scope_order(features, saliency, k, alpha, combine, variant=variant, warn_degenerate=warn_degenerate)
    return order.sort(dim=-1).values


def scope_order(
    features: torch.Tensor,
    saliency: torch.Tensor | None,
    k: int,
    alpha: float = 1.0,
    combine: str = "multi",
    *,
    variant: str = "auto",
    warn_degenerate: bool = True,
) -> torch.Tensor:
    """Like ``scope_select`` but in the order the greedy picks the tokens (first pick first)."""
    with torch.no_grad():  # selection never needs gradients; features that require them stay usable
        order, weights = _scope_order(features, saliency, k, alpha, combine, variant)
        if warn_degenerate:
            degenerate = int(decided_by_ties(features, weights, order.shape[-1], combine).sum())
            if degenerate:
                warnings.warn(
                    f"scope_select: {degenerate} of {features.shape[0]} image(s) had a degenerate selection: the inputs "
                    "gave no preference among the tokens (all-zero saliency or features, or saliency**alpha underflowing), "
                    "so the lowest indices were kept. Check the features and saliency passed in",
                    RuntimeWarning,
                    stacklevel=3,
                )
    return order


def _scope_order(features, saliency, k, alpha, combine, variant) -> tuple[torch.Tensor, torch.Tensor]:
    weights = scope_weights(features, saliency, alpha, combine)
    k = check_budget(k, features.shape[1], what="k")
    if variant not in VARIANTS:
        raise PruningError(f"unknown greedy variant '{variant}'; choose one of: {', '.join(VARIANTS)}")
    if variant == "auto":
        variant = choose_variant(features.shape[0], features.shape[1], features.device)
    similarity = quantise_similarity(cosine_similarity(features))
    return _ORDER_FUNCTIONS[variant](similarity, weights, k, combine), weights


def scope_weights(
    features: torch.Tensor, saliency: torch.Tensor | None, alpha: float, combine: str
) -> torch.Tensor:
    """Validate the inputs; return the float64 weights a**alpha [B, N] (all ones when alpha is 0)."""
    if not isinstance(features, torch.Tensor) or not features.is_floating_point():
        raise PruningError("features must be a floating-point tensor [B, N, D]")
    check_features(VisualTokens(features=features, saliency=saliency))
    if combine not in COMBINES:
        raise PruningError(f"combine must be one of {', '.join(COMBINES)}, got {combine!r}")
    alpha = check_alpha(alpha)
    if alpha == 0:
        return torch.ones(features.shape[:2], dtype=torch.float64, device=features.device)
    if saliency is None:
        raise PruningError(f"alpha={alpha} weights tokens by saliency, but saliency is None; pass it, or alpha=0 for pure coverage")
    if (saliency < 0).any():
        raise PruningError(
            f"saliency must be non-negative (a softmax attention), got a minimum of {saliency.min().item():.3g}"
        )
    weights = saliency.to(torch.float64).pow(alpha)
    if not all_finite(weights):
        raise PruningError(f"saliency**alpha overflows float64 at alpha={alpha}; use a smaller alpha")
    return weights


def decided_by_ties(features: torch.Tensor, weights: torch.Tensor, k: int, combine: str) -> torch.Tensor:
    """[B] bool: images where fewer than k tokens score above the others' floor, so that the lowest-index
    tie rule picks the rest of the k: the selection says nothing about the image there.

    A non-zero feature row has a first coverage gain >= 1 (its own similarity); a zero row has none.
    "multi": only tokens with a gain and a weight > 0 score above 0 (all-zero saliency, all-zero features
    and a**alpha underflowing to 0 at a huge alpha all leave none). "add": a token stands out by its gain
    or by a weight above the smallest one.
    """
    has_gain = unit_rows(features)[1]
    if combine == "multi":
        standing_out = has_gain & (weights > 0)
    else:
        standing_out = has_gain | (weights > weights.amin(dim=-1, keepdim=True))
    return standing_out.sum(dim=-1) < k


def check_alpha(alpha: object) -> float:
    """alpha as a float, or a PruningError naming the valid range."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(float(alpha)) or alpha < 0:
        raise PruningError(f"alpha must be a finite number >= 0 (0 = pure coverage, 1 = the paper's), got {alpha!r}")
    return float(alpha)


def choose_variant(batch: int, num_tokens: int, device: torch.device) -> str:
    """The faster exact implementation for this size and device (see the module doc)."""
    if device.type != "cpu":
        return "inplace"
    return "lazy" if batch <= 2 or num_tokens >= LAZY_FROM_TOKENS else "inplace"
