"""Model adapters: where pruning methods sit inside host models, and the public API."""

from .api import handle_of, prune, restore, scope
from .base import PruningHandle
from .core import BUDGET_POLICIES, PruningPlan

__all__ = ["BUDGET_POLICIES", "PruningHandle", "PruningPlan", "handle_of", "prune", "restore", "scope"]
