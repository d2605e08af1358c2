"""``coverage``: SCOPE without saliency (alpha = 0), the paper's "coverage only" ablation."""

from __future__ import annotations

from dataclasses import dataclass

from ..base import KeptTokens, PruningMethod, VisualTokens
from ..greedy import scope_select
from ..registry import register


@register
@dataclass
class CoverageMethod(PruningMethod):
    """Greedy facility-location coverage of the visual features: SCOPE's greedy with every weight 1.

    SCOPE paper (arXiv 2510.24214), ablation "coverage only". Needs no saliency.
    Budget: visual tokens kept per image/crop.
    """

    name = "coverage"

    def _select(self, tokens: VisualTokens, budget: int) -> KeptTokens:
        return KeptTokens(indices=scope_select(tokens.features, None, budget, alpha=0.0))
