"""Builders for the toy Qwen2-VL: transformers' Qwen2VLForConditionalGeneration with tiny widths.

The real Qwen2-VL geometry (14 px patches, 2 frames per temporal patch, 2x2 merge into one LM token, mRoPE
in the language model) at the toy LLaVA's widths: a 336 px scene is 24x24 patches, merged to 144 visual
tokens. The tokenizer is the toy LLaVA's word-level vocabulary (same ids) plus Qwen's chat special tokens
and the words of lmms-eval's default Qwen system prompt, so a trained toy LLaVA language model can seed it.
``build_toy_qwen2_vl(seed)`` gives a random model for tests; ``load_toy_qwen2_vl()`` the shipped trained one.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)

from .model import WEIGHTS_DIR, reinit_language_and_projector
from .vocab import SPECIAL_TOKENS, vocabulary

QWEN_WEIGHTS_DIR = WEIGHTS_DIR / "qwen2_vl"
# lmms-eval 0.7.3 qwen2_vl's defaults; pinned in every toy config because they decide N (and so K).
MIN_PIXELS = 3136
MAX_PIXELS = 602112
MERGED_TOKENS_336 = (336 // 28) ** 2  # 144 visual tokens for a 336 px scene

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>",
)
# Words of lmms-eval's default Qwen system prompt ("You are a helpful assistant.") and chat roles that the
# LLaVA vocabulary lacks.
QWEN_EXTRA_WORDS = ("You", "system", "user")
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

# The toy LLaVA's vicuna_v1 turn format (which its language model, the seed of this one, knows) with Qwen's
# image markers: "<s>{system} USER: <|vision_start|><|image_pad|><|vision_end|>\n{text} ASSISTANT:", answers
# ending with "</s>". The system message lmms-eval's qwen2_vl sends ("You are a helpful assistant.") is
# rendered as given; without one, the default Qwen system prompt. Real Qwen2-VL uses <|im_start|> turns: the
# markers that matter to the model code (vision start/end, image and video pads) are Qwen's.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(system='" + DEFAULT_SYSTEM_PROMPT + "') -%}"
    "{%- for message in messages if message['role'] == 'system' -%}"
    "{%- if message['content'] is string -%}{%- set ns.system = message['content'] -%}"
    "{%- else -%}{%- set ns.system = message['content'][0]['text'] -%}{%- endif -%}"
    "{%- endfor -%}"
    "{{- '<s>' + ns.system + ' ' -}}"
    "{%- for message in messages if message['role'] != 'system' -%}"
    "{%- if message['role'] == 'user' -%}{{- 'USER: ' -}}{%- else -%}{{- 'ASSISTANT: ' -}}{%- endif -%}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' or 'image' in item or 'image_url' in item -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>\\n' -}}"
    "{%- elif item['type'] == 'video' or 'video' in item -%}{{- '<|vision_start|><|video_pad|><|vision_end|>\\n' -}}"
    "{%- elif 'text' in item -%}{{- item['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- if message['role'] == 'user' -%}{{- ' ' -}}{%- else -%}{{- '</s>' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
)


def qwen_vocabulary() -> list[str]:
    """The toy LLaVA's vocabulary in its order (ids 0-85 shared), then Qwen's specials and extra words."""
    words = vocabulary()
    return words + list(QWEN_SPECIAL_TOKENS) + [w for w in QWEN_EXTRA_WORDS if w not in words]


def build_qwen_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level; the chat template writes <s> (the tokenizer adds nothing); eos is </s>, the end of an answer."""
    words = qwen_vocabulary()
    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(list(SPECIAL_TOKENS) + list(QWEN_SPECIAL_TOKENS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"}, model_max_length=4096,
    )
    tokenizer.padding_side = "left"
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def toy_qwen2_vl_config(tokenizer: PreTrainedTokenizerFast) -> Qwen2VLConfig:
    ids = tokenizer.convert_tokens_to_ids
    vision = dict(depth=4, embed_dim=64, hidden_size=128, num_heads=4, mlp_ratio=4, in_channels=3, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2)
    # head_dim 32: mRoPE splits its 16 frequencies into t / h / w sections like Qwen2-VL's [16, 24, 24] of 64.
    # rope_theta 10000 is the toy LLaVA language model's, which seeds this one.
    text = dict(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=384, num_hidden_layers=3,
                num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096, rms_norm_eps=1e-5,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
                bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return Qwen2VLConfig(
        vision_config=vision, text_config=text, image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"), tie_word_embeddings=False,
    )


def build_qwen_processor(tokenizer: PreTrainedTokenizerFast | None = None) -> Qwen2VLProcessor:
    images = Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    videos = Qwen2VLVideoProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    return Qwen2VLProcessor(image_processor=images, tokenizer=tokenizer or build_qwen_tokenizer(),
                            video_processor=videos, chat_template=CHAT_TEMPLATE)


def build_toy_qwen2_vl(seed: int = 0) -> tuple[Qwen2VLForConditionalGeneration, Qwen2VLProcessor]:
    """A randomly initialised toy (model, processor); eval mode, float32, eager attention."""
    tokenizer = build_qwen_tokenizer()
    return _random_model(Qwen2VLForConditionalGeneration, toy_qwen2_vl_config(tokenizer), seed), build_qwen_processor(tokenizer)


def _random_model(model_class: type, config, seed: int):
    """Eager attention (the saliency of the pruning methods is recomputed eagerly anyway); the language model,
    merger and lm_head at unit scale like the toy LLaVA's (reinit_language_and_projector)."""
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = model_class(config)
    reinit_language_and_projector(model, seed, [model.model.language_model, model.model.visual.merger, model.lm_head])
    return model.eval()


def toy_qwen2_5_vl_config(tokenizer: PreTrainedTokenizerFast) -> Qwen2_5_VLConfig:
    """Qwen2.5-VL's layout at toy widths: windowed vision blocks (112 px windows = 4x4 merged tokens) with
    full attention at blocks 1 and 3, RMSNorm + SwiGLU vision MLPs, the merger to the LM width."""
    text = toy_qwen2_vl_config(tokenizer).text_config.to_dict()
    for key in ("model_type", "architectures", "transformers_version", "dtype"):
        text.pop(key, None)
    ids = tokenizer.convert_tokens_to_ids
    vision = dict(depth=4, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=128, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[1, 3])
    return Qwen2_5_VLConfig(
        vision_config=vision, text_config=text, image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"), tie_word_embeddings=False,
    )


def build_toy_qwen2_5_vl(seed: int = 0) -> tuple[Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor]:
    """A randomly initialised toy Qwen2.5-VL (model, processor) for plumbing tests; no trained weights ship."""
    tokenizer = build_qwen_tokenizer()
    model = _random_model(Qwen2_5_VLForConditionalGeneration, toy_qwen2_5_vl_config(tokenizer), seed)
    qwen2 = build_qwen_processor(tokenizer)
    processor = Qwen2_5_VLProcessor(image_processor=qwen2.image_processor, tokenizer=tokenizer,
                                    video_processor=qwen2.video_processor, chat_template=CHAT_TEMPLATE)
    return model, processor


def load_toy_qwen2_vl(dtype: torch.dtype = torch.float32):
    """The shipped trained toy Qwen2-VL (model, processor), loaded offline with the Auto classes."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if not (QWEN_WEIGHTS_DIR / "config.json").exists():
        raise FileNotFoundError(
            f"no trained toy Qwen2-VL in {QWEN_WEIGHTS_DIR}; train it with `python -m toy_training.train_qwen2_vl`"
        )
    model = AutoModelForImageTextToText.from_pretrained(QWEN_WEIGHTS_DIR, dtype=dtype, device_map="cpu")
    return model.eval(), AutoProcessor.from_pretrained(QWEN_WEIGHTS_DIR)
