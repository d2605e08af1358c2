"""Pruning methods: model-free selection of visual tokens."""

from .base import KeptTokens, PruningError, PruningMethod, VisualTokens, check_budget
from .greedy import scope_order, scope_select
from .methods import (
    CoverageMethod,
    DivPruneMethod,
    KeepAllMethod,
    RandomMethod,
    SaliencyMethod,
    ScopeMethod,
    VisionZipMethod,
)
from .registry import METHODS, build_method, method_options, register

__all__ = [
    "CoverageMethod",
    "DivPruneMethod",
    "KeepAllMethod",
    "KeptTokens",
    "METHODS",
    "PruningError",
    "PruningMethod",
    "RandomMethod",
    "SaliencyMethod",
    "ScopeMethod",
    "VisionZipMethod",
    "VisualTokens",
    "build_method",
    "check_budget",
    "method_options",
    "register",
    "scope_order",
    "scope_select",
]
