"""``visionzip``: dominant tokens by CLS attention plus merged contextual tokens."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch

from ..base import KeptTokens, PruningError, PruningMethod, VisualTokens, all_finite
from ..registry import register
from ..similarity import cross_cosine_similarity, top_k_lowest_index, working_precision

# Contextual share of the budget: the paper's splits 54+10 (64), 108+20 (128), 162+30 (192) are
# budget * 10 // 64 contextual tokens, the rest dominant.
CONTEXTUAL_PER_64 = 10


@register
@dataclass
class VisionZipMethod(PruningMethod):
    """VisionZip (Yang et al., CVPR 2025, https://arxiv.org/abs/2412.04467), training-free.

    Dominant tokens: the ``budget - contextual`` tokens with the largest CLS attention (ties lowest index),
    kept as they are. Contextual tokens: among the remaining R tokens (in index order), ``contextual``
    evenly spaced targets (positions floor(t * R / contextual)); every other remaining token joins the target
    it is most similar to by cosine similarity of the attention keys (``tokens.keys``; the features when
    the host gives no keys; ties to the lowest target), and each contextual token is the mean of its
    group's features (the target included). Returned as ``indices`` = dominant tokens (ascending) and
    ``merged`` [B, contextual, D], in the features' dtype.

    ``contextual``: how many merged tokens; default ``budget * 10 // 64``, which reproduces the paper's
    splits (10 / 20 / 30 at 64 / 128 / 192). Budget: visual tokens reaching the language model per
    image/crop, dominant + contextual.
    """

    name = "visionzip"
    needs_saliency = True

    contextual: int | None = None

    def __post_init__(self) -> None:
        if self.contextual is None:
            return
        if isinstance(self.contextual, bool) or not isinstance(self.contextual, numbers.Integral) or self.contextual < 0:
            raise PruningError(
                f"visionzip: contextual must be a whole number >= 0 of merged tokens, got {self.contextual!r}; "
                "leave it unset for the paper's split (budget * 10 // 64)"
            )
        self.contextual = int(self.contextual)

    def split(self, budget: int) -> tuple[int, int]:
        """(dominant, contextual) token counts for a budget."""
        contextual = budget * CONTEXTUAL_PER_64 // 64 if self.contextual is None else self.contextual
        if contextual > budget:
            raise PruningError(f"visionzip: contextual={contextual} exceeds the budget {budget}; lower contextual")
        return budget - contextual, contextual

    def _select(self, tokens: VisualTokens, budget: int) -> KeptTokens:
        dominant_count, contextual_count = self.split(budget)
        by_attention = top_k_lowest_index(tokens.saliency, tokens.num_tokens)
        dominant = by_attention[:, :dominant_count].sort(dim=-1).values
        if contextual_count == 0:
            return KeptTokens(indices=dominant)
        remaining = by_attention[:, dominant_count:].sort(dim=-1).values  # [B, R], spatial order
        merged = merge_around_targets(tokens, remaining, contextual_count)
        return KeptTokens(indices=dominant, merged=merged)


def merge_around_targets(tokens: VisualTokens, remaining: torch.Tensor, count: int) -> torch.Tensor:
    """[B, count, D] means of the remaining tokens grouped around evenly spaced targets (see the class)."""
    batch, num_remaining = remaining.shape
    metric = tokens.keys if tokens.keys is not None else tokens.features
    if not all_finite(metric):
        raise PruningError("visionzip: the attention keys contain NaN or inf; check the vision tower")
    metric = _gather_tokens(metric, remaining)
    features = working_precision(_gather_tokens(tokens.features, remaining))
    target_slots = torch.arange(count, device=remaining.device) * num_remaining // count
    similarity = cross_cosine_similarity(metric, metric[:, target_slots])  # [B, R, count]
    group = similarity.argmax(dim=-1)  # first maximum: ties to the lowest target
    group[:, target_slots] = torch.arange(count, device=remaining.device)  # a target is in its own group
    sums = features.new_zeros(batch, count, features.shape[-1]).scatter_add_(
        1, group[:, :, None].expand_as(features), features
    )
    sizes = torch.zeros(batch, count, device=remaining.device).scatter_add_(1, group, torch.ones_like(group, dtype=torch.float))
    return (sums / sizes[:, :, None]).to(tokens.features.dtype)


def _gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[b, index[b, r]] for every b, r: [B, R, D]."""
    return torch.gather(x, 1, index[:, :, None].expand(-1, -1, x.shape[-1]))
