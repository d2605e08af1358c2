"""``coverage``: SCOPE without saliency (alpha = 0), the paper's "coverage only" ablation."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import KeptTokens, PruningMethod, SelectionWork, VisualTokens
from ..greedy import decided_by_ties, scope_select
from ..registry import register


@register
@dataclass
class CoverageMethod(PruningMethod):
    """Greedy facility-location coverage of the visual features: SCOPE's greedy with every weight 1.

    SCOPE paper (arXiv 2510.24214), ablation "coverage only". Needs no saliency.
    Budget: visual tokens kept per image/crop.
    """

    name = "coverage"
    display_name = "coverage only"
    report_rank = 20

    def selection_flops(self, work: SelectionWork) -> int:
        """SCOPE's greedy without saliency: the same 2*N^2*D + 3*K*N^2."""
        return work.groups * (2 * work.tokens**2 * work.vision_width + 3 * work.keep * work.tokens**2)

    def _select(self, tokens: VisualTokens, budget: int) -> KeptTokens:
        every_weight_one = torch.ones(tokens.features.shape[:2], dtype=torch.float64, device=tokens.features.device)
        return KeptTokens(
            indices=scope_select(tokens.features, None, budget, alpha=0.0, warn_degenerate=False),
            degenerate=decided_by_ties(tokens.features, every_weight_one, budget, "multi"),
        )
