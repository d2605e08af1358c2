"""``visionzip``: dominant tokens by CLS attention plus merged contextual tokens, as the official code does."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, replace

import torch

from ..base import KeptTokens, PruningError, PruningMethod, SelectionWork, VisualTokens, all_finite
from ..model_dtype import check_selection_dtype, cosine_in_dtype
from ..registry import register
from ..similarity import cross_cosine_similarity, top_k_lowest_index, working_precision

# Contextual share of the budget: the paper's splits 54+10 (64), 108+20 (128), 162+30 (192), and the
# SCOPE repository's 135+25 / 270+50 / 540+100 for LLaVA-NeXT, are budget * 10 // 64 contextual tokens.
CONTEXTUAL_PER_64 = 10
CROP_SPLITS = ("floor", "official")
# LLaVA-NeXT order of the packed tokens (scope_eval/adapters/core.py): "grouped" = every crop's CLS, the kept
# patches (base crop, then the high-resolution grid in raster order), every crop's contextual tokens;
# "official" = the SCOPE repository's: base crop [CLS, kept, contextual], grid kept (raster), grid CLS, grid
# contextual (kinredon/SCOPE scope/llava_arch.py, restore_image_features_sorted).
PACKINGS = ("grouped", "official")


@register
@dataclass
class VisionZipMethod(PruningMethod):
    """VisionZip (Yang et al., CVPR 2025, https://arxiv.org/abs/2412.04467), as its official code runs it.

    A budget K is split into ``dominant`` + ``contextual`` tokens (default contextual = K * 10 // 64).
    - Dominant: the CLS token counts as one of them (``tokens.cls``, returned as ``prefix``, first in the
      LM sequence), plus the ``dominant - 1`` patches with the largest CLS attention (ties lowest index),
      kept as they are. Without a CLS token from the host, one more patch takes its place.
    - Contextual: of the R remaining patches in index order, the targets are every (R // contextual)-th
      (positions 0, s, 2s, ..., s = max(1, R // contextual)), the first ``contextual`` of them. Every other
      remaining patch joins the target whose attention key is most similar by cosine (``tokens.keys``,
      the keys averaged over heads; the features when the host gives none; ties to the lowest target).
      A contextual token = the target's features + the mean of the features of the *other* patches
      that joined it (just the target when none did).
    Returned: ``prefix`` [B, 1, D] CLS, ``indices`` the dominant patches (ascending), ``merged``
    [B, contextual, D], in the features' dtype. Budget = CLS + dominant patches + contextual.

    ``crop_split`` (LLaVA-NeXT, budget_policy=per_crop): "floor" (default) gives every crop floor(K / n)
    tokens, so n * floor(K / n) reach the LM; "official" realises the SCOPE repository's split, each crop
    keeping round-half-up((dominant - 1) / n) patches + its CLS + round-half-up(contextual / n)
    contextual tokens (165 / 325 / 645 at K = 160 / 320 / 640 on 5 crops).
    ``packing`` (LLaVA-NeXT, per-crop selection): "grouped" (default) packs every crop's CLS first, then the
    kept patches, then every crop's contextual tokens; "official" packs as the SCOPE repository does: the
    base crop's CLS, kept patches and contextual tokens, then the grid's kept patches (full-grid raster
    order), the grid crops' CLS tokens, then their contextual tokens. Same tokens, different order.
    ``selection_dtype``: "float32" (default) or "model" (the features' dtype, as the official code).
    """

    name = "visionzip"
    display_name = "VisionZip"
    report_rank = 40
    needs_keys = True
    needs_cls = True
    needs_saliency = True

    contextual: int | None = None  # merged contextual tokens; None: budget * 10 // 64, the official split
    crop_split: str = "floor"  # "official": the SCOPE repo's per-crop counts on LLaVA-NeXT
    packing: str = "grouped"  # "official": the SCOPE repo's order of the crops' tokens on LLaVA-NeXT
    selection_dtype: str = "float32"  # "model": compute in the features' dtype, as the official code does

    def __post_init__(self) -> None:
        self.selection_dtype = check_selection_dtype(self.name, self.selection_dtype)
        if self.packing not in PACKINGS:
            raise PruningError(f"visionzip: packing must be one of {', '.join(PACKINGS)}, got {self.packing!r}")
        if self.crop_split not in CROP_SPLITS:
            raise PruningError(
                f"visionzip: crop_split must be one of {', '.join(CROP_SPLITS)}, got {self.crop_split!r}"
            )
        if self.contextual is None:
            return
        if isinstance(self.contextual, bool) or not isinstance(self.contextual, numbers.Integral) or self.contextual < 0:
            raise PruningError(
                f"visionzip: contextual must be a whole number >= 0 of merged tokens, got {self.contextual!r}; "
                "leave it unset for the paper's split (budget * 10 // 64)"
            )
        self.contextual = int(self.contextual)

    def split(self, budget: int) -> tuple[int, int]:
        """(dominant, contextual) token counts for a budget; dominant includes the CLS token."""
        contextual = budget * CONTEXTUAL_PER_64 // 64 if self.contextual is None else self.contextual
        if contextual > budget:
            raise PruningError(f"visionzip: contextual={contextual} exceeds the budget {budget}; lower contextual")
        return budget - contextual, contextual

    def check_fits(self, budget: int) -> None:
        self.split(budget)  # contextual above the budget fails here, before a model is loaded

    def check_policy(self, budget_policy: str) -> None:
        # crop_split says how a budget is shared by the crops; under global one selection sees all crops at once
        if self.crop_split != "floor" and budget_policy != "per_crop":
            raise PruningError(
                f"visionzip: crop_split={self.crop_split!r} splits the budget over crops under budget_policy=per_crop, "
                f"but budget_policy={budget_policy} selects over all crops at once; drop crop_split or use per_crop"
            )

    def for_crops(self, budget: int, num_crops: int) -> tuple[PruningMethod, int]:
        if self.crop_split == "floor":
            return super().for_crops(budget, num_crops)
        dominant, contextual = self.split(budget)
        # The SCOPE repository divides the patch count (dominant - 1) and the contextual count by the crops
        # of the call, each rounded half up (int(x / n + 0.5)); every crop keeps its own CLS on top.
        patches = _round_half_up(max(dominant - 1, 0), num_crops)
        per_crop_contextual = _round_half_up(contextual, num_crops)
        return replace(self, contextual=per_crop_contextual, crop_split="floor"), patches + 1 + per_crop_contextual

    def selection_flops(self, work: SelectionWork) -> int:
        """Cosine similarity of the R = N - (K - C) patches left after the dominant ones to the C merge
        targets, on the attention keys (counted at width D): 2*R*C*D, with this instance's split."""
        dominant, contextual = self.split(work.keep)
        return work.groups * 2 * (work.tokens - dominant) * contextual * work.vision_width

    def _select(self, tokens: VisualTokens, budget: int) -> KeptTokens:
        dominant_count, contextual_count = self.split(budget)
        prefix = None
        if tokens.cls is not None and dominant_count >= 1:
            prefix = tokens.cls[:, None, :]
            dominant_count -= 1  # the CLS token is one of the dominant tokens
        saliency = tokens.saliency
        if self.selection_dtype == "model":
            saliency = saliency.to(tokens.features.dtype)
        by_attention = top_k_lowest_index(saliency, tokens.num_tokens)
        dominant = by_attention[:, :dominant_count].sort(dim=-1).values
        if contextual_count == 0:
            return KeptTokens(indices=dominant, prefix=prefix)
        remaining = by_attention[:, dominant_count:].sort(dim=-1).values  # [B, R], spatial order
        merged = merge_around_targets(tokens, remaining, contextual_count, in_model_dtype=self.selection_dtype == "model")
        return KeptTokens(indices=dominant, merged=merged, prefix=prefix)


def target_slots(num_remaining: int, count: int) -> torch.Tensor:
    """Positions among the R remaining tokens that become merge targets: every max(1, R // count)-th, first count."""
    step = max(1, num_remaining // count)
    return torch.arange(0, num_remaining, step)[:count]


def merge_around_targets(
    tokens: VisualTokens, remaining: torch.Tensor, count: int, *, in_model_dtype: bool = False
) -> torch.Tensor:
    """[B, count, D] contextual tokens: each target + the mean of the other tokens assigned to it."""
    num_remaining = remaining.shape[1]
    if count > num_remaining:
        raise PruningError(
            f"visionzip: {count} contextual tokens need at least as many remaining tokens, got {num_remaining}; "
            "lower contextual or the budget"
        )
    metric = tokens.keys if tokens.keys is not None else tokens.features
    if not all_finite(metric):
        raise PruningError("visionzip: the attention keys contain NaN or inf; check the vision tower")
    features = _gather_tokens(tokens.features, remaining)
    metric = _gather_tokens(metric, remaining)
    if in_model_dtype:
        metric = metric.to(features.dtype)
    else:
        features = working_precision(features)
    is_target = torch.zeros(num_remaining, dtype=torch.bool, device=remaining.device)
    is_target[target_slots(num_remaining, count).to(remaining.device)] = True
    similarity = (cosine_in_dtype if in_model_dtype else cross_cosine_similarity)(metric[:, ~is_target], metric[:, is_target])
    assignment = torch.nn.functional.one_hot(similarity.argmax(dim=-1), count).to(features.dtype)  # first max: lowest target
    with torch.autocast(device_type=features.device.type, enabled=False):
        others_sum = assignment.transpose(1, 2) @ features[:, ~is_target]  # [B, count, D]
    others_count = assignment.sum(dim=1).clamp_min(1)[:, :, None]
    return (features[:, is_target] + others_sum / others_count).to(tokens.features.dtype)


def _round_half_up(value: int, parts: int) -> int:
    """int(value / parts + 0.5) for value >= 0, in integer arithmetic."""
    return (2 * value + parts) // (2 * parts)


def _gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[b, index[b, r]] for every b, r: [B, R, D]."""
    return torch.gather(x, 1, index[:, :, None].expand(-1, -1, x.shape[-1]))
