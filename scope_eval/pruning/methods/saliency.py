"""``saliency``: the paper's "saliency-only" ablation."""

from __future__ import annotations

from dataclasses import dataclass

from ..base import KeptTokens, PruningMethod, SelectionWork, VisualTokens
from ..registry import register
from ..similarity import top_k_lowest_index


@register
@dataclass
class SaliencyMethod(PruningMethod):
    """Keeps the ``budget`` tokens with the largest CLS attention a, equal values lowest index first.

    SCOPE paper (arXiv 2510.24214), ablation "saliency only". Budget: visual tokens kept per image/crop.
    """

    name = "saliency"
    display_name = "saliency only"
    report_rank = 30
    needs_saliency = True

    def selection_flops(self, work: SelectionWork) -> int:
        return 0  # a top-k

    def _select(self, tokens: VisualTokens, budget: int) -> KeptTokens:
        indices = top_k_lowest_index(tokens.saliency, budget)
        # Fewer than `budget` tokens above the smallest saliency (e.g. all zero): the rest go by index.
        above_floor = (tokens.saliency > tokens.saliency.amin(dim=-1, keepdim=True)).sum(dim=-1)
        return KeptTokens(indices=indices.sort(dim=-1).values, degenerate=above_floor < budget)
