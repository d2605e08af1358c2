"""``none``: the unpruned reference."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import KeptTokens, PruningMethod, SelectionWork, VisualTokens
from ..registry import register


@register
@dataclass
class KeepAllMethod(PruningMethod):
    """Keeps every visual token: the "vanilla" upper bound of the paper's tables.

    Takes no budget (``budget=None``); the language model sees all N tokens per image.
    """

    name = "none"
    display_name = "no pruning"
    report_rank = 0
    keeps_all = True

    def selection_flops(self, work: SelectionWork) -> int:
        return 0

    def _select(self, tokens: VisualTokens, budget: int) -> KeptTokens:
        indices = torch.arange(tokens.num_tokens, device=tokens.features.device)
        return KeptTokens(indices=indices.expand(tokens.batch, -1))
