"""Adapter for the original LLaVA codebase (the ``llava`` package, liuhaotian checkpoints): 1.5 and NeXT.

Upstream ``prepare_inputs_labels_for_multimodal`` encodes the images and splices one entry of
``encode_images()``'s result in place of each ``<image>`` placeholder (IMAGE_TOKEN_INDEX), whatever
its length. So the instance gets two shadows, both undone by ``remove()``:
- ``prepare_inputs_labels_for_multimodal`` runs the vision tower on every crop, selects and packs
  (scope_eval.adapters.core), then calls upstream with a one-row-per-image stand-in tensor, which sends
  upstream down its single-tensor branch (no anyres merging, no unpadding, no newlines);
- ``encode_images`` hands upstream the packed per-image tokens, of any length.
No tokenizer change is needed: the splice sizes the sequence from the features.

A third shadow, for every plan (``none`` included), keeps ``generate`` working across transformers
releases: ``forward`` accepting the KV cache under its new name (see ``_forward_accepting_cache``).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from llava.mm_utils import get_anyres_image_grid_shape

from scope_eval.pruning import PruningError
from scope_eval.pruning.plan import PruningPlan

from .base import PruningHandle
from .families import most_crops
from .instruction import original_backend_refusal

IMAGE_TOKEN_INDEX = -200  # llava.constants.IMAGE_TOKEN_INDEX


def _is_anyres(model: Any) -> bool:
    return getattr(model.config, "image_aspect_ratio", "square") == "anyres"


def max_visual_tokens(model: Any) -> int:
    """Most visual tokens one image can bring before pruning, for budget validation."""
    tower = model.get_vision_tower()
    per_crop = tower.num_patches
    if not _is_anyres(model):
        return per_crop
    return most_crops(model.config.image_grid_pinpoints, tower.config.image_size) * per_crop


class LlavaOriginalHandle(PruningHandle):
    visual_tokens_per_image = staticmethod(max_visual_tokens)

    def __init__(self, model: Any, plan: PruningPlan):
        super().__init__(model, plan)
        tower = model.get_vision_tower()
        if tower is None:
            raise PruningError("this LLaVA model has no vision tower loaded")
        if getattr(tower, "select_feature", "patch") != "patch":
            raise PruningError("pruning expects mm_vision_select_feature='patch' (CLS dropped), as in LLaVA-1.5/NeXT")
        if plan.method.needs_instruction:
            raise original_backend_refusal(plan.method.name)
        self._stock_prepare = model.prepare_inputs_labels_for_multimodal
        compatible_forward = _forward_accepting_cache(model.forward)
        if compatible_forward is not None:
            self._patches.set(model, "forward", compatible_forward)
        if plan.method.stage == "llm":  # every visual token enters the LM; the method drops them inside it
            from .llm_stage import LlmStage

            self.llm_stage = LlmStage(self, model.get_model(), max_visual_tokens(model))
            self._patches.set(model, "prepare_inputs_labels_for_multimodal", self._prepare_announcing_visual)
            return
        if plan.keeps_all:
            self._patches.set(model, "prepare_inputs_labels_for_multimodal", self._prepare_recording_stock)
            return
        self.attach_probe(tower.vision_tower, tower.select_layer)
        self._packed: list[torch.Tensor] | None = None
        self._patches.set(model, "prepare_inputs_labels_for_multimodal", self._prepare_pruned)
        self._patches.set(model, "encode_images", self._hand_over_packed)

    def _prepare_pruned(self, input_ids, position_ids, attention_mask, past_key_values, labels, images, image_sizes=None):
        if images is None or input_ids.shape[1] == 1:  # text only, or a decoding step
            return self._stock_prepare(input_ids, position_ids, attention_mask, past_key_values, labels, images, image_sizes)
        crops = self._crops(images)
        grids = [self._grid(c.shape[0], image_sizes, i) for i, c in enumerate(crops)]
        packed, features = self.select_and_pack(crops, grids, self.model.get_vision_tower(), self.model.get_model().mm_projector)
        self._packed = [p.tokens for p in packed]
        one_row_per_image = torch.zeros(len(packed), 1, device=features.device)
        try:
            return self._stock_prepare(
                input_ids, position_ids, attention_mask, past_key_values, labels, one_row_per_image, image_sizes
            )
        finally:
            self._packed = None

    def _hand_over_packed(self, images):
        if self._packed is None:
            raise RuntimeError("encode_images was called outside prepare_inputs_labels_for_multimodal while pruning")
        return self._packed

    def _crops(self, images) -> list[torch.Tensor]:
        if isinstance(images, list):
            return [x.unsqueeze(0) if x.ndim == 3 else x for x in images]
        if images.ndim == 5:
            return list(images)
        return list(images.unsqueeze(1))  # [B, 3, H, W]: one crop per image

    def _grid(self, num_crops: int, image_sizes, index: int) -> tuple[int, int] | None:
        if num_crops == 1:
            return None
        if not _is_anyres(self.model) or image_sizes is None:
            raise PruningError("multi-crop images need image_aspect_ratio='anyres' and image_sizes")
        size = self.model.get_vision_tower().config.image_size
        cols, rows = get_anyres_image_grid_shape(image_sizes[index], self.model.config.image_grid_pinpoints, size)
        return rows, cols

    def _prepare_recording_stock(self, input_ids, position_ids, attention_mask, past_key_values, labels, images, image_sizes=None):
        result = self._stock_prepare(input_ids, position_ids, attention_mask, past_key_values, labels, images, image_sizes)
        if images is not None and input_ids.shape[1] > 1:
            self.record(_spliced_image_tokens(input_ids, attention_mask, result[2], result[4]))
        return result

    def _prepare_announcing_visual(self, input_ids, position_ids, attention_mask, past_key_values, labels, images, image_sizes=None):
        result = self._stock_prepare(input_ids, position_ids, attention_mask, past_key_values, labels, images, image_sizes)
        if images is None or input_ids.shape[1] == 1:
            return result
        if labels is not None:
            raise PruningError(
                f"{self.plan.method.name} drops positions inside the language model, so its logits do not line up "
                "with labels; compute losses without in-LLM pruning"
            )
        from .llm_stage import refuse_padding

        refuse_padding(attention_mask)
        embeds = result[4]
        counts = _spliced_image_tokens(input_ids, attention_mask, result[2], embeds)
        visual = torch.zeros(embeds.shape[:2], dtype=torch.bool, device=embeds.device)
        images_seen = 0
        for row, ids in enumerate(input_ids):
            position = 0
            for token in ids.tolist():
                if token == IMAGE_TOKEN_INDEX:
                    visual[row, position : position + counts[images_seen]] = True
                    position += counts[images_seen]
                    images_seen += 1
                else:
                    position += 1
            if position != embeds.shape[1]:
                raise PruningError(
                    "the spliced sequence is not the prompt with each <image> replaced by its features (truncated "
                    "to tokenizer_model_max_length?); shorten the prompt for in-LLM pruning"
                )
        self.llm_stage.expect_prefill(visual, result[2])
        return result


def _forward_accepting_cache(forward: Callable) -> Callable | None:
    """``forward`` taking the KV cache as ``cache=`` too, or None when it already does.

    transformers 5.24 renamed the cache that ``generate`` passes to the model from ``past_key_values`` to
    ``cache``. The original LLaVA codebase's ``LlavaLlamaForCausalLM.forward`` names it
    ``past_key_values`` and takes no ``**kwargs``, so its ``generate`` fails on 5.24 with "unexpected
    keyword argument 'cache'". Handing the cache over under the old name works on both sides of the
    rename; the Llama forward underneath accepts the old name (deprecated, not removed).
    """
    signature = inspect.signature(forward)
    parameters = signature.parameters
    if "cache" in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None

    def forward_accepting_cache(*args, cache=None, **kwargs):
        if cache is not None and kwargs.get("past_key_values") is None:
            kwargs["past_key_values"] = cache
        return forward(*args, **kwargs)

    # generate() validates its keyword arguments against forward's signature: show the stock parameters
    # (attention_mask, images, ...) plus `cache`, not the wrapper's *args/**kwargs.
    cache = inspect.Parameter("cache", inspect.Parameter.KEYWORD_ONLY, default=None)
    forward_accepting_cache.__signature__ = signature.replace(parameters=[*parameters.values(), cache])
    return forward_accepting_cache


def _spliced_image_tokens(input_ids, attention_mask_in, attention_mask_out, inputs_embeds) -> list[int]:
    """Per image: sequence length after the splice minus the text tokens before it (even split per row)."""
    counts = []
    for b in range(input_ids.shape[0]):
        valid = attention_mask_in[b].bool() if attention_mask_in is not None else torch.ones_like(input_ids[b], dtype=torch.bool)
        ids = input_ids[b][valid]
        images = int((ids == IMAGE_TOKEN_INDEX).sum())
        if images == 0:
            continue
        after = int(attention_mask_out[b].sum()) if attention_mask_out is not None else inputs_embeds.shape[1]
        counts.extend([(after - (ids.shape[0] - images)) // images] * images)
    return counts
