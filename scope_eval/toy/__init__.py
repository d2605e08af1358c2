"""The embedded default: the shipped toy LLaVA weights, their benchmark, and `scene()` to draw what they understand."""

from .picture import scene

__all__ = ["scene"]
