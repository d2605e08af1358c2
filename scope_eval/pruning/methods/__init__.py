"""One file per pruning method; importing this package registers them all."""

from .coverage import CoverageMethod
from .divprune import DivPruneMethod
from .none import KeepAllMethod
from .random import RandomMethod
from .saliency import SaliencyMethod
from .scope import ScopeMethod
from .visionzip import VisionZipMethod

__all__ = [
    "CoverageMethod",
    "DivPruneMethod",
    "KeepAllMethod",
    "RandomMethod",
    "SaliencyMethod",
    "ScopeMethod",
    "VisionZipMethod",
]
