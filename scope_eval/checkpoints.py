"""How a `pretrained` value is read, one rule for the sweep configs and the lmms-eval model args."""

from __future__ import annotations

import os


def looks_like_local_path(pretrained: str) -> bool:
    """A hub id is 'org/name'; anything else with a separator, or starting like a path, is a folder."""
    return pretrained.startswith(("/", "~", ".")) or pretrained.count("/") > 1 or os.sep != "/" and os.sep in pretrained
