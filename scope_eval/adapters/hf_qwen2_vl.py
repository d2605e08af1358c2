"""Adapter for transformers' Qwen2VLForConditionalGeneration and Qwen2_5_VLForConditionalGeneration (5.x).

Where the visual tokens go differs from LLaVA: Qwen scatters its merged visual tokens into the placeholder
run, and computes the 3-row mRoPE positions (t, h, w) from the full placeholder layout
(``get_rope_index``), so the prompt cannot be shortened before the model runs. Instance-level changes,
all undone by ``remove()``:
- ``model.model.get_image_features`` is shadowed by a function with the same parameters (generate()
  inspects them to encode images before prefill). It runs the stock encoder with a saliency probe on one
  ViT block, selects per image, and returns every image's tokens in place (a merging method's new token
  sits at its merge target's place), remembering which are kept;
- a forward pre-hook on ``model.model`` notes where the prompt's image placeholders are;
- a forward pre-hook on ``model.model.language_model`` cuts, at prefill, the sequence, the 2-D attention
  mask and the position ids (all rows) to the kept tokens, re-padding rows on the left when images keep
  different counts; on the decoding steps that follow it gives the mask the same columns.
Kept tokens keep their original (t, h, w) positions, text after an image keeps its original positions and
decoding continues after the unpruned length (rope_deltas untouched): the convention of vLLM's EVS,
LightCompress and AngelSlim. The language model always gets a 2-D mask (transformers reads gapped position
ids without one as packed sequences). Method 'none' only records the realised counts; in-LLM methods
(fastv, pdrop, dart) run on the decoder with the original mRoPE embeddings (adapters/llm_stage.py).
docs/semantics.md#qwen2-vl-and-qwen25-vl says what each method means here.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration

from scope_eval.pruning import PruningError, VisualTokens
from scope_eval.pruning.methods.visionzip import target_slots
from scope_eval.pruning.plan import PruningPlan

from .base import PruningHandle
from .core import pixel_keys
from .qwen_saliency import QwenSaliencyProbe, check_saliency_block, default_saliency_block

QWEN_VL_CLASSES = (Qwen2VLForConditionalGeneration, Qwen2_5_VLForConditionalGeneration)

# Qwen2-VL's documented range is 4 to 16384 visual tokens per image (max_pixels = 16384 * 28 * 28). An
# image's real count depends on the processor's min/max_pixels; an absolute budget above it is refused
# when that image arrives (method.run), so this ceiling only screens budgets no Qwen image can meet.
MOST_VISUAL_TOKENS = 16384


def max_visual_tokens(model: Any) -> int:
    return MOST_VISUAL_TOKENS


class HfQwen2VLHandle(PruningHandle):
    visual_tokens_per_image = staticmethod(max_visual_tokens)
    takes_saliency_layer = True

    def __init__(self, model: Any, plan: PruningPlan, processor: Any = None, saliency_layer: int | None = None):
        """``processor`` is accepted for the common prune() call and left alone: Qwen's prompt keeps its N
        placeholders per image, the cut happens inside the model."""
        super().__init__(model, plan)
        config = model.config
        self.image_token_id = config.image_token_id
        base = model.model
        self._stock_get_image_features = base.get_image_features
        self._pending_keep: list[torch.Tensor] | None = None  # per image [N_i] bool, from the last encoding
        self.kept_masks: list[torch.Tensor] = []  # per image of the last encoding: which tokens reach the LM
        self._encoding: Any = None  # the last encoding returned (generate() may pass it back to each step)
        self._placeholders: torch.Tensor | None = None  # [B, L] image placeholders of the prompt being run
        self._decode: tuple[Any, torch.Tensor, torch.Tensor, int] | None = None  # (cache, columns, pad, length)
        block = default_saliency_block(config.vision_config) if saliency_layer is None else saliency_layer
        self.saliency_block = check_saliency_block(config.vision_config, block)
        if plan.method.needs_instruction:
            raise PruningError(
                f"method '{plan.method.name}' weighs tokens by a CLIP text tower's embedding of the instruction; Qwen2-VL "
                "has no CLIP text tower aligned with its vision features, and no faithful definition exists: use "
                "another method (scope, divprune, vispruner, visionzip, ...) on Qwen"
            )
        if self.install_without_selection(base):
            return
        if plan.method.needs_saliency:  # its recomputation costs a ViT block's attention: only when used
            self.probe = QwenSaliencyProbe(base.visual, self.saliency_block)
        self._patches.set(base, "get_image_features", self._get_pruned_image_features)
        self._patches.set(base, "get_video_features", self._refuse_video)
        self._hooks.append(base.register_forward_pre_hook(self._note_placeholders, with_kwargs=True))
        self._hooks.append(base.language_model.register_forward_pre_hook(self._shrink_language_model_inputs, with_kwargs=True))

    # -- in-LLM methods (scope_eval.adapters.llm_stage) ----------------------------------------------
    def _install_llm_stage(self) -> None:
        from .llm_stage import LlmStage

        self._patches.set(self.model.model, "get_video_features", self._refuse_video)
        self.llm_stage = LlmStage(self, self.model.model.language_model, None)
        self._hooks.append(self.model.model.register_forward_pre_hook(self._announce_visual_tokens, with_kwargs=True))

    def _announce_visual_tokens(self, module, args: tuple, kwargs: dict) -> None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        self.announce_prefill(input_ids, self.image_token_id, kwargs.get("attention_mask"), kwargs.get("labels"))

    # -- image encoding ----------------------------------------------------------------------------
    def _refuse_video(self, pixel_values_videos, video_grid_thw=None, **kwargs):
        raise PruningError(
            f"{self.plan.method.name}: video inputs are not pruned on Qwen (a frame group's tokens and budget are not "
            "defined yet); pass images, or prune with method 'none'"
        )

    def _record_stock_features(self, pixel_values, image_grid_thw=None, **kwargs):
        out = self._stock_get_image_features(pixel_values, image_grid_thw, **kwargs)
        self.record([int(t.shape[0]) for t in out.pooler_output])
        return out

    def _get_pruned_image_features(self, pixel_values, image_grid_thw=None, **kwargs):
        if image_grid_thw is None:
            raise PruningError("Qwen2-VL needs image_grid_thw with pixel_values (the processor returns both)")
        out = self._stock_get_image_features(pixel_values, image_grid_thw, **kwargs)
        sizes = [int(t.shape[0]) for t in out.pooler_output]
        saliency = self.probe.take().split(sizes) if self.probe is not None else [None] * len(sizes)  # type: ignore[attr-defined]
        patch_rows = pixel_values.split((image_grid_thw.prod(-1)).tolist())
        tokens, keep, counts, degenerate = [], [], [], 0
        for image, image_saliency, pixels in zip(out.pooler_output, saliency, patch_rows):
            placed, kept_mask, kept = self._select(image, image_saliency, pixels)
            tokens.append(placed)
            keep.append(kept_mask)
            counts.append(int(kept_mask.sum()))
            degenerate += kept.degenerate is not None and bool(kept.degenerate.any())
        self.record(counts, degenerate=degenerate)
        self._pending_keep = self.kept_masks = keep
        self._encoding = out
        out.pooler_output = tuple(tokens)
        return out

    def _select(self, image: torch.Tensor, saliency: torch.Tensor | None, pixels: torch.Tensor):
        """One image's tokens [N, D] with merged tokens at their places, its kept mask [N], the selection."""
        num_tokens = image.shape[0]
        selection = self.plan.crop_selection(1, num_tokens)
        method = selection.method
        visual = VisualTokens(
            features=image.unsqueeze(0),  # post-merger: what enters the LM (SCOPE's post-projector cosine)
            saliency=None if saliency is None else saliency.unsqueeze(0),
            keys=None,
            project=torch.nn.Identity(),  # the tokens are already in the LM's space
            image_keys=pixel_keys(pixels.unsqueeze(0)) if method.needs_image_keys else None,
        )
        kept = method.run(visual, selection.budget)
        if kept.prefix is not None:
            raise AssertionError(f"{method.name} returned prefix tokens, but Qwen has no CLS token to give it")
        indices = kept.indices[0]
        kept_mask = torch.zeros(num_tokens, dtype=torch.bool, device=image.device)
        kept_mask[indices] = True
        placed = image
        if kept.merged is not None and kept.merged.shape[1] > 0:
            places = merge_places(method.name, indices, num_tokens, kept.merged.shape[1])
            placed = image.clone()
            placed[places] = kept.merged[0].to(image.dtype)
            kept_mask[places] = True
        return placed, kept_mask, kept

    # -- language-model input ----------------------------------------------------------------------
    def _note_placeholders(self, module, args: tuple, kwargs: dict) -> None:
        # generate() encodes the images before this forward, a plain forward inside it: note the placeholders
        # either way; the language model's pre-hook pairs them with the encoding's kept masks.
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        encoded = (kwargs.get("mm_encoder_outputs") or {}).get("image")
        has_images = kwargs.get("pixel_values") is not None or encoded is not None
        if encoded is not None and encoded is self._encoding:
            # generate() without a cache hands the same encoding to every step's full forward: its kept
            # masks hold for each of them (with a cache, only the prefill has placeholders to cut)
            self._pending_keep = self.kept_masks
        if input_ids is None:
            if has_images:
                raise PruningError("a pruned Qwen model needs input_ids (with image placeholders), not inputs_embeds")
            return
        placeholders = input_ids == self.image_token_id
        self._placeholders = placeholders if bool(placeholders.any()) else None

    def _shrink_language_model_inputs(self, module, args: tuple, kwargs: dict):
        if args:
            raise PruningError("call the pruned model's language model with keyword arguments, as Qwen2VLModel does")
        embeds = kwargs.get("inputs_embeds")
        cache = kwargs.get("past_key_values")
        cached = cache.get_seq_length() if cache is not None else 0
        if self._pending_keep is not None and self._placeholders is not None and cached == 0:
            return (), self._prefill(kwargs, embeds, cache)
        if self._decode is not None and cache is not None and cache is self._decode[0] and cached > 0:
            return (), self._decoding_step(kwargs, embeds)
        if cached == 0:  # a new sequence without images: the last pruned cache is over
            self._decode = None
        return None

    def _prefill(self, kwargs: dict, embeds: torch.Tensor, cache: Any) -> dict:
        placeholders, keep_per_image = self._placeholders, self._pending_keep
        self._placeholders = self._pending_keep = None
        batch, length = embeds.shape[:2]
        flat_keep = torch.cat(keep_per_image).to(embeds.device)
        if placeholders.shape != (batch, length) or int(placeholders.sum()) != flat_keep.numel():
            raise PruningError(
                f"the prompt holds {int(placeholders.sum())} image placeholders for {flat_keep.numel()} encoded visual "
                "tokens; pass input_ids as the processor returned them"
            )
        if kwargs.get("labels") is not None:
            raise PruningError("a pruned Qwen model returns logits for the kept tokens only; compute losses unpruned")
        keep = torch.ones(batch, length, dtype=torch.bool, device=embeds.device)
        keep[placeholders.to(embeds.device)] = flat_keep  # row-major: the order masked_scatter filled them in
        columns, pad = left_padded_columns(keep)
        mask = kwargs.get("attention_mask")
        full_mask = torch.ones(batch, length, dtype=torch.long, device=embeds.device) if mask is None else mask
        if full_mask.dim() != 2:
            raise PruningError("a pruned Qwen model needs a 2-D attention mask [batch, length] (or none)")
        kwargs = dict(kwargs)
        kwargs["inputs_embeds"] = embeds.gather(1, columns.unsqueeze(-1).expand(-1, -1, embeds.shape[-1]))
        kwargs["attention_mask"] = full_mask.gather(1, columns).masked_fill(pad, 0)
        positions = kwargs.get("position_ids")
        if positions is not None:  # [3 or 4, B, L] (or [B, L]): every row cut to the kept columns
            index = columns.expand(*positions.shape[:-2], -1, -1) if positions.dim() == 3 else columns
            kwargs["position_ids"] = positions.gather(-1, index.to(positions.device))
        self._decode = (cache, columns, pad, length)
        return kwargs

    def _decoding_step(self, kwargs: dict, embeds: torch.Tensor) -> dict:
        _, columns, pad, length = self._decode  # type: ignore[misc]
        mask = kwargs.get("attention_mask")
        if isinstance(mask, dict) or (mask is not None and mask.dim() != 2):
            raise PruningError("a pruned Qwen model needs a 2-D attention mask while decoding (use a dynamic cache)")
        batch = columns.shape[0]
        if mask is None:
            later = torch.ones(batch, kwargs["past_key_values"].get_seq_length() - columns.shape[1] + embeds.shape[1],
                               dtype=torch.long, device=columns.device)
            prompt = (~pad).long()
        else:
            prompt, later = mask[:, :length].gather(1, columns).masked_fill(pad, 0), mask[:, length:]
        kwargs = dict(kwargs)
        kwargs["attention_mask"] = torch.cat([prompt, later.to(prompt.dtype)], dim=1)
        return kwargs


