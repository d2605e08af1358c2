"""scope_eval: evaluate visual-token pruning (SCOPE and baselines) inside LLaVA models.

    from scope_eval import prune, scope, restore
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["PruningError", "PruningHandle", "handle_of", "prune", "restore", "scope"]


def __getattr__(name: str) -> Any:
    # Lazy: `scope-eval report` and lmms-eval's entry-point scan should not pay for importing transformers.
    if name == "PruningError":
        from scope_eval.pruning import PruningError

        return PruningError
    if name in __all__:
        import scope_eval.adapters as adapters

        return getattr(adapters, name)
    raise AttributeError(f"module 'scope_eval' has no attribute {name!r}")
