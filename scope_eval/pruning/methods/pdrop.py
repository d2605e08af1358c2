"""``pdrop``: PyramidDrop (Xing et al., CVPR 2025), multi-stage drops inside the language model."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import PruningError
from ..cost import DropWork
from ..llm_stage import LlmStageMethod, LlmTokens, last_query_scoring_flops, top_k_ascending
from ..registry import register

POSITIONS = ("renumbered", "original")
SCHEDULES = ("published", "search")

# The authors' own ratio for a (drop layers, budget) of LLaVA-1.5 (576 visual tokens, 32 decoder layers,
# layer-averaged budget). Only one is published: Cooperx521/PyramidDrop issue #29 gives lambda = 0.19
# with layers (2, 8, 16) for 64 tokens, i.e. counts 109 / 20 / 3 (average 62.94). Every other budget
# takes the search.
PUBLISHED_RATIOS = {((2, 8, 16), 64, 576, 32): 0.19}


@register
@dataclass
class PyramidDropMethod(LlmStageMethod):
    """Before each layer of ``layers`` (0-based) the visual tokens shrink to int(N * ratio**j), j = 1, 2, ...

    ``ratio``: the authors' published one where it exists for this budget (``schedule_from="published"``, only
    64 tokens with layers (2, 8, 16) on 576 tokens / 32 layers: 0.19, counts 109 / 20 / 3); otherwise, or
    with ``schedule_from="search"``, solved from the budget as the authors' recipe says (issue #29: keep the
    lambda, lambda^2, lambda^3 structure and solve the average for the target): the largest ratio whose
    counts meet the budget unit. Score at a drop before layer l: layer l's own input norm and q/k
    projections applied to the hidden states entering it (the "next layer" of the official code); the
    attention of the LAST token, mean over heads; top counts stay. ``positions="renumbered"`` (official):
    after each drop the sequence is renumbered 0..L'-1, so later layers, the next stage's scores and
    decoding use RoPE at the renumbered positions; ``positions="original"`` keeps every token's original
    position (as FastV and DART do).
    Default layers (2, 8, 16) are the authors' low-budget recipe; their shipped default is (8, 16, 24).
    With 576 visual tokens on a 32-layer model the smallest layer-averaged budget these schedules reach
    is 52 (default) and 164 (8, 16, 24), the int() counts included (144 would need every stage to keep a
    single token). See docs/semantics.md#pdrop and docs/official_differences_llm.md.
    """

    name = "pdrop"
    display_name = "PDrop"
    report_rank = 110
    layers_option = "layers"
    layers: tuple[int, ...] = (2, 8, 16)
    positions: str = "renumbered"
    schedule_from: str = "published"

    def __post_init__(self) -> None:
        if self.positions not in POSITIONS:
            raise PruningError(f"pdrop: positions must be one of {', '.join(POSITIONS)} (official: renumbered), got {self.positions!r}")
        if self.schedule_from not in SCHEDULES:
            raise PruningError(f"pdrop: schedule_from must be one of {', '.join(SCHEDULES)}, got {self.schedule_from!r}")
        if isinstance(self.layers, str):  # model_args cannot carry a comma list: layers=2-8-16
            try:
                self.layers = tuple(int(part) for part in self.layers.replace(";", "-").split("-") if part.strip())
            except ValueError:
                raise PruningError(f"pdrop: layers must be decoder-layer indices such as 2-8-16, got {self.layers!r}") from None
        if isinstance(self.layers, list):  # YAML gives lists
            self.layers = tuple(self.layers)
        if isinstance(self.layers, int):
            self.layers = (self.layers,)
        super().__post_init__()

    def scoring_flops(self, work: DropWork) -> int:
        return last_query_scoring_flops(work)

    def drop_layers(self) -> tuple[int, ...]:
        return self.layers

    def renumbers_positions(self) -> bool:
        return self.positions == "renumbered"

    def published_ratio(self, budget: int, num_visual: int, num_layers: int) -> float | None:
        """The authors' ratio for this setting (PUBLISHED_RATIOS), or None: then the search decides."""
        if self.schedule_from != "published" or self.budget_unit != "layer_average":
            return None
        return PUBLISHED_RATIOS.get((self.layers, budget, num_visual, num_layers))

    def counts(self, ratio: float, num_visual: int) -> tuple[int, ...]:
        return tuple(int(num_visual * ratio ** (j + 1)) for j in range(len(self.layers)))

    def budget_measure(self, counts: tuple[int, ...], num_visual: int, num_layers: int) -> float:
        """The budget unit's value of a schedule with these counts."""
        per_layer, current = [], num_visual
        for layer in range(num_layers):
            if layer in self.layers:
                current = counts[self.layers.index(layer)]
            per_layer.append(current)
        if self.budget_unit == "after_layer":
            per_layer = per_layer[self.layers[0]:]
        return sum(per_layer) / len(per_layer)

    def keep_counts(self, budget: int, num_visual: int, num_layers: int) -> tuple[int, ...]:
        published = self.published_ratio(budget, num_visual, num_layers)
        if published is not None:
            return self.counts(published, num_visual)
        low, high = 0.0, 1.0
        if self.budget_measure(self.counts(high, num_visual), num_visual, num_layers) <= budget:
            return self.counts(high, num_visual)
        for _ in range(60):  # the measure is non-decreasing in the ratio: bisect for the largest that fits
            middle = (low + high) / 2
            if self.budget_measure(self.counts(middle, num_visual), num_visual, num_layers) <= budget:
                low = middle
            else:
                high = middle
        counts = self.counts(low, num_visual)
        if counts[-1] < 1:
            ones = self.budget_measure((1,) * len(self.layers), num_visual, num_layers)
            raise PruningError(
                f"pdrop: budget {budget} (budget_unit={self.budget_unit}) cannot be reached with layers "
                f"{list(self.layers)} on {num_layers} layers and {num_visual} visual tokens (keeping 1 token per "
                f"stage already averages {ones:.1f}); raise the budget, use earlier or fewer layers, or "
                "budget_unit=after_layer"
            )
        return counts

    def choose(self, tokens: LlmTokens, keep: int, stage: int) -> torch.Tensor:
        # the official code casts the softmax back to the model's dtype before the head mean and top-k
        attention = tokens.attention("at", tokens.last_query).to(tokens.hidden.dtype)  # [B, H, 1, L]
        received = attention.mean(dim=1)[:, 0].gather(1, tokens.visual)
        return top_k_ascending(received, keep)
