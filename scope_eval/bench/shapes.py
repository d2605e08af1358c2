"""Model shapes the benchmark can build from configs alone (no download): the real LLaVA dimensions.

Random weights in the exact shape of a checkpoint cost the same compute as the checkpoint, which is all
a speed benchmark needs. The dimensions follow the llava-hf conversions (vocabulary 32064 = Vicuna's
32000 plus <image> and <pad>, padded to a multiple of 64). ``config()`` uses llava-hf's token ids
(<image> = 32000, <pad> = 32001) unless given others: the bench passes its tokenizer's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaNextConfig,
    PretrainedConfig,
    Qwen2_5_VLConfig,
    Qwen2VLConfig,
)

from scope_eval.adapters.families import NEXT_GRID_PINPOINTS

Family = Literal["llava-1.5", "llava-next", "qwen2-vl", "qwen2.5-vl"]

IMAGE_TOKEN_ID = 32000
PAD_TOKEN_ID = 32001


@dataclass(frozen=True)
class TransformerDims:
    hidden: int
    layers: int
    heads: int
    mlp: int
    kv_heads: int | None = None  # None: as many as query heads (no grouped-query attention)

    def decoder_sizes(self, vocab: int) -> dict[str, int]:
        """These dims as a transformers decoder config's size arguments."""
        return dict(
            vocab_size=vocab,
            hidden_size=self.hidden,
            intermediate_size=self.mlp,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            num_key_value_heads=self.kv_heads or self.heads,
        )


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
            **self.text.decoder_sizes(vocab or self.vocab),
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

QWEN_IMAGE_TOKEN_ID = 151655  # <|image_pad|> in Qwen2-VL's and Qwen2.5-VL's vocabulary
QWEN_VOCAB = 152064


@dataclass(frozen=True)
class QwenShape:
    """A Qwen2-VL / Qwen2.5-VL shape: the ViT (``vision.hidden`` = its embed_dim), the decoder, and the
    2-D mRoPE split of the decoder's rotary half-dimension (t, h, w). Tokens per image vary with the
    image size (processor min/max_pixels): 14 px patches, 2x2 merged into one LM token."""

    name: str
    family: Family
    vision: TransformerDims
    text: TransformerDims
    vocab: int
    mrope_section: tuple[int, int, int]
    fullatt_block_indexes: tuple[int, ...] = ()  # Qwen2.5-VL: the ViT blocks with full (not window) attention
    window_size: int = 112  # Qwen2.5-VL: window side in pixels
    patch_size: int = 14

    def config(self, image_token_id: int = QWEN_IMAGE_TOKEN_ID, vocab: int | None = None, **token_ids: int) -> PretrainedConfig:
        """The transformers config; ``token_ids`` may rename video_token_id / vision_start_token_id /
        vision_end_token_id (a test's small vocabulary); ids do not change the shape."""
        text = dict(
            **self.text.decoder_sizes(vocab or self.vocab),
            max_position_embeddings=32768,
            rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": list(self.mrope_section)},
        )
        if self.family == "qwen2-vl":
            vision = dict(
                depth=self.vision.layers, embed_dim=self.vision.hidden, num_heads=self.vision.heads,
                mlp_ratio=self.vision.mlp // self.vision.hidden, hidden_size=self.text.hidden, patch_size=self.patch_size,
            )
            config_class = Qwen2VLConfig
        else:
            vision = dict(
                depth=self.vision.layers, hidden_size=self.vision.hidden, num_heads=self.vision.heads,
                intermediate_size=self.vision.mlp, out_hidden_size=self.text.hidden, patch_size=self.patch_size,
                window_size=self.window_size, fullatt_block_indexes=list(self.fullatt_block_indexes),
            )
            config_class = Qwen2_5_VLConfig
        return config_class(text_config=text, vision_config=vision, image_token_id=image_token_id, **token_ids)


# Qwen/Qwen2-VL-7B-Instruct and Qwen/Qwen2.5-VL-7B-Instruct config.json: ViT 32 x 1280 (16 heads), Qwen2-7B
# decoder 28 x 3584 (28 query / 4 key-value heads, MLP 18944), mrope_section [16, 24, 24].
QWEN2_VL_VIT = TransformerDims(hidden=1280, layers=32, heads=16, mlp=5120)
QWEN2_5_VL_VIT = TransformerDims(hidden=1280, layers=32, heads=16, mlp=3420)
QWEN2_7B = TransformerDims(hidden=3584, layers=28, heads=28, mlp=18944, kv_heads=4)
TINY_QWEN_VIT = TransformerDims(hidden=32, layers=4, heads=4, mlp=64)
TINY_QWEN_TEXT = TransformerDims(hidden=64, layers=3, heads=2, mlp=128, kv_heads=1)

QWEN_SHAPES: dict[str, QwenShape] = {
    shape.name: shape
    for shape in (
        QwenShape("qwen2-vl-7b", "qwen2-vl", QWEN2_VL_VIT, QWEN2_7B, QWEN_VOCAB, (16, 24, 24)),
        QwenShape("qwen2.5-vl-7b", "qwen2.5-vl", QWEN2_5_VL_VIT, QWEN2_7B, QWEN_VOCAB, (16, 24, 24), (7, 15, 23, 31)),
        QwenShape("tiny-qwen2-vl", "qwen2-vl", TINY_QWEN_VIT, TINY_QWEN_TEXT, QWEN_VOCAB, (4, 6, 6)),
        QwenShape("tiny-qwen2.5-vl", "qwen2.5-vl", TINY_QWEN_VIT, TINY_QWEN_TEXT, QWEN_VOCAB, (4, 6, 6), (1, 3)),
    )
}

# Trained toy checkpoints shipped inside the package (scope_eval/toy/weights/<kind>), by shape name.
TOY_CHECKPOINTS: dict[str, str] = {"toy-llava-1.5": "llava15", "toy-llava-next": "llava_next"}
TOY_KIND: dict[str, str] = {"llava-1.5": "llava15", "llava-next": "llava_next"}  # scope_eval.toy's names

# Qwen: the share of an image's visual tokens kept in the paper's Table 8 (the bench turns them into budgets
# for its test image, PruningPlan.ratio_budget).
PAPER_KEEP_RATIOS: dict[str, tuple[float, ...]] = {"qwen2-vl": (0.25, 0.10), "qwen2.5-vl": (0.25, 0.10)}

# The paper's budgets per family (Tables 1 and 2; the unit: docs/semantics.md#budget-unit).
PAPER_BUDGETS: dict[str, tuple[int, ...]] = {"llava-1.5": (192, 128, 64), "llava-next": (640, 320, 160)}
