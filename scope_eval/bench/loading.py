"""The model under benchmark: a llava-hf checkpoint (local dir or hub id), a shipped toy, or a shape.

Shapes are built straight on the target device in the target dtype (never a 28 GB fp32 copy on the
host first), with a processor made in-process: the real CLIP / anyres image processing and the toy's
word-level tokenizer (the text's content does not change the cost; only its length does).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .shapes import QWEN_SHAPES, SHAPES, TOY_CHECKPOINTS, TOY_KIND, Family, ModelShape, QwenShape

FILLER_WORD = "image"
QWEN_FAMILIES = ("qwen2-vl", "qwen2.5-vl")
QWEN_FILLER_ID = 1000  # any ordinary vocabulary row: the text's content does not change the cost
QWEN_BENCH_MAX_PIXELS = 1280 * 28 * 28  # Qwen2-VL's recommended max_pixels (1280 LM tokens per image)
MODEL_TYPES: dict[str, Family] = {"llava": "llava-1.5", "llava_next": "llava-next"}


class BenchError(ValueError):
    """Bad benchmark input; the message names the fix."""


@dataclass
class BenchModel:
    model: Any
    processor: Any
    family: Family
    source: str  # what the user asked for: a shape name, a directory or a hub id
    device: torch.device
    dtype: torch.dtype

    @property
    def config(self) -> Any:
        return self.model.config

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def resolve_device(device: str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"--device {device} asked for CUDA, but torch sees no GPU here; use --device cpu")
    return resolved


DTYPES = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
}


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise BenchError(f"--dtype {dtype!r} is not supported; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_bench_model(source: str, device: torch.device, dtype: torch.dtype, attention: str | None = None) -> BenchModel:
    """``source``: a shape name (see SHAPES / TOY_CHECKPOINTS), a local llava-hf directory or a hub id.

    ``attention``: transformers' attn_implementation ("sdpa", "eager", "flash_attention_2"); None = its default.
    """
    options = {"dtype": dtype} if attention is None else {"dtype": dtype, "attn_implementation": attention}
    if source in SHAPES:
        return _build_shape(SHAPES[source], device, options)
    if source in QWEN_SHAPES:
        return _build_qwen_shape(QWEN_SHAPES[source], device, options)
    if source in TOY_CHECKPOINTS:
        directory = toy_checkpoint_dir(source)
        if not (directory / "config.json").is_file():
            raise BenchError(
                f"the toy checkpoint '{source}' is not shipped at {directory}; train it first (scope_eval.toy), "
                f"or benchmark a random model of the same geometry with --shape tiny-{source.removeprefix('toy-')}"
            )
        bench_model = _load_checkpoint(str(directory), device, options)
        bench_model.source = source
        return bench_model
    return _load_checkpoint(source, device, options)


def toy_checkpoint_dir(shape_name: str) -> Path:
    from scope_eval.toy.model import shipped_weights_dir

    return shipped_weights_dir(TOY_CHECKPOINTS[shape_name])


def _load_checkpoint(source: str, device: torch.device, options: dict) -> BenchModel:
    from transformers import AutoConfig, AutoProcessor, LlavaForConditionalGeneration, LlavaNextForConditionalGeneration

    known = ", ".join(list(SHAPES) + list(TOY_CHECKPOINTS))
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise BenchError(
            f"cannot load a model config from '{source}' ({error}); pass a llava-hf checkpoint directory, a hub id "
            f"available in the local cache, or one of the built-in shapes: {known}"
        ) from error
    family = MODEL_TYPES.get(config.model_type)
    if family is None:
        raise BenchError(
            f"'{source}' is a {config.model_type!r} model; the benchmark runs llava-hf LLaVA-1.5 ('llava') and "
            f"LLaVA-NeXT ('llava_next') checkpoints (convert original LLaVA checkpoints to the llava-hf format)"
        )
    model_class = LlavaNextForConditionalGeneration if family == "llava-next" else LlavaForConditionalGeneration
    model = model_class.from_pretrained(source, device_map={"": device}, **options).eval()
    try:
        processor = AutoProcessor.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise BenchError(
            f"'{source}' has no usable processor files ({error}); save the processor next to the model"
        ) from error
    return BenchModel(model, processor, family, source, device, options["dtype"])


def _build_shape(shape: ModelShape, device: torch.device, options: dict) -> BenchModel:
    from transformers import AutoModelForImageTextToText

    processor = shape_processor(shape)
    tokenizer = processor.tokenizer
    config = shape.config(
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), pad_token_id=tokenizer.pad_token_id
    )
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, **options).eval()
    return BenchModel(model, processor, shape.family, shape.name, device, options["dtype"])


def _build_qwen_shape(shape: QwenShape, device: torch.device, options: dict) -> BenchModel:
    """Random weights in the shape; the processor is Qwen's own image processing (no tokenizer is needed:
    build_inputs lays the token ids out as Qwen2VLProcessor does)."""
    from transformers import AutoModelForImageTextToText, Qwen2VLImageProcessor

    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(shape.config(), **options).eval()
    processor = Qwen2VLImageProcessor(max_pixels=QWEN_BENCH_MAX_PIXELS)
    return BenchModel(model, processor, shape.family, shape.name, device, options["dtype"])


def shape_processor(shape: ModelShape) -> Any:
    """The real CLIP / anyres image processing for the shape's geometry, with the toy word-level tokenizer."""
    from scope_eval.toy.model import build_processor

    return build_processor(TOY_KIND[shape.family])


