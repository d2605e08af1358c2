"""scope_eval: evaluate visual-token pruning (SCOPE and baselines) inside LLaVA models."""

__version__ = "0.1.0"
