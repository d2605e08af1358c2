"""Model-independent part of every adapter: selection per crop or globally (as the plan splits it), packing.

An adapter hands over, per image, the vision features of its crops ([n, N, D]; n = 1 for LLaVA-1.5)
with their CLS saliency and keys, and the crop grid (LLaVA-NeXT). It gets back, per image, the
projected tokens that go to the language model, in the packing order of docs/semantics.md#packing-order:
any prefix tokens a method keeps (VisionZip's CLS, one per crop), the base crop's kept tokens, then the
kept high-resolution tokens in raster order of the full (rows*side) x (cols*side) grid, then any merged
tokens a method created. A method with ``packing="official"`` (VisionZip) on several crops packs the base
crop's [prefix, kept, merged] first, then the grid's kept tokens, prefixes and merged tokens.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

import torch

from scope_eval.pruning import KeptTokens, PruningError, VisualTokens
from scope_eval.pruning.plan import BUDGET_POLICIES, CropSelection, PruningPlan


@dataclass
class ImageCrops:
    """One image as the vision tower saw it."""

    features: torch.Tensor  # [n, N, D] selected-layer hidden states, CLS dropped
    saliency: torch.Tensor  # [n, N]
    keys: torch.Tensor  # [n, N, Dk]
    grid: tuple[int, int] | None = None  # (rows, cols) of the high-resolution crops (LLaVA-NeXT)
    pixels: torch.Tensor | None = None  # [n, 3, H, W] the crops' pixel values: the input that image_keys hash
    cls: torch.Tensor | None = None  # [n, D] the CLS token's hidden state in the same layer (VisionZip keeps it)
    instruction: torch.Tensor | None = None  # [M, C] CLIP text embeddings of the image's instruction (cdpruner)

    @property
    def num_crops(self) -> int:
        return self.features.shape[0]


@dataclass
class PackedImage:
    tokens: torch.Tensor  # [T, D_text] projected tokens for the language model
    kept_indices: torch.Tensor  # [k] positions kept, in the image's packing order (see packing_rank)
    degenerate: bool = False  # the method's selection was degenerate for some crop (KeptTokens.degenerate)
    count: int = field(init=False)

    def __post_init__(self) -> None:
        self.count = self.tokens.shape[0]


def packing_rank(num_crops: int, side: int, grid: tuple[int, int] | None, device: torch.device) -> torch.Tensor:
    """Rank of each of the n*side*side crop tokens in the packed sequence (lower goes first).

    Base crop tokens keep their raster order; high-resolution crop (r, c) token (i, j) sits at row
    r*side+i, column c*side+j of the full grid and is ranked by raster order there.
    """
    per_crop = side * side
    base = torch.arange(per_crop, device=device)
    if num_crops == 1:
        return base
    rows, cols = grid if grid is not None else (1, num_crops - 1)
    if rows * cols != num_crops - 1:
        raise ValueError(f"crop grid {rows}x{cols} does not match {num_crops - 1} high-resolution crops")
    r = torch.arange(rows, device=device).view(rows, 1, 1, 1)
    c = torch.arange(cols, device=device).view(1, cols, 1, 1)
    i = torch.arange(side, device=device).view(1, 1, side, 1)
    j = torch.arange(side, device=device).view(1, 1, 1, side)
    full_width = cols * side
    high_res = per_crop + (r * side + i) * full_width + (c * side + j)  # [rows, cols, side, side]
    return torch.cat([base, high_res.reshape(-1)])


def prune_images(
    plan: PruningPlan,
    images: list[ImageCrops],
    project: Callable[[torch.Tensor], torch.Tensor],
    text_space: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[PackedImage]:
    """Select, pack and project the visual tokens of each image (text_space: see VisualTokens, cdpruner)."""
    packed = []
    for image in images:
        n, tokens_per_crop, _ = image.features.shape
        side = int(round(tokens_per_crop**0.5))
        rank = packing_rank(n, side, image.grid, image.features.device)
        selection = plan.crop_selection(n, tokens_per_crop)
        tokens = _visual_tokens(selection, image, project, text_space)
        kept = selection.method.run(tokens, None if plan.keeps_all else selection.budget)
        if selection.flattened:  # one selection over all n*N tokens, crops side by side
            flat_indices = kept.indices[0]
            merged = None if kept.merged is None else kept.merged[0]
            prefix = None if kept.prefix is None else kept.prefix[0]
        else:  # one method call over the crops as a batch: every crop keeps the same number of tokens
            offsets = (torch.arange(n, device=rank.device) * tokens_per_crop).view(n, 1)
            flat_indices = (kept.indices + offsets).reshape(-1)
            merged = None if kept.merged is None else kept.merged.reshape(-1, kept.merged.shape[-1])
            prefix = None if kept.prefix is None else kept.prefix.reshape(-1, kept.prefix.shape[-1])
        order = torch.argsort(rank[flat_indices])
        flat_indices = flat_indices[order]
        features = image.features.reshape(-1, image.features.shape[-1])[flat_indices]
        if getattr(selection.method, "packing", None) == "official" and not selection.flattened and n > 1:
            base_count = int((flat_indices < tokens_per_crop).sum())
            features = _base_crop_first(features, base_count, prefix, merged, n)
        else:
            if merged is not None:
                features = torch.cat([features, merged.to(features.dtype)], dim=0)
            if prefix is not None:  # VisionZip's CLS token(s) go first, as its official code packs them (1.5)
                features = torch.cat([prefix.to(features.dtype), features], dim=0)
        degenerate = kept.degenerate is not None and bool(kept.degenerate.any())
        packed.append(PackedImage(project(features.to(_input_dtype(project, features.dtype))), flat_indices, degenerate))
    return packed


def _base_crop_first(kept: torch.Tensor, base_count: int, prefix: torch.Tensor | None, merged: torch.Tensor | None, num_crops: int) -> torch.Tensor:
    """The SCOPE repository's LLaVA-NeXT order for VisionZip (``packing="official"``): the base crop's own
    [prefix, kept, merged] block, then the grid's kept tokens (already in full-grid raster order), the grid
    crops' prefixes, then their merged tokens (crop order)."""
    empty = kept[:0]
    prefix = empty if prefix is None else prefix.to(kept.dtype)
    merged = empty if merged is None else merged.to(kept.dtype)
    per_crop_merged = merged.shape[0] // num_crops
    per_crop_prefix = prefix.shape[0] // num_crops
    return torch.cat([
        prefix[:per_crop_prefix], kept[:base_count], merged[:per_crop_merged],
        kept[base_count:], prefix[per_crop_prefix:], merged[per_crop_merged:],
    ])