def build_inputs(bench_model: BenchModel, image_size: tuple[int, int], prompt_tokens: int, seed: int = 0) -> dict:
    """One image (random pixels, ``image_size`` = (height, width)) followed by ``prompt_tokens`` text tokens.

    The text is a filler token repeated, appended after the processor's expansion of the image placeholder,
    so the language model sees exactly ``prompt_tokens`` text tokens besides BOS with any tokenizer.
    """
    height, width = image_size
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    if bench_model.family in QWEN_FAMILIES:
        return _qwen_inputs(bench_model, Image.fromarray(pixels), prompt_tokens)
    processor = bench_model.processor
    image_token = getattr(processor, "image_token", "<image>")
    encoded = processor(images=[Image.fromarray(pixels)], text=image_token, return_tensors="pt")
    filler = processor.tokenizer(FILLER_WORD, add_special_tokens=False).input_ids[-1]
    text = torch.full((1, prompt_tokens), filler, dtype=encoded["input_ids"].dtype)
    encoded["input_ids"] = torch.cat([encoded["input_ids"], text], dim=1)
    encoded["attention_mask"] = torch.ones_like(encoded["input_ids"])
    inputs = {key: value.to(bench_model.device) for key, value in encoded.items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(bench_model.dtype)
    return inputs


def _qwen_inputs(bench_model: BenchModel, image: Image.Image, prompt_tokens: int) -> dict:
    """<|vision_start|>, the image's N placeholders, <|vision_end|>, then ``prompt_tokens`` filler tokens."""
    config = bench_model.config
    encoded = bench_model.processor(images=[image], return_tensors="pt")
    grid = encoded["image_grid_thw"]
    placeholders = int(grid.prod()) // config.vision_config.spatial_merge_size**2
    ids = [config.vision_start_token_id] + [config.image_token_id] * placeholders + [config.vision_end_token_id]
    input_ids = torch.tensor([ids + [QWEN_FILLER_ID] * prompt_tokens])
    inputs = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "mm_token_type_ids": (input_ids == config.image_token_id).int(),
        "pixel_values": encoded["pixel_values"],
        "image_grid_thw": grid,
    }
    inputs = {key: value.to(bench_model.device) for key, value in inputs.items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(bench_model.dtype)
    return inputs
