"""``scope``: SCOPE, saliency-coverage greedy selection (the method under study)."""

from __future__ import annotations

from dataclasses import dataclass

from ..base import KeptTokens, PruningError, PruningMethod, SelectionWork, VisualTokens
from ..greedy import COMBINES, check_alpha, decided_by_ties, scope_select, scope_weights
from ..model_dtype import check_selection_dtype, scope_order_in_dtype
from ..registry import register


@register
@dataclass
class ScopeMethod(PruningMethod):
    """SCOPE (Deng et al., NeurIPS 2025, https://arxiv.org/abs/2510.24214).

    Greedily keeps the token with the largest coverage gain g_j combined with its CLS saliency a_j:
    g_j * a_j**alpha (``combine="multi"``, the paper's) or g_j + a_j**alpha (``"add"``); see
    scope_eval.pruning.greedy and docs/semantics.md#scope. Needs the CLS saliency (``coverage`` is alpha = 0 without
    it). Budget: visual tokens kept per image/crop. ``selection_dtype="model"`` computes in the features'
    dtype as the official code does (scope_eval.pruning.model_dtype); default float32.
    """

    name = "scope"
    display_name = "SCOPE"
    report_rank = 10
    needs_saliency = True

    alpha: float = 1.0  # exponent of the CLS saliency in the greedy gain (0: coverage only)
    combine: str = "multi"  # gain x saliency**alpha ("multi", the paper's) or gain + saliency**alpha ("add")
    selection_dtype: str = "float32"  # "model": compute in the features' dtype, as the official code does

    def __post_init__(self) -> None:
        self.alpha = check_alpha(self.alpha)
        self.selection_dtype = check_selection_dtype(self.name, self.selection_dtype)
        if self.combine not in COMBINES:
            raise PruningError(f"scope: combine must be one of {', '.join(COMBINES)}, got {self.combine!r}")

    def selection_flops(self, work: SelectionWork) -> int:
        """Cosine similarity 2*N^2*D, then K greedy steps each touching the N x N matrix about 3 times
        (subtract the coverage, clamp at 0, sum): 3*K*N^2. The exact lazy greedy does less."""
        return work.groups * (2 * work.tokens**2 * work.vision_width + 3 * work.keep * work.tokens**2)

    def _select(self, tokens: VisualTokens, budget: int) -> KeptTokens:
        if self.selection_dtype == "model":
            order = scope_order_in_dtype(tokens.features, tokens.saliency, budget, self.alpha, self.combine)
            indices = order.sort(dim=-1).values
        else:
            indices = scope_select(tokens.features, tokens.saliency, budget, self.alpha, self.combine, warn_degenerate=False)
        weights = scope_weights(tokens.features, tokens.saliency, self.alpha, self.combine)
        return KeptTokens(indices=indices, degenerate=decided_by_ties(tokens.features, weights, budget, self.combine))
