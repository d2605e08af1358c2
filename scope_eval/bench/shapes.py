"""Model shapes the benchmark can build from configs alone (no download): the real LLaVA dimensions.

Random weights in the exact shape of a checkpoint cost the same compute as the checkpoint, which is all
a speed benchmark needs. The dimensions follow the llava-hf conversions (vocabulary 32064 = Vicuna's
32000 plus <image> and <pad>, padded to a multiple of 64). ``config()`` uses llava-hf's token ids
(<image> = 32000, <pad> = 32001) unless given others: the bench passes its tokenizer's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaNextConfig, PretrainedConfig

from scope_eval.adapters.families import NEXT_GRID_PINPOINTS

Family = Literal["llava-1.5", "llava-next"]

IMAGE_TOKEN_ID = 32000
PAD_TOKEN_ID = 32001


@dataclass(frozen=True)
class TransformerDims:
    hidden: int
    layers: int
    heads: int
    mlp: int
    kv_heads: int | None = None  # None: as many as query heads (no grouped-query attention)


@dataclass(frozen=True)
class ModelShape:
    name: str
    family: Family
    vision: TransformerDims
    text: TransformerDims
    vocab: int
    image_size: int = 336
    patch_size: int = 14

    def config(self, image_token_id: int = IMAGE_TOKEN_ID, pad_token_id: int = PAD_TOKEN_ID, vocab: int | None = None) -> PretrainedConfig:
        """The llava-hf config; the token ids only name vocabulary rows and do not change the shape.
        ``vocab``: another vocabulary size (a test's tiny tokenizer), else the shape's."""
        vision = CLIPVisionConfig(
            hidden_size=self.vision.hidden,
            intermediate_size=self.vision.mlp,
            num_hidden_layers=self.vision.layers,
            num_attention_heads=self.vision.heads,
            image_size=self.image_size,
            patch_size=self.patch_size,
            projection_dim=768,
            hidden_act="quick_gelu",
        )
        text = LlamaConfig(
            vocab_size=vocab or self.vocab,
            hidden_size=self.text.hidden,
            intermediate_size=self.text.mlp,
            num_hidden_layers=self.text.layers,
            num_attention_heads=self.text.heads,
            num_key_value_heads=self.text.kv_heads or self.text.heads,
            max_position_embeddings=4096,
            rms_norm_eps=1e-5,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=pad_token_id,
        )
        common = {
            "vision_config": vision,
            "text_config": text,
            "image_token_id": image_token_id,
            "vision_feature_layer": -2,
            "vision_feature_select_strategy": "default",
            "projector_hidden_act": "gelu",
        }
        if self.family == "llava-next":
            return LlavaNextConfig(**common, image_grid_pinpoints=NEXT_GRID_PINPOINTS)
        return LlavaConfig(**common)


CLIP_VIT_L_336 = TransformerDims(hidden=1024, layers=24, heads=16, mlp=4096)
VICUNA_7B = TransformerDims(hidden=4096, layers=32, heads=32, mlp=11008)
VICUNA_13B = TransformerDims(hidden=5120, layers=40, heads=40, mlp=13824)
# Same 336 px / 14 px geometry (576 tokens per crop), tiny widths: exercises every real code path in ms.
TINY_VISION = TransformerDims(hidden=32, layers=3, heads=4, mlp=64)
TINY_TEXT = TransformerDims(hidden=32, layers=2, heads=4, mlp=64)
LLAVA_HF_VOCAB = 32064

SHAPES: dict[str, ModelShape] = {
    shape.name: shape
    for shape in (
        ModelShape("llava-1.5-7b", "llava-1.5", CLIP_VIT_L_336, VICUNA_7B, LLAVA_HF_VOCAB),
        ModelShape("llava-1.5-13b", "llava-1.5", CLIP_VIT_L_336, VICUNA_13B, LLAVA_HF_VOCAB),
        ModelShape("llava-next-7b", "llava-next", CLIP_VIT_L_336, VICUNA_7B, LLAVA_HF_VOCAB),
        ModelShape("tiny-llava-1.5", "llava-1.5", TINY_VISION, TINY_TEXT, LLAVA_HF_VOCAB),
        ModelShape("tiny-llava-next", "llava-next", TINY_VISION, TINY_TEXT, LLAVA_HF_VOCAB),
    )
}

# Trained toy checkpoints shipped inside the package (scope_eval/toy/weights/<kind>), by shape name.
TOY_CHECKPOINTS: dict[str, str] = {"toy-llava-1.5": "llava15", "toy-llava-next": "llava_next"}
TOY_KIND: dict[str, str] = {"llava-1.5": "llava15", "llava-next": "llava_next"}  # scope_eval.toy's names

# The paper's budgets per family (Tables 1 and 2; the unit: docs/semantics.md#budget-unit).
PAPER_BUDGETS: dict[str, tuple[int, ...]] = {"llava-1.5": (192, 128, 64), "llava-next": (640, 320, 160)}
