"""Model adapters: where pruning methods sit inside host models, and the public API.

Imports are lazy, so that ``scope_eval.adapters.families`` (the unpruned token totals a sweep config is
checked against) can be read without importing torch and transformers.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BUDGET_POLICIES", "PruningHandle", "PruningPlan", "handle_of", "prune", "restore", "scope"]


def __getattr__(name: str) -> Any:
    if name in ("handle_of", "prune", "restore", "scope"):
        from . import api

        return getattr(api, name)
    if name == "PruningHandle":
        from .base import PruningHandle

        return PruningHandle
    if name in ("BUDGET_POLICIES", "PruningPlan"):
        from scope_eval.pruning import plan

        return getattr(plan, name)
    raise AttributeError(f"module 'scope_eval.adapters' has no attribute {name!r}")
