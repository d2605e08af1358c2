"""Builders for the toy LLaVA-1.5 / LLaVA-NeXT: real geometry, tiny widths, own word-level tokenizer.

The vision tower is a CLIP ViT at 336 px with 14 px patches (576 patch tokens + CLS), LLaVA reads layer -2
with the "default" strategy (CLS dropped), a 2-layer GELU projector maps to a small Llama. Everything is
built in-process (no hub), so tests can use `build_toy_llava(kind, seed)` with random weights, and the
shipped trained weights load with the standard Auto classes (`load_toy`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from scope_eval.adapters.families import NEXT_GRID_PINPOINTS

from .vocab import SPECIAL_TOKENS, SYSTEM_PROMPT, vocabulary

ToyKind = Literal["llava15", "llava_next"]
TOY_KINDS: tuple[str, ...] = ("llava15", "llava_next")

IMAGE_SIZE = 336
PATCH_SIZE = 14
NUM_PATCHES = (IMAGE_SIZE // PATCH_SIZE) ** 2  # 576
VISION_FEATURE_LAYER = -2
GRID_PINPOINTS = NEXT_GRID_PINPOINTS  # the released LLaVA-NeXT checkpoints' anyres grids
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

# Renders exactly conv_templates["vicuna_v1"] of the original LLaVA codebase:
# "{system} USER: <image>\n{text} ASSISTANT:" (answers end with "</s>"). A system message replaces the
# default system prompt. Message content may be a string or a list of {"type": "image"|"text"} items.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(system='" + SYSTEM_PROMPT.replace("'", "\\'") + "') -%}"
    "{%- for message in messages if message['role'] == 'system' -%}"
    "{%- if message['content'] is string -%}{%- set ns.system = message['content'] -%}"
    "{%- else -%}{%- set ns.system = message['content'][0]['text'] -%}{%- endif -%}"
    "{%- endfor -%}"
    "{{- ns.system + ' ' -}}"
    "{%- for message in messages if message['role'] != 'system' -%}"
    "{%- if message['role'] == 'user' -%}{{- 'USER: ' -}}{%- else -%}{{- 'ASSISTANT: ' -}}{%- endif -%}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{- '<image>\\n' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- if message['role'] == 'user' -%}{{- ' ' -}}{%- else -%}{{- '</s>' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over `vocabulary()`; prepends <s> like the Llama tokenizer LLaVA uses."""
    words = vocabulary()
    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    bos_id = words.index("<s>")
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"}, model_max_length=4096,
    )
    tokenizer.padding_side = "left"
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def toy_vision_config() -> CLIPVisionConfig:
    return CLIPVisionConfig(
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, hidden_size=64, intermediate_size=256,
        num_hidden_layers=4, num_attention_heads=4, projection_dim=64,
    )


def toy_text_config(tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=384, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096, rms_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )


def toy_config(kind: ToyKind, tokenizer: PreTrainedTokenizerFast) -> LlavaConfig | LlavaNextConfig:
    common = dict(
        vision_config=toy_vision_config(), text_config=toy_text_config(tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=VISION_FEATURE_LAYER,
        vision_feature_select_strategy="default", projector_hidden_act="gelu", image_seq_length=NUM_PATCHES,
        tie_word_embeddings=False,
    )
    if kind == "llava15":
        return LlavaConfig(**common)
    if kind == "llava_next":
        return LlavaNextConfig(image_grid_pinpoints=GRID_PINPOINTS, **common)
    raise ValueError(f"unknown toy kind {kind!r}; expected one of {TOY_KINDS}")


def build_processor(kind: ToyKind, tokenizer: PreTrainedTokenizerFast | None = None):
    tokenizer = tokenizer or build_tokenizer()
    size = {"shortest_edge": IMAGE_SIZE}
    crop = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    common = dict(patch_size=PATCH_SIZE, vision_feature_select_strategy="default", num_additional_image_tokens=1,
                  chat_template=CHAT_TEMPLATE)
    if kind == "llava15":
        images = CLIPImageProcessorPil(size=size, crop_size=crop, image_mean=CLIP_MEAN, image_std=CLIP_STD)
        return LlavaProcessor(image_processor=images, tokenizer=tokenizer, **common)
    if kind == "llava_next":
        images = LlavaNextImageProcessorPil(size=size, crop_size=crop, image_grid_pinpoints=GRID_PINPOINTS,
                                            image_mean=CLIP_MEAN, image_std=CLIP_STD)
        return LlavaNextProcessor(image_processor=images, tokenizer=tokenizer, **common)
    raise ValueError(f"unknown toy kind {kind!r}; expected one of {TOY_KINDS}")


def reinit_language_and_projector(model: LlavaForConditionalGeneration, seed: int, modules: list | None = None) -> None:
    """Embeddings N(0, 1), Linear N(0, 1/fan_in), biases 0, on the language model, projector and lm_head
    (or on ``modules``, for another family's equivalents).

    HF's default (std 0.02) left the tiny LM unable to learn a question-dependent lookup over image
    tokens (research/toy_recipe2.md); unit-scale token embeddings fixed that.
    """
    generator = torch.Generator().manual_seed(seed)
    if modules is None:
        modules = [model.model.language_model, model.model.multi_modal_projector, model.lm_head]
    with torch.no_grad():
        for root in modules:
            for module in root.modules():
                if isinstance(module, torch.nn.Embedding):
                    module.weight.normal_(0.0, 1.0, generator=generator)
                elif isinstance(module, torch.nn.Linear):
                    module.weight.normal_(0.0, module.in_features ** -0.5, generator=generator)
                    if module.bias is not None:
                        module.bias.zero_()


def build_toy_llava(kind: ToyKind = "llava15", seed: int = 0):
    """A randomly initialised toy (model, processor) with the real LLaVA geometry; eval mode, float32."""
    tokenizer = build_tokenizer()
    config = toy_config(kind, tokenizer)
    torch.manual_seed(seed)
    model_class = LlavaForConditionalGeneration if kind == "llava15" else LlavaNextForConditionalGeneration
    model = model_class(config)
    reinit_language_and_projector(model, seed)
    return model.eval(), build_processor(kind, tokenizer)


def shipped_weights_dir(kind: ToyKind) -> Path:
    if kind not in TOY_KINDS:
        raise ValueError(f"unknown toy kind {kind!r}; expected one of {TOY_KINDS}")
    return WEIGHTS_DIR / kind


def load_toy(kind: ToyKind = "llava15", dtype: torch.dtype = torch.float32):
    """The shipped trained toy (model, processor), loaded offline with the Auto classes."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    directory = shipped_weights_dir(kind)
    if not (directory / "config.json").exists():
        raise FileNotFoundError(
            f"no trained toy weights in {directory}; train them with `python -m toy_training.train`"
        )
    model = AutoModelForImageTextToText.from_pretrained(directory, dtype=dtype, device_map="cpu")
    return model.eval(), AutoProcessor.from_pretrained(directory)
