"""A complete pruning method in one file: keeps the first `budget` visual tokens of every image.

Dropped into scope_eval/pruning/methods/ it is registered by itself; shipped in another package it is
registered through that package's entry point (see README, "Adding a method"):

    [project.entry-points."scope_eval.methods"]
    keep_first = "keep_first_plugin"

Either way `prune(model, "keep_first", 64)`, the lmms-eval model args `method=keep_first,budget=64` and
sweep configs accept it. tests/test_method_plugins.py installs this file as a package and runs it.
"""

from dataclasses import dataclass

import torch

from scope_eval.pruning import KeptTokens, PruningMethod, register


@register
@dataclass
class KeepFirstMethod(PruningMethod):
    name = "keep_first"  # what users type: prune(model, "keep_first", 64), method=keep_first

    # The base class has already checked the budget (a whole number in 1..N), refused NaN features and
    # turned gradients off; _select only decides which of the N tokens of each image survive.
    def _select(self, tokens, budget):
        indices = torch.arange(budget, device=tokens.features.device).expand(tokens.batch, budget)
        return KeptTokens(indices=indices)
