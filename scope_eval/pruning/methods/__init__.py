"""One file per pruning method; importing this package registers them all."""

from .coverage import CoverageMethod
from .dart import DartMethod
from .divprune import DivPruneMethod
from .fastv import FastVMethod
from .none import KeepAllMethod
from .pdrop import PyramidDropMethod
from .random import RandomMethod
from .saliency import SaliencyMethod
from .scope import ScopeMethod
from .visionzip import VisionZipMethod

__all__ = [
    "CoverageMethod",
    "DartMethod",
    "DivPruneMethod",
    "FastVMethod",
    "KeepAllMethod",
    "PyramidDropMethod",
    "RandomMethod",
    "SaliencyMethod",
    "ScopeMethod",
    "VisionZipMethod",
]
