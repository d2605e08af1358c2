"""``scope``: SCOPE, saliency-coverage greedy selection (the method under study)."""

from __future__ import annotations

from dataclasses import dataclass

from ..base import KeptTokens, PruningError, PruningMethod, VisualTokens
from ..greedy import COMBINES, check_alpha, scope_select
from ..registry import register


@register
@dataclass
class ScopeMethod(PruningMethod):
    """SCOPE (Deng et al., NeurIPS 2025, https://arxiv.org/abs/2510.24214).

    Greedily keeps the token with the largest coverage gain g_j combined with its CLS saliency a_j:
    g_j * a_j**alpha (``combine="multi"``, the paper's) or g_j + a_j**alpha (``"add"``); see
    scope_eval.pruning.greedy and SPEC section 2. Needs the CLS saliency (``coverage`` is alpha = 0 without
    it). Budget: visual tokens kept per image/crop.
    """

    name = "scope"
    needs_saliency = True

    alpha: float = 1.0
    combine: str = "multi"

    def __post_init__(self) -> None:
        self.alpha = check_alpha(self.alpha)
        if self.combine not in COMBINES:
            raise PruningError(f"scope: combine must be one of {', '.join(COMBINES)}, got {self.combine!r}")

    def _select(self, tokens: VisualTokens, budget: int) -> KeptTokens:
        return KeptTokens(indices=scope_select(tokens.features, tokens.saliency, budget, self.alpha, self.combine))
