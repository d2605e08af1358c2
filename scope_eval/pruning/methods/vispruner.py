"""``vispruner``: VisPruner's important (CLS attention) plus diverse (duplicates removed) tokens."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch

from ..base import KeptTokens, PruningError, PruningMethod, SelectionWork, VisualTokens
from ..model_dtype import check_selection_dtype, unit_rows_in_dtype
from ..registry import register

# Tokens dropped per matching round at most (VisPruner/llava/model/llava_arch.py:162, r = min(8, ...)).
DROPS_PER_ROUND = 8


@register
@dataclass
class VisPrunerMethod(PruningMethod):
    """VisPruner (Zhang et al., ICCV 2025; github.com/Theia-4869/VisPruner), as its official code computes.

    Of the budget T, ``int(T * important_ratio)`` *important* tokens are the most attended by the CLS
    query; the other tokens, in descending-attention order, form the residual list. Duplicates are then
    removed from it in rounds until T - T_imp *diverse* tokens remain: split the list alternately
    (positions 0, 2, 4, ... = A; 1, 3, 5, ... = B), drop the min(8, surplus) A-tokens most similar
    (max cosine) to some B-token, and continue with [surviving A in descending-similarity order] + B.
    The similarity is on the pre-projector vision features (``VisualTokens.features``), as officially.
    Budget: visual tokens kept per image/crop, returned in spatial order.

    Ties in the attention ranking go to the lower index (the official ``argsort`` is unstable), and an
    odd residual length, where the official code raises an IndexError, is handled (A gets the extra
    token). Each round multiplies the current A and B rows afresh, as officially. ``selection_dtype="model"``
    computes in the features' dtype, as officially; the default computes in float32 (float64 stays).
    """

    name = "vispruner"
    display_name = "VisPruner"
    report_rank = 60
    needs_saliency = True

    important_ratio: float = 0.5  # the official loader's default (VisPruner README: 0.5; MME example 0.75)
    selection_dtype: str = "float32"

    def __post_init__(self) -> None:
        self.selection_dtype = check_selection_dtype(self.name, self.selection_dtype)
        ratio = self.important_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not 0.0 <= float(ratio) <= 1.0:
            raise PruningError(f"vispruner: important_ratio must be a number in [0, 1], got {ratio!r}")

    def selection_flops(self, work: SelectionWork) -> int:
        """The matching rounds' products: 2*|A|*|B|*D per round, from the N - T_imp residual tokens down
        to T - T_imp, at most 8 fewer each round (normalisation and sorts not counted)."""
        important = int(work.keep * self.important_ratio)
        length, target, total = work.tokens - important, work.keep - important, 0
        while target > 0 and length > target:
            half_a, half_b = (length + 1) // 2, length // 2
            if half_b == 0:
                break
            total += 2 * half_a * half_b * work.vision_width
            length -= min(DROPS_PER_ROUND, length - target, half_a)
        return work.groups * total

    def _select(self, tokens: VisualTokens, budget: int) -> KeptTokens:
        important_count = int(budget * self.important_ratio)
        diverse_count = budget - important_count
        # descending attention, equal values lowest index first
        order = torch.sort(tokens.saliency, dim=-1, descending=True, stable=True).indices
        important, residual = order[:, :important_count], order[:, important_count:]
        features = tokens.features
        if self.selection_dtype == "float32" and features.dtype not in (torch.float32, torch.float64):
            features = features.float()
        diverse = remove_duplicates(unit_rows_in_dtype(features), residual, diverse_count)
        indices = torch.cat([important, diverse], dim=1).sort(dim=-1).values
        return KeptTokens(indices=indices)


def remove_duplicates(unit: torch.Tensor, residual: torch.Tensor, keep: int) -> torch.Tensor:
    """[B, keep] tokens left of ``residual`` [B, R] (an ordered list of token indices) by VisPruner's rounds.

    ``unit`` [B, N, C]: the tokens' features scaled to unit length. Each round drops
    r = min(8, R - keep, |A|) tokens of A = residual[0::2], those with the largest max cosine to
    B = residual[1::2]; the survivors keep descending-similarity order and go before B. As the official
    loop does, each round multiplies the current A and B rows afresh (A @ B^T) rather than reading one
    precomputed similarity matrix: the same products, rounded the same way, so float32 near-ties in the
    survivor order come out as officially.
    """
    if keep == 0:  # important_ratio = 1: no diverse tokens
        return residual[:, :0]
    rows = torch.arange(residual.shape[0], device=residual.device).unsqueeze(1)
    with torch.autocast(device_type=unit.device.type, enabled=False):
        while True:
            length = residual.shape[1]
            a, b = residual[:, 0::2], residual[:, 1::2]
            drop = min(DROPS_PER_ROUND, length - keep, a.shape[1])
            if drop <= 0 or b.shape[1] == 0:
                return residual
            scores = (unit[rows, a] @ unit[rows, b].transpose(-1, -2)).amax(dim=-1)  # [B, |A|]
            # descending similarity, equal scores lowest position first (the official argsort is unstable)
            ranked = torch.sort(scores, dim=-1, descending=True, stable=True).indices[:, drop:]
            residual = torch.cat([a.gather(1, ranked), b], dim=1)
