"""One file per pruning method; importing this package registers them all."""

from .cdpruner import CDPrunerMethod
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
from .vispruner import VisPrunerMethod

__all__ = [
    "CDPrunerMethod",
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
    "VisPrunerMethod",
]
