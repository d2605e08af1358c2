"""The embedded default: the shipped toy LLaVA weights, their benchmark, and `scene()` to draw what they understand."""

from .picture import ANSWER_STYLE, scene

__all__ = ["ANSWER_STYLE", "scene"]
