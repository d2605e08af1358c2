"""Tiny random Qwen2-VL / Qwen2.5-VL models (the bench's tiny-qwen shapes), built offline, and their inputs.

Inputs are built the way Qwen2VLProcessor lays them out (vision_start, N image placeholders, vision_end;
pixel rows of 2x2-merge-ordered 14 px patches; mm_token_type_ids 1 on the placeholders), without a
tokenizer: word ids are small integers.
"""

from __future__ import annotations

import torch
from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration

from scope_eval.bench.shapes import QWEN_SHAPES

VOCAB = 300
IMAGE, VIDEO, VISION_START, VISION_END, PAD, BOS, EOS = 290, 291, 292, 293, 0, 1, 2
PATCH_ROW = 3 * 2 * 14 * 14  # channels x temporal patch x 14 x 14


def tiny_qwen(family: str = "qwen2-vl", seed: int = 0, attn_implementation: str = "eager"):
    """A random tiny model of ``family`` ("qwen2-vl" or "qwen2.5-vl") in eval mode."""
    torch.manual_seed(seed)
    shape = QWEN_SHAPES[f"tiny-{family}"]
    config = shape.config(
        image_token_id=IMAGE, vocab=VOCAB, video_token_id=VIDEO, vision_start_token_id=VISION_START,
        vision_end_token_id=VISION_END,
    )
    config.text_config.pad_token_id = PAD
    config.text_config.bos_token_id, config.text_config.eos_token_id = BOS, EOS
    model_class = Qwen2VLForConditionalGeneration if family == "qwen2-vl" else Qwen2_5_VLForConditionalGeneration
    config._attn_implementation = attn_implementation
    return model_class(config).eval()


def qwen_inputs(grids: list[list[tuple[int, int]]], texts: list[list[int]] | None = None, seed: int = 1) -> dict:
    """Model inputs for a batch: row b holds the images of patch grids ``grids[b]`` ((h, w) in 14 px
    patches, even), each between vision_start/end, then the words of ``texts[b]``; rows left-padded."""
    generator = torch.Generator().manual_seed(seed)
    texts = texts or [[5, 6, 7] for _ in grids]
    rows, thw, pixels = [], [], []
    for images, words in zip(grids, texts):
        row = [11, 12]
        for h, w in images:
            row += [VISION_START] + [IMAGE] * (h * w // 4) + [VISION_END]
            thw.append([1, h, w])
            pixels.append(torch.randn(h * w, PATCH_ROW, generator=generator))
        rows.append(row + list(words))
    width = max(map(len, rows))
    input_ids = torch.tensor([[PAD] * (width - len(r)) + r for r in rows])
    attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "mm_token_type_ids": (input_ids == IMAGE).int(),
    }
    if thw:
        inputs["pixel_values"] = torch.cat(pixels)
        inputs["image_grid_thw"] = torch.tensor(thw)
    return inputs
