"""A complete pruning method in one file: keeps the first `budget` visual tokens of every image.

Dropped into scope_eval/pruning/methods/ it is registered by itself; shipped in another package it is
registered through that package's entry point (see README, "Adding a method"):

    [project.entry-points."scope_eval.methods"]
    keep_first = "keep_first_plugin"

Either way `prune(model, "keep_first", 64)`, the lmms-eval model args `method=keep_first,budget=64` and
sweep configs accept it, the bench costs it and reports place it. tests/test_method_plugins.py installs
this file as a package and checks all of that.
"""

from dataclasses import dataclass

import torch

from scope_eval.pruning import KeptTokens, PruningError, PruningMethod, register
from scope_eval.pruning.cost import SelectionWork


@register
@dataclass
class KeepFirstMethod(PruningMethod):
    name = "keep_first"  # what users type: prune(model, "keep_first", 64), method=keep_first
    display_name = "Keep first"  # how plots name it
    report_rank = 85  # its row in report tables: after random (80), before the in-LLM methods (90+)

    # Options are dataclass fields (method=keep_first,budget=64,offset=8 in lmms-eval model args).
    offset: int = 0

    def __post_init__(self) -> None:  # an option's validation, before any model loads
        if isinstance(self.offset, bool) or not isinstance(self.offset, int) or self.offset < 0:
            raise PruningError(f"keep_first: offset must be a whole number >= 0, got {self.offset!r}")

    def selection_flops(self, work: SelectionWork) -> int:
        return 0  # an arange: nothing to multiply

    # The plan has validated the budget (a whole number, at most the tokens an image brings), the base
    # class refuses NaN features and turns gradients off; _select only decides which tokens survive.
    def _select(self, tokens, budget):
        start = min(self.offset, tokens.num_tokens - budget)
        indices = torch.arange(start, start + budget, device=tokens.features.device).expand(tokens.batch, budget)
        return KeptTokens(indices=indices)
