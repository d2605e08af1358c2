"""Tiny random LLaVA models with the real 336 px / 14 px geometry (576 tokens per crop), built offline."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    CLIPImageProcessor,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessor,
    LlavaNextProcessor,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from scope_eval.adapters.families import NEXT_GRID_PINPOINTS as PINPOINTS
from scope_eval.bench.shapes import SHAPES

WORDS = "what is in the image ? describe a red blue green circle square yes no there how many . , : \n".split(" ")
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %} ASSISTANT:{% endif %}{% endfor %}"
)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    specials = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(set(WORDS + ["USER:", "ASSISTANT:"])))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    tokenizer.padding_side = "left"
    return tokenizer


def _configs(tokenizer):
    """The bench's tiny-llava-1.5 shape (scope_eval/bench/shapes.py) with this tokenizer's vocabulary and ids."""
    config = SHAPES["tiny-llava-1.5"].config(
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), pad_token_id=3, vocab=len(tokenizer)
    )
    return dict(
        vision_config=config.vision_config, text_config=config.text_config, image_token_id=config.image_token_id,
        vision_feature_layer=config.vision_feature_layer, vision_feature_select_strategy=config.vision_feature_select_strategy,
    )


def tiny_llava(seed: int = 0):
    """(model, processor) for LLaVA-1.5 geometry."""
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    model = LlavaForConditionalGeneration(LlavaConfig(**_configs(tokenizer))).eval()
    image_processor = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE,
    )
    return model, processor


def tiny_llava_next(seed: int = 0):
    """(model, processor) for LLaVA-NeXT geometry (anyres, up to 5 crops of 576 tokens)."""
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    model = LlavaNextForConditionalGeneration(LlavaNextConfig(**_configs(tokenizer), image_grid_pinpoints=PINPOINTS)).eval()
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, image_grid_pinpoints=PINPOINTS
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE,
    )
    return model, processor


def save(model, processor, directory: Path) -> Path:
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def tiny_llava_original(directory: Path, anyres: bool = False, seed: int = 0):
    """(model, tokenizer, image_processor) of the original LLaVA codebase, same tiny geometry.

    The original codebase loads its CLIP tower from a path (``mm_vision_tower``), so one is saved first.
    """
    from llava.model import LlavaLlamaForCausalLM
    from llava.model.language_model.llava_llama import LlavaConfig as OriginalLlavaConfig
    from transformers import CLIPVisionModel

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    common = _configs(tokenizer)
    tower_dir = Path(directory) / "clip"
    CLIPVisionModel(common["vision_config"]).save_pretrained(tower_dir)
    CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}).save_pretrained(tower_dir)
    text = common["text_config"].to_dict()
    for key in ("architectures", "model_type", "transformers_version"):
        text.pop(key, None)
    config = OriginalLlavaConfig(
        **text,
        mm_vision_tower=str(tower_dir),
        mm_hidden_size=common["vision_config"].hidden_size,
        mm_projector_type="mlp2x_gelu",
        mm_vision_select_layer=-2,
        mm_vision_select_feature="patch",
        mm_use_im_start_end=False,
        mm_use_im_patch_token=False,
        image_aspect_ratio="anyres" if anyres else "pad",
        mm_patch_merge_type="spatial_unpad" if anyres else "flat",
        image_grid_pinpoints=PINPOINTS if anyres else None,
    )
    model = LlavaLlamaForCausalLM(config)
    model.get_model().vision_tower.load_model()
    model.eval()
    if anyres:
        with torch.no_grad():
            model.get_model().image_newline.normal_()
    return model, tokenizer, model.get_model().vision_tower.image_processor


def tiny_clip(directory: Path, seed: int = 0) -> Path:
    """A tiny random CLIP checkpoint (model + tokenizer) saved to ``directory``, for ``text_encoder=``.

    Its vision width is the tiny LLaVA towers' (32), so its post-LayerNorm and visual projection accept
    their features; the word-level tokenizer adds <s> ... </s> as CLIP's does, and the text config's
    eos_token_id points at </s>, where CLIP pools.
    """
    from tokenizers.processors import TemplateProcessing
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", tokenizer.bos_token_id), ("</s>", tokenizer.eos_token_id)]
    )
    vision = _configs(tokenizer)["vision_config"]
    text = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16)
    CLIPModel(config).eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return Path(directory)
