"""``PruningPlan``: a method, its options, its budget and how the budget is split over crops, validated once.

Every edge (the Python API, the lmms-eval model args, the sweep config, the bench CLI) builds the plan with
``PruningPlan.build``; nothing downstream checks the budget's type, lower bound or the method's options
again. The one check that needs the host, the budget against the visual tokens an image can bring, is
``plan.check_available(total)`` with the total the model adapter reports. What a budget means:
docs/semantics.md#budget-unit.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from fractions import Fraction
from typing import Any, Literal

from .base import PruningError, PruningMethod, check_budget
from .cost import SelectionWork
from .registry import build_method

BudgetPolicy = Literal["per_crop", "global"]
BUDGET_POLICIES: tuple[str, ...] = ("per_crop", "global")
_NO_LIMIT = 1 << 62  # the upper bound is the host's (check_available), not known at build time


@dataclass(frozen=True)
class CropSelection:
    """How one image's selection runs: ``method`` keeps ``budget`` of ``tokens`` in each of ``groups`` calls-rows.

    per_crop (and single-crop images): groups = crops, tokens = tokens per crop, budget = the per-crop share
    (``method`` may be a per-crop variant, see PruningMethod.for_crops); global: one row of all crops' tokens.
    """

    method: PruningMethod
    groups: int
    tokens: int
    budget: int
    flattened: bool  # True: the crops are laid side by side as one row (budget_policy=global)

    def work(self, vision_width: int, text_width: int) -> SelectionWork:
        return SelectionWork(self.groups, self.tokens, self.budget, vision_width, text_width)


@dataclass(frozen=True)
class PruningPlan:
    """The validated value every downstream step takes. Build it with ``PruningPlan.build``."""

    method: PruningMethod
    budget: int | None
    budget_policy: BudgetPolicy = "per_crop"
    keep_ratio: float | None = None  # instead of budget: each image keeps ratio_budget(its N) tokens

    @classmethod
    def build(
        cls,
        method: str | PruningMethod,
        budget: Any = None,
        budget_policy: str = "per_crop",
        keep_ratio: Any = None,
        **options: Any,
    ) -> "PruningPlan":
        """Validate everything that does not need the model; raise PruningError naming the fix.

        ``budget``: visual tokens reaching the language model per image, as an int or a whole-number float
        (lmms-eval parses ``budget=64.0`` so); None for method 'none'. Text is refused here: the edges that
        read text (lmms-eval model args) turn it into a number first.
        ``keep_ratio``: instead of ``budget`` (exactly one of the two), the share 0 < r <= 1 of each image's
        own N visual tokens it keeps: K = max(1, floor(r * N + 1/2)) (see ``ratio_budget``).
        """
        if budget_policy not in BUDGET_POLICIES:
            raise PruningError(f"budget_policy must be one of {', '.join(BUDGET_POLICIES)}, got {budget_policy!r}")
        if isinstance(method, PruningMethod):
            if options:
                raise PruningError("pass options either in the method instance or as keywords, not both")
            built = method
        else:
            built = build_method(method, **options)
        built.check_policy(budget_policy)
        if keep_ratio is not None:
            if built.keeps_all:
                raise PruningError(f"method '{built.name}' keeps every token and takes no keep_ratio; drop it")
            if budget is not None:
                raise PruningError(
                    f"pass exactly one of budget (tokens per image) and keep_ratio (share of each image's tokens); got "
                    f"budget={budget!r} and keep_ratio={keep_ratio!r}"
                )
            return cls(built, None, budget_policy, check_keep_ratio(keep_ratio))  # type: ignore[arg-type]
        if built.keeps_all and budget is not None:
            raise PruningError(f"method '{built.name}' keeps every token and takes no budget; drop the budget")
        if not built.keeps_all and budget is None:
            raise PruningError(
                f"method '{built.name}' needs a budget: visual tokens kept per image, e.g. budget=64, or "
                "keep_ratio: the share of each image's visual tokens it keeps, e.g. keep_ratio=0.25"
            )
        if budget is not None:
            budget = check_budget(budget, available=_NO_LIMIT)
            built.check_fits(budget)
        if built.needs_instruction and getattr(built, "text_encoder", None) is None:
            raise PruningError(
                f"method '{built.name}' weighs tokens by their relevance to the instruction, embedded by a CLIP text tower "
                "the LLaVA checkpoints do not ship: pass text_encoder=<path or hub id of a CLIP model>, e.g. "
                "text_encoder=openai/clip-vit-large-patch14-336 (the official code's choice for LLaVA-1.5/NeXT)"
            )
        return cls(built, budget, budget_policy)  # type: ignore[arg-type]

    @property
    def keeps_all(self) -> bool:
        return self.method.keeps_all

    def check_available(self, available: int) -> None:
        """The budget against the most visual tokens one image brings on the host (the adapter's total).
        A keep_ratio never asks for more tokens than an image has."""
        if self.budget is not None:
            check_budget(self.budget, available)

    def ratio_budget(self, num_tokens: int) -> int:
        """Tokens kept of an image's ``num_tokens`` under keep_ratio r: max(1, floor(r * N + 1/2)).

        Half rounds up (not Python's round(), which rounds half to even), and r is taken at the decimal
        value written (0.1 is exactly 1/10, not the binary float just above it), so e.g. r = 0.1 keeps
        3 of 25 tokens and r = 0.25 keeps 86 of 345 on every machine.
        """
        if self.keep_ratio is None:
            raise ValueError("ratio_budget needs a plan built with keep_ratio")
        exact = Fraction(repr(float(self.keep_ratio))) * num_tokens + Fraction(1, 2)
        return max(1, min(num_tokens, math.floor(exact)))

    def image_budget(self, num_tokens: int) -> int | None:
        """Visual tokens kept of an image (all its crops) that brings ``num_tokens``: the absolute budget,
        its keep_ratio share, or None for method 'none'."""
        if self.keep_ratio is not None:
            return self.ratio_budget(num_tokens)
        return self.budget

    def tokens_for(self, num_crops: int, tokens_per_crop: int) -> int:
        """Visual tokens that reach the language model for an image of ``num_crops`` crops."""
        selection = self.crop_selection(num_crops, tokens_per_crop)
        return selection.groups * selection.budget

    def crop_selection(self, num_crops: int, tokens_per_crop: int) -> CropSelection:
        """The one place a budget is split over an image's crops (docs/semantics.md#budget-unit)."""
        if self.keeps_all:
            return CropSelection(self.method, num_crops, tokens_per_crop, tokens_per_crop, flattened=False)
        budget: int = self.image_budget(num_crops * tokens_per_crop)  # type: ignore[assignment]
        if self.keep_ratio is not None:
            self.method.check_fits(budget)  # the budget exists only now, for this image
        if num_crops == 1:
            return CropSelection(self.method, 1, tokens_per_crop, budget, flattened=False)
        if self.budget_policy == "global":
            return CropSelection(self.method, 1, num_crops * tokens_per_crop, budget, flattened=True)
        method, per_crop = self.method.for_crops(budget, num_crops)
        if per_crop < 1:
            raise PruningError(
                f"budget {budget} split over {num_crops} crops (budget_policy=per_crop) leaves 0 tokens per "
                f"crop; use a budget >= {num_crops} or budget_policy=global"
            )
        return CropSelection(method, num_crops, tokens_per_crop, per_crop, flattened=False)

    def describe(self) -> str:
        """``method=scope, budget=64, budget_policy=per_crop, alpha=0.5`` (options that differ from the default)."""
        parts = [f"method={self.method.name}"]
        if self.budget is not None:
            parts.append(f"budget={self.budget}")
        if self.keep_ratio is not None:
            parts.append(f"keep_ratio={self.keep_ratio}")
        parts.append(f"budget_policy={self.budget_policy}")
        parts.extend(f"{key}={value}" for key, value in sorted(self.options().items()))
        return ", ".join(parts)

    def options(self) -> dict[str, Any]:
        """The method's options that differ from their defaults."""
        values = {f.name: (getattr(self.method, f.name), f.default) for f in fields(self.method) if f.init}
        return {name: value for name, (value, default) in values.items() if value != default}


def check_keep_ratio(keep_ratio: Any) -> float:
    """A keep_ratio as a float in (0, 1]; anything else is refused, naming the fix."""
    if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, numbers.Real) or not math.isfinite(float(keep_ratio)):
        raise PruningError(f"keep_ratio must be a number in (0, 1], the share of visual tokens kept, got {keep_ratio!r}")
    if not 0.0 < float(keep_ratio) <= 1.0:
        raise PruningError(
            f"keep_ratio must be in (0, 1] (e.g. 0.25 keeps a quarter of each image's visual tokens), got {keep_ratio!r}; "
            "use method 'none' to keep every token"
        )
    return float(keep_ratio)


__all__ = ["BUDGET_POLICIES", "BudgetPolicy", "CropSelection", "PruningPlan"]
