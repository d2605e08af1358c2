"""One file per pruning method; importing this package registers them all."""

from .cdpruner import CDPrunerMethod
from .coverage import CoverageMethod
from .divprune import DivPruneMethod
from .none import KeepAllMethod
from .random import RandomMethod
from .saliency import SaliencyMethod
from .scope import ScopeMethod
from .visionzip import VisionZipMethod
from .vispruner import VisPrunerMethod

__all__ = [
    "CDPrunerMethod",
    "CoverageMethod",
    "DivPruneMethod",
    "KeepAllMethod",
    "RandomMethod",
    "SaliencyMethod",
    "ScopeMethod",
    "VisionZipMethod",
    "VisPrunerMethod",
]
