"""``fastv``: FastV (Chen et al., ECCV 2024), inside the language model."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..cost import DropWork
from ..llm_stage import LlmStageMethod, LlmTokens, last_query_scoring_flops, one_drop_keep, top_k_ascending
from ..registry import register


@register
@dataclass
class FastVMethod(LlmStageMethod):
    """Drops visual tokens before decoder layer ``layer`` (0-based; layers 0..layer-1 see them all).

    Score of a visual token: the attention it receives from the LAST token's query in layer ``layer-1``
    (that layer's own projections on its input, RoPE at original positions), averaged over heads; the
    top-R stay (equal scores: lower index first). Original positions are kept. The selection is made on
    the prefill and frozen for decoding, as in FastV's KV-cache variant. Official code:
    pkunlp-icler/FastV, see docs/official_differences_llm.md.
    Budget: see scope_eval.pruning.llm_stage (layer_average: R with (layer*N + (layers-layer)*R)/layers <= K).
    """

    name = "fastv"
    display_name = "FastV"
    report_rank = 90
    layer: int = 2  # 0-based decoder layer before which visual tokens are dropped

    def scoring_flops(self, work: DropWork) -> int:
        return last_query_scoring_flops(work)

    def drop_layers(self) -> tuple[int, ...]:
        return (self.layer,)

    def keep_counts(self, budget: int, num_visual: int, num_layers: int) -> tuple[int, ...]:
        return (one_drop_keep(budget, self.budget_unit, self.layer, num_visual, num_layers),)

    def choose(self, tokens: LlmTokens, keep: int, stage: int) -> torch.Tensor:
        # the official code casts the softmax back to the model's dtype before the head mean and top-k
        attention = tokens.attention("before", tokens.last_query).to(tokens.hidden.dtype)  # [B, H, 1, L]
        received = attention.mean(dim=1)[:, 0].gather(1, tokens.visual)  # [B, n]
        return top_k_ascending(received, keep)
