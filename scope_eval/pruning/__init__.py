"""Pruning methods: model-free selection of visual tokens."""

from .base import KeptTokens, PruningError, PruningMethod, VisualTokens, check_budget
from .registry import METHODS, build_method, method_options, register

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
]
