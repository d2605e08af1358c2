"""``dart``: DART (Wen et al., 2025), duplication-aware token reduction inside the language model."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import PruningError
from ..cost import DropWork
from ..llm_stage import LlmStageMethod, LlmTokens, one_drop_keep
from ..model_dtype import unit_rows_in_dtype
from ..registry import register

COUNTS = ("budget", "official")


@register
@dataclass
class DartMethod(LlmStageMethod):
    """Drops visual tokens before decoder layer ``layer`` (0-based), keeping pivots and what they do not duplicate.

    Pivots: the ``pivots`` visual tokens and the ``pivots`` tokens after the image whose keys (layer
    ``layer-1``, after RoPE, heads side by side) have the largest L1 norm. Visited in the order of a Python
    set of their absolute positions (as the official code iterates them), each pivot takes its quota of
    the remaining visual candidates LEAST cosine-similar to it, the hidden states compared after the
    model's final norm. Kept: the visual pivots plus every pivot's picks, R in all (R from the budget
    unit); the quota of R - pivots over 2*pivots pivots is split evenly, the first pivots taking one
    more while a remainder is left (the official code gives each floor(B/8), so it keeps 4 + 8*floor(B/8)).
    Original positions are kept. ``count="official"`` keeps the official count for R instead:
    pivots + 2*pivots*floor(R / (2*pivots)), i.e. 4 + 8*floor(R/8) (68 / 132 / 196 at R = 64 / 128 / 192),
    which can exceed the budget by up to ``pivots`` tokens; the realised count is recorded either way.
    Key norms and cosines are computed in the model's dtype, as officially. Official code:
    ZichenWen1/DART, see docs/official_differences_llm.md.
    """

    name = "dart"
    display_name = "DART"
    report_rank = 120
    layer: int = 2
    pivots: int = 4
    count: str = "budget"

    def __post_init__(self) -> None:
        if isinstance(self.pivots, bool) or not isinstance(self.pivots, int) or self.pivots < 1:
            raise PruningError(f"dart: pivots must be a whole number >= 1 (official 4), got {self.pivots!r}")
        if self.count not in COUNTS:
            raise PruningError(f"dart: count must be one of {', '.join(COUNTS)} (budget: exactly R; official: 4 + 8*floor(R/8)), got {self.count!r}")
        super().__post_init__()

    def scoring_flops(self, work: DropWork) -> int:
        """The keys of the T tokens (2*T*d*d_kv) and, per kept token, its cosine to the N candidates
        (2*N*R*d, an upper bound on the pivot loop)."""
        return 2 * work.tokens * work.hidden * work.kv_width + 2 * work.visual * work.kept * work.hidden

    def drop_layers(self) -> tuple[int, ...]:
        return (self.layer,)

    def keep_counts(self, budget: int, num_visual: int, num_layers: int) -> tuple[int, ...]:
        keep = one_drop_keep(budget, self.budget_unit, self.layer, num_visual, num_layers)
        if self.count == "official":  # every one of the 2*pivots pivots takes floor(R / (2*pivots)) (l.409)
            keep = min(self.pivots + 2 * self.pivots * (keep // (2 * self.pivots)), num_visual)
        return (keep,)

    def choose(self, tokens: LlmTokens, keep: int, stage: int) -> torch.Tensor:
        # in the model's dtype, as officially (a float32 copy would rank half-precision near-ties differently)
        key_norms = tokens.keys("before").abs().sum(dim=-1)  # [B, L] L1 norm per token
        normed = unit_rows_in_dtype(tokens.final_norm(tokens.hidden))
        rows = [self._choose_row(norms, unit, visual, keep) for norms, unit, visual in zip(key_norms, normed, tokens.visual)]
        return torch.stack(rows)

    def _choose_row(self, key_norms: torch.Tensor, unit: torch.Tensor, visual: torch.Tensor, keep: int) -> torch.Tensor:
        count = visual.shape[0]
        visual_order = torch.sort(key_norms[visual], descending=True, stable=True).indices
        if keep <= self.pivots:
            return visual_order[:keep].sort().values
        image_pivots = visual[visual_order[: self.pivots]]
        after = torch.arange(int(visual[-1]) + 1, key_norms.shape[0], device=visual.device)
        text_pivots = after[torch.sort(key_norms[after], descending=True, stable=True).indices[: self.pivots]]
        # The official loop runs over list(set(image + text pivots)) of absolute positions: CPython's set
        # order, which is neither rank nor position order. The order matters (each pivot removes its picks
        # from the candidates), so the same construction gives the same order.
        pivot_order = list(set(image_pivots.tolist() + text_pivots.tolist()))
        quota, extra = divmod(keep - self.pivots, len(pivot_order))
        position_to_index = {int(p): i for i, p in enumerate(visual.tolist())}
        kept = [position_to_index[int(p)] for p in image_pivots.tolist()]
        candidate = torch.ones(count, dtype=torch.bool, device=visual.device)
        candidate[kept] = False
        for turn, pivot in enumerate(pivot_order):
            take = quota + (1 if turn < extra else 0)
            if take == 0:
                continue
            remaining = candidate.nonzero().squeeze(1)
            similarity = unit[visual[remaining]] @ unit[pivot]
            picks = remaining[torch.sort(similarity, stable=True).indices[:take]]  # least similar first
            candidate[picks] = False
            kept.extend(picks.tolist())
        return torch.tensor(sorted(kept), dtype=torch.long, device=visual.device)
