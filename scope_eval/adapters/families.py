"""How many visual tokens an image brings to a LLaVA language model before pruning, per model family.

The adapters own this number (``PruningHandle.visual_tokens_per_image`` for a loaded model); this module
gives the same number before any weights load, from a checkpoint's config.json (either codebase) or,
when none can be read, from the family's reference geometry: CLIP ViT-L/14 at 336 px (24 x 24 = 576
tokens per crop), and for LLaVA-NeXT the anyres grids below (at most 2 x 2 high-resolution crops plus
the base image: 5 x 576).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from typing import Any

# LLaVA-NeXT's anyres grid pinpoints (its released 7B/13B checkpoints, llava-hf and liuhaotian alike).
NEXT_GRID_PINPOINTS: list[list[int]] = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
CLIP_L_336 = {"image_size": 336, "patch_size": 14}
FAMILIES: dict[str, dict[str, Any]] = {
    "llava-1.5": {"vision_config": CLIP_L_336},
    "llava-next": {"vision_config": CLIP_L_336, "image_grid_pinpoints": NEXT_GRID_PINPOINTS},
}


def most_crops(pinpoints: Sequence[Sequence[int]] | str | None, crop_size: int) -> int:
    """The most crops an anyres image can bring: the largest grid of ``crop_size`` tiles, plus the base image.
    1 without pinpoints (LLaVA-1.5). The original codebase stores the pinpoints as the text of a list."""
    if not pinpoints:
        return 1
    if isinstance(pinpoints, str):
        pinpoints = ast.literal_eval(pinpoints)
    return 1 + max((height // crop_size) * (width // crop_size) for height, width in pinpoints)


def visual_tokens_per_image(config: Mapping[str, Any]) -> int:
    """Unpruned visual tokens of the largest image, from a LLaVA config.json as a dict (either codebase)."""
    vision = config.get("vision_config") or {}
    image_size = int(vision.get("image_size", CLIP_L_336["image_size"]))
    patch_size = int(vision.get("patch_size", CLIP_L_336["patch_size"]))
    anyres = config.get("model_type") == "llava_next" or config.get("image_aspect_ratio") == "anyres"
    pinpoints = config.get("image_grid_pinpoints") if anyres or "image_aspect_ratio" not in config else None
    if config.get("model_type") == "llava":
        pinpoints = None  # HF LlavaForConditionalGeneration: one crop, whatever else the config holds
    return (image_size // patch_size) ** 2 * most_crops(pinpoints, image_size)


def checkpoint_config(source: str) -> dict[str, Any] | None:
    """A checkpoint's config.json as a dict, from a local folder or the local hub cache only (a check before
    loading must not wait on the network); None when it cannot be read so."""
    import json

    from transformers.utils import cached_file

    try:
        path = cached_file(source, "config.json", _raise_exceptions_for_missing_entries=False, local_files_only=True)
    except (OSError, ValueError):
        return None
    if path is None:
        return None
    try:
        config = json.loads(open(path, encoding="utf-8").read())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def family_visual_tokens(family: str) -> int:
    """The reference total of a family: 576 for llava-1.5, 5 x 576 for llava-next."""
    if family not in FAMILIES:
        raise KeyError(f"unknown LLaVA family '{family}'; one of: {', '.join(FAMILIES)}")
    return visual_tokens_per_image(FAMILIES[family])


__all__ = ["FAMILIES", "NEXT_GRID_PINPOINTS", "checkpoint_config", "family_visual_tokens", "most_crops", "visual_tokens_per_image"]
