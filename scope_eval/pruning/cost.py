"""The shapes a method's FLOP model is priced on (``PruningMethod.selection_flops``, ``scoring_flops``).

Conventions are those of scope_eval/cost/flops.py: a multiply-add is 2 FLOPs; norms, softmax, sorts and
gathers are not counted. A method that gives no estimate returns None, and the bench prints "n/a".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SelectionWork:
    """One ``select`` call of a pre-LLM method: ``groups`` independent selections of ``keep`` of ``tokens``."""

    groups: int  # crops selected separately (budget_policy=per_crop), else 1
    tokens: int  # candidates per selection (N, or n*N for one selection over all crops)
    keep: int  # kept per selection
    vision_width: int  # D, the pre-projector feature width
    text_width: int  # d, the language model's width (projected tokens)
    projected: bool = False  # the candidates are already in the LM's space (Qwen's post-merger tokens)

    def projector_flops(self) -> int:
        """Projecting all candidates of one selection through LLaVA's 2-layer MLP projector (0 when they
        already are projected)."""
        if self.projected:
            return 0
        return 2 * self.tokens * (self.vision_width * self.text_width + self.text_width * self.text_width)


@dataclass(frozen=True)
class DropWork:
    """One drop of an in-LLM method, priced where it happens."""

    tokens: int  # T, the sequence length entering the drop layer
    visual: int  # visual tokens present before the drop
    kept: int  # visual tokens that stay
    hidden: int  # d, the language model's width
    kv_width: int  # key/value heads * head size


__all__ = ["DropWork", "SelectionWork"]