def left_padded_columns(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """([B, L'] original columns of each row's kept tokens, right-aligned; [B, L'] True on the added pads).

    Rows keeping fewer tokens (their images kept fewer) are padded on the left, where generation's left
    padding already sits; a pad's column is 0 (any column would do: the mask hides it).
    """
    counts = keep.sum(dim=1)
    width = int(counts.max())
    slot = torch.arange(width, device=keep.device).view(1, -1)
    pad = slot < (width - counts).view(-1, 1)
    columns = torch.zeros(keep.shape[0], width, dtype=torch.long, device=keep.device)
    for row, (kept, n) in enumerate(zip(keep, counts.tolist())):
        columns[row, width - n :] = kept.nonzero().squeeze(1)
    return columns, pad


def merge_places(method: str, kept: torch.Tensor, num_tokens: int, merged: int) -> torch.Tensor:
    """Token places of a merging method's new tokens: VisionZip's contextual token takes its target's place."""
    if method != "visionzip":
        raise PruningError(f"method '{method}' creates new tokens, and the Qwen adapter knows no place for them")
    remaining = torch.ones(num_tokens, dtype=torch.bool, device=kept.device)
    remaining[kept] = False
    remaining_indices = remaining.nonzero().squeeze(1)  # ascending: the order VisionZip picks targets in
    return remaining_indices[target_slots(remaining_indices.numel(), merged).to(kept.device)]


__all__ = ["HfQwen2VLHandle", "MOST_VISUAL_TOKENS", "QWEN_VL_CLASSES", "left_padded_columns", "max_visual_tokens"]
