"""``PruningPlan``: a method, its options, its budget and how the budget is split over crops, validated once.

Every edge (the Python API, the lmms-eval model args, the sweep config, the bench CLI) builds the plan with
``PruningPlan.build``; nothing downstream checks the budget's type, lower bound or the method's options
again. The one check that needs the host, the budget against the visual tokens an image can bring, is
``plan.check_available(total)`` with the total the model adapter reports. What a budget means:
docs/semantics.md#budget-unit.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
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

    @classmethod
    def build(cls, method: str | PruningMethod, budget: Any = None, budget_policy: str = "per_crop", **options: Any) -> "PruningPlan":
        """Validate everything that does not need the model; raise PruningError naming the fix.

        ``budget``: visual tokens reaching the language model per image, as an int or a whole-number float
        (lmms-eval parses ``budget=64.0`` so); None for method 'none'. Text is refused here: the edges that
        read text (lmms-eval model args) turn it into a number first.
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
        if built.keeps_all and budget is not None:
            raise PruningError(f"method '{built.name}' keeps every token and takes no budget; drop the budget")
        if not built.keeps_all and budget is None:
            raise PruningError(f"method '{built.name}' needs a budget: visual tokens kept per image, e.g. budget=64")
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
        """The budget against the most visual tokens one image brings on the host (the adapter's total)."""
        if self.budget is not None:
            check_budget(self.budget, available)

    def tokens_for(self, num_crops: int, tokens_per_crop: int) -> int:
        """Visual tokens that reach the language model for an image of ``num_crops`` crops."""
        selection = self.crop_selection(num_crops, tokens_per_crop)
        return selection.groups * selection.budget

    def crop_selection(self, num_crops: int, tokens_per_crop: int) -> CropSelection:
        """The one place a budget is split over an image's crops (docs/semantics.md#budget-unit)."""
        if self.keeps_all:
            return CropSelection(self.method, num_crops, tokens_per_crop, tokens_per_crop, flattened=False)
        budget: int = self.budget  # type: ignore[assignment]
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
        parts.append(f"budget_policy={self.budget_policy}")
        parts.extend(f"{key}={value}" for key, value in sorted(self.options().items()))
        return ", ".join(parts)

    def options(self) -> dict[str, Any]:
        """The method's options that differ from their defaults."""
        values = {f.name: (getattr(self.method, f.name), f.default) for f in fields(self.method) if f.init}
        return {name: value for name, (value, default) in values.items() if value != default}


__all__ = ["BUDGET_POLICIES", "BudgetPolicy", "CropSelection", "PruningPlan"]
