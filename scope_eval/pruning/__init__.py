"""Pruning methods: model-free selection of visual tokens.

Every method is looked up by name in the registry (``build_method("scope", alpha=1.0)``); the method
classes live in ``scope_eval.pruning.methods.<name>``, one file each, discovered automatically.
"""

from .base import KeptTokens, PruningError, PruningMethod, VisualTokens, check_budget
from .greedy import scope_order, scope_select
from .registry import METHODS, build_method, method_options, register

# Last, so that method files and plugins can import the names above from scope_eval.pruning.
from . import methods  # noqa: E402, F401  (imports every method file, and plugins, which register themselves)

__all__ = [
    "KeptTokens",
    "METHODS",
    "PruningError",
    "PruningMethod",
    "VisualTokens",
    "build_method",
    "check_budget",
    "method_options",
    "register",
    "scope_order",
    "scope_select",
]
