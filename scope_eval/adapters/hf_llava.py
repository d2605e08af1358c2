"""Adapter for transformers' LlavaForConditionalGeneration and LlavaNextForConditionalGeneration (5.x).

Three instance-level changes, all undone by ``remove()``:
- ``model.model.get_image_features`` is shadowed by a function with the same parameters (generate()
  inspects them to encode images before prefill), which runs the vision tower, selects, packs and
  projects only the kept tokens;
- a forward pre-hook and a ``generate`` shadow cut each image's placeholder run to its kept count, so
  the language model's sequence, attention mask and positions shrink;
- given a processor, its ``replace_image_token`` emits the kept count directly.
For method 'none' only the realised counts are recorded: the model runs exactly as shipped.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import LlavaForConditionalGeneration, LlavaNextForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape, image_size_to_num_patches

from scope_eval.pruning import PruningError
from scope_eval.pruning.plan import PruningPlan

from .base import PruningHandle
from .families import most_crops
from .instruction import InstructionEncoder, host_tokenizer, instruction_texts
from .placeholders import pad_token_id, shrink_placeholders

HF_LLAVA_CLASSES = (LlavaForConditionalGeneration, LlavaNextForConditionalGeneration)


def max_visual_tokens(model: Any) -> int:
    """Most visual tokens one image can bring (before pruning), for budget validation."""
    vision = model.config.vision_config
    per_crop = (vision.image_size // vision.patch_size) ** 2
    if not isinstance(model, LlavaNextForConditionalGeneration):
        return per_crop
    return most_crops(model.config.image_grid_pinpoints, vision.image_size) * per_crop


def check_processor_free(processor: Any) -> None:
    """Refuse a processor that already emits another pruned model's placeholder count.

    One processor emits one count per image; and two handles patching it in turn could not both restore
    it exactly (removed out of order, the second would put back the first one's patch).
    """
    current = getattr(processor, "__dict__", {}).get("replace_image_token")
    owner = getattr(current, "pruning_handle", None)
    if owner is not None and owner.active:
        raise PruningError(
            f"this processor already serves another pruned model ({owner!r}); give each pruned model its own "
            "processor (load it again, or copy.deepcopy it before pruning), pass no processor= for this one, "
            "or restore the other model first"
        )


class HfLlavaHandle(PruningHandle):
    visual_tokens_per_image = staticmethod(max_visual_tokens)

    def __init__(self, model: Any, plan: PruningPlan, processor: Any = None):
        super().__init__(model, plan)
        if processor is not None and not plan.keeps_all:
            check_processor_free(processor)
        config = model.config
        self.is_next = isinstance(model, LlavaNextForConditionalGeneration)
        self.max_tokens_per_image = max_visual_tokens(model)
        self.feature_layer = config.vision_feature_layer
        if not isinstance(self.feature_layer, int):
            raise PruningError("pruning needs a single vision_feature_layer; this config concatenates several")
        if config.vision_feature_select_strategy != "default":
            raise PruningError("pruning expects vision_feature_select_strategy='default' (CLS dropped), as in LLaVA")
        self.image_token_id = config.image_token_id
        self.crop_size = config.vision_config.image_size
        self.tokens_per_crop = (self.crop_size // config.vision_config.patch_size) ** 2
        self.pad_token_id = pad_token_id(config)
        base = model.model
        self._stock_get_image_features = base.get_image_features
        if self.install_without_selection(base):
            return
        self.instruction_encoder, self._instructions = None, None
        if plan.method.needs_instruction:  # before any patch: a failure here leaves the model untouched
            self.tokenizer = host_tokenizer(processor, plan.method.name)
            width, device = config.vision_config.hidden_size, next(model.parameters()).device
            self.instruction_encoder = InstructionEncoder(plan.method.text_encoder, width, device)
        self.attach_probe(base.vision_tower, self.feature_layer)
        self._patches.set(base, "get_image_features", self._get_pruned_image_features)
        self._stock_generate = model.generate
        self._patches.set(model, "generate", self._generate)
        self._hooks.append(model.register_forward_pre_hook(self._shrink_forward_inputs, with_kwargs=True))
        if processor is not None:
            self._patches.set(processor, "replace_image_token", self._replacement_for(processor))

    # -- in-LLM methods (scope_eval.adapters.llm_stage) ----------------------------------------------
    def _install_llm_stage(self) -> None:
        from .llm_stage import LlmStage

        self.llm_stage = LlmStage(self, self.model.model.language_model, self.max_tokens_per_image)
        self._hooks.append(self.model.register_forward_pre_hook(self._announce_visual_tokens, with_kwargs=True))

    def _announce_visual_tokens(self, module, args: tuple, kwargs: dict) -> None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        attention_mask = kwargs.get("attention_mask", args[2] if len(args) > 2 else None)
        self.announce_prefill(input_ids, self.image_token_id, attention_mask, kwargs.get("labels"))

    # -- image encoding ----------------------------------------------------------------------------
    def _record_stock_features(
        self, pixel_values, image_sizes=None, vision_feature_layer=None, vision_feature_select_strategy=None, **kwargs
    ):
        if image_sizes is not None:
            kwargs["image_sizes"] = image_sizes
        out = self._stock_get_image_features(
            pixel_values=pixel_values,
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
            **kwargs,
        )
        self.record([int(f.shape[0]) for f in out.pooler_output])
        return out

    def _get_pruned_image_features(
        self, pixel_values, image_sizes=None, vision_feature_layer=None, vision_feature_select_strategy=None, **kwargs
    ):
        if vision_feature_layer not in (None, self.feature_layer):
            raise PruningError(f"this pruned model selects vision layer {self.feature_layer}, not {vision_feature_layer}")
        base = self.model.model
        crops, grids = self._crops_and_grids(pixel_values, image_sizes)
        text_space = None if self.instruction_encoder is None else self.instruction_encoder.text_space
        packed, features = self.select_and_pack(
            crops, grids, lambda pixels: base.vision_tower(pixels, return_dict=True), base.multi_modal_projector,
            self._take_instructions(len(crops)), text_space,
        )
        return BaseModelOutputWithPooling(last_hidden_state=features, pooler_output=[p.tokens for p in packed])

    def _crops_and_grids(self, pixel_values: torch.Tensor, image_sizes) -> tuple[list[torch.Tensor], list]:
        if not self.is_next:
            return list(pixel_values.unsqueeze(1)), [None] * pixel_values.shape[0]
        if image_sizes is None:
            raise PruningError("LLaVA-NeXT needs image_sizes with pixel_values")
        pinpoints = self.model.config.image_grid_pinpoints
        counts = [self._num_crops(size) for size in image_sizes]
        if pixel_values.dim() == 5:
            crops = [pv[:n] for pv, n in zip(pixel_values, counts)]
        else:
            crops = list(pixel_values.split(counts))
        grids = [tuple(get_anyres_image_grid_shape(size, pinpoints, self.crop_size)) for size in image_sizes]
        return crops, grids

    def _take_instructions(self, num_images: int) -> list:
        """Per image: its instruction's CLIP embeddings [M, C] (None for methods that need none)."""
        if self.instruction_encoder is None:
            return [None] * num_images
        texts, self._instructions = self._instructions, None
        if texts is None or len(texts) != num_images:
            raise PruningError(
                f"method '{self.plan.method.name}' needs each image's prompt: call the model (or generate) with input_ids "
                f"holding one image placeholder run per image; got {0 if texts is None else len(texts)} for {num_images} images"
            )
        return [self.instruction_encoder.encode(text) for text in texts]

    # -- language-model input ----------------------------------------------------------------------
    def _num_crops(self, image_size) -> int:
        """Crops the vision tower sees for an image of this (height, width): 1 for LLaVA-1.5."""
        if not self.is_next:
            return 1
        return image_size_to_num_patches(image_size, self.model.config.image_grid_pinpoints, self.crop_size)

    def _targets(self, pixel_values, image_sizes) -> list[int]:
        sizes = image_sizes if self.is_next else [None] * pixel_values.shape[0]
        return [self.plan.tokens_for(self._num_crops(size), self.tokens_per_crop) for size in sizes]

    def _shrink(self, kwargs: dict) -> dict:
        input_ids, pixel_values = kwargs.get("input_ids"), kwargs.get("pixel_values")
        if input_ids is None or pixel_values is None or not (input_ids == self.image_token_id).any():
            return kwargs  # text only, a decoding step, or placeholders already resolved by generate()
        if self.instruction_encoder is not None:  # the prompt's text, for the image encoding that follows
            self._instructions = instruction_texts(input_ids, kwargs.get("attention_mask"), self.image_token_id, self.tokenizer)
        targets = self._targets(pixel_values, kwargs.get("image_sizes"))
        ids, mask, labels = shrink_placeholders(
            input_ids, kwargs.get("attention_mask"), self.image_token_id, targets, self.pad_token_id, kwargs.get("labels")
        )
        if ids is not input_ids:
            if kwargs.get("position_ids") is not None or kwargs.get("cache_position") is not None:
                raise PruningError("pass input_ids without position_ids/cache_position to a pruned model")
            kwargs = {**kwargs, "input_ids": ids, "attention_mask": mask}
            if labels is not None:
                kwargs["labels"] = labels
        return kwargs

    def _shrink_forward_inputs(self, module, args: tuple, kwargs: dict):
        if args:
            kwargs = {**dict(zip(("input_ids", "pixel_values", "attention_mask"), args)), **kwargs}
        return (), self._shrink(kwargs)

    def _generate(self, *args, **kwargs):
        if args:
            kwargs = {"inputs" if "inputs" not in kwargs else "input_ids": args[0], **kwargs}
        if "inputs" in kwargs and "input_ids" not in kwargs and isinstance(kwargs["inputs"], torch.Tensor):
            kwargs["input_ids"] = kwargs.pop("inputs")
        shrunk = self._shrink(kwargs)
        output = self._stock_generate(**shrunk)
        if shrunk is kwargs:
            return output
        # Callers cut the continuation off at *their* prompt length (lmms-eval's llava_hf does), so the
        # returned sequences start with the prompt exactly as passed in, not with the shrunk one.
        prompt, shrunk_length = kwargs["input_ids"], shrunk["input_ids"].shape[1]
        if isinstance(output, torch.Tensor):
            return torch.cat([prompt, output[:, shrunk_length:]], dim=1)
        output.sequences = torch.cat([prompt, output.sequences[:, shrunk_length:]], dim=1)
        return output

    def _replacement_for(self, processor: Any):
        def replace_image_token(image_inputs: dict, image_idx: int, **kwargs) -> str:
            size = image_inputs["image_sizes"][image_idx] if self.is_next else None
            if size is not None:
                size = size.tolist() if hasattr(size, "tolist") else list(size)
            return processor.image_token * self.plan.tokens_for(self._num_crops(size), self.tokens_per_crop)

        replace_image_token.pruning_handle = self  # lets check_processor_free find the processor's user
        return replace_image_token