def _input_dtype(project: Callable, default: torch.dtype) -> torch.dtype:
    """The projector's weight dtype: a tower kept in fp32 under an fp16 projector (accelerate's
    device_map='auto' does this to the original LLaVA codebase) must be cast as upstream casts it."""
    parameter = next(project.parameters(), None) if isinstance(project, torch.nn.Module) else None
    return parameter.dtype if parameter is not None else default


def _visual_tokens(selection: CropSelection, image: ImageCrops, project: Callable, text_space: Callable | None = None) -> VisualTokens:
    features, saliency, keys, cls = image.features, image.saliency, image.keys, image.cls
    image_keys = None
    if selection.method.needs_image_keys:  # hashing the pixels costs a copy to the CPU: only for methods that use it
        if image.pixels is None:
            raise PruningError(f"method '{selection.method.name}' needs the crops' pixel values; the adapter passed none")
        image_keys = pixel_keys(image.pixels)
    if selection.flattened:
        features, saliency, keys = features.reshape(1, -1, features.shape[-1]), saliency.reshape(1, -1), keys.reshape(1, -1, keys.shape[-1])
        image_keys = None if image_keys is None else [_combined_key(image_keys)]
        cls = None if cls is None else cls[:1]  # one selection over all crops: the base (whole-image) crop's CLS
    # every row of one call (each crop, or the flattened image) gets the image's instruction
    instruction = None if image.instruction is None else image.instruction.unsqueeze(0).expand(features.shape[0], -1, -1)
    return VisualTokens(
        features=features, saliency=saliency, keys=keys, project=project, image_keys=image_keys, cls=cls,
        instruction=instruction, text_space=text_space,
    )


def pixel_keys(pixels: torch.Tensor) -> list[int]:
    """One 63-bit key per crop of ``pixels`` [n, 3, H, W]: a hash of its shape and values.

    The processor's pixel values come out of elementwise arithmetic, not matmuls, so their bits are the
    same on every machine. They are rounded to bfloat16 first: the wrappers cast pixels to the model's
    dtype, and rounding float32, float64 or bfloat16 copies of one image to bfloat16 gives the same bits,
    so one image keeps its key whatever dtype the model runs in.
    """
    rounded = pixels.detach().to(torch.bfloat16).cpu().contiguous()
    keys = []
    for crop in rounded:
        digest = hashlib.blake2b(f"pixels:{tuple(crop.shape)}|".encode(), digest_size=8)
        digest.update(crop.view(torch.uint8).numpy().tobytes())
        keys.append(int.from_bytes(digest.digest(), "little") >> 1)
    return keys


def _combined_key(keys: list[int]) -> int:
    """One key for a selection over all crops of an image at once (budget_policy=global)."""
    digest = hashlib.blake2b(("crops:" + ",".join(map(str, keys))).encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


__all__ = ["BUDGET_POLICIES", "ImageCrops", "KeptTokens", "PackedImage", "PruningPlan", "packing_rank", "pixel_keys", "prune_images"]
