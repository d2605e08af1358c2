"""Export a HF-format toy LLaVA to the original LLaVA codebase's checkpoint layout (the `llava` package).

    from scope_eval.toy.convert import export_llava_original
    export_llava_original("scope_eval/toy/weights/llava15", "/tmp/llava-v1.5-toy")
    # then: llava.model.builder.load_pretrained_model("/tmp/llava-v1.5-toy", None, "llava-v1.5-toy",
    #                                                 device_map="cpu", device="cpu")

The original codebase loads the vision tower by path (`mm_vision_tower`), so the tower is written as a
CLIPVisionModel directory inside `out_dir` and referenced by its absolute path: move the export and the
path goes stale (export again). The model name passed to `load_pretrained_model` must contain "llava".
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, CLIPImageProcessor, CLIPVisionModel

VISION_TOWER_SUBDIR = "vision_tower"


def _original_llava_config(model, tower_dir: Path):
    from llava.model import LlavaConfig

    is_next = model.config.model_type == "llava_next"
    text = model.config.text_config.to_dict()
    for key in ("model_type", "architectures", "transformers_version", "dtype", "torch_dtype"):
        text.pop(key, None)
    config = LlavaConfig(
        **text,
        mm_vision_tower=str(tower_dir.resolve()),
        mm_hidden_size=model.config.vision_config.hidden_size,
        mm_projector_type="mlp2x_gelu",
        mm_vision_select_layer=model.config.vision_feature_layer,
        mm_vision_select_feature="patch",  # the HF "default" strategy: CLS dropped
        mm_use_im_start_end=False,
        mm_use_im_patch_token=False,
        use_mm_proj=True,
        image_aspect_ratio="anyres" if is_next else "pad",
        mm_patch_merge_type="spatial_unpad" if is_next else "flat",
        tokenizer_padding_side="right",
    )
    if is_next:
        config.image_grid_pinpoints = [list(p) for p in model.config.image_grid_pinpoints]
    config.architectures = ["LlavaLlamaForCausalLM"]
    return config


def _language_state(model) -> dict[str, torch.Tensor]:
    """HF LLaVA weights renamed to LlavaLlamaForCausalLM's keys (tower excluded: it is loaded by path)."""
    state: dict[str, torch.Tensor] = {}
    for key, value in model.model.language_model.state_dict().items():
        state[f"model.{key}"] = value
    projector = model.model.multi_modal_projector
    state["model.mm_projector.0.weight"] = projector.linear_1.weight
    state["model.mm_projector.0.bias"] = projector.linear_1.bias
    state["model.mm_projector.2.weight"] = projector.linear_2.weight
    state["model.mm_projector.2.bias"] = projector.linear_2.bias
    state["lm_head.weight"] = model.lm_head.weight
    if getattr(model.model, "image_newline", None) is not None:
        state["model.image_newline"] = model.model.image_newline
    return state


def export_llava_original(hf_dir: str | Path, out_dir: str | Path) -> Path:
    """Write `out_dir` (created if needed) as an original-LLaVA checkpoint of the HF model in `hf_dir`."""
    try:
        from llava.model import LlavaLlamaForCausalLM
    except ImportError as error:
        raise ImportError(
            "exporting to the original LLaVA format needs the `llava` package: "
            "pip install --no-deps llava-torch==1.2.2.post1"
        ) from error
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    model = AutoModelForImageTextToText.from_pretrained(hf_dir, dtype=torch.float32, device_map="cpu")
    processor = AutoProcessor.from_pretrained(hf_dir)
    if model.config.model_type not in ("llava", "llava_next"):
        raise ValueError(f"{hf_dir} holds a {model.config.model_type!r} model; expected llava or llava_next")
    out_dir.mkdir(parents=True, exist_ok=True)

    tower_dir = out_dir / VISION_TOWER_SUBDIR
    tower = CLIPVisionModel(model.config.vision_config)
    tower.load_state_dict(model.model.vision_tower.state_dict())
    tower.save_pretrained(tower_dir)
    images = processor.image_processor
    CLIPImageProcessor(size={"shortest_edge": images.size["shortest_edge"]}, crop_size=dict(images.crop_size),
                       image_mean=list(images.image_mean), image_std=list(images.image_std)).save_pretrained(tower_dir)

    config = _original_llava_config(model, tower_dir)
    original = LlavaLlamaForCausalLM(config)
    missing, unexpected = original.load_state_dict(_language_state(model), strict=False)
    if unexpected or missing:
        raise RuntimeError(f"weight mapping to the original LLaVA layout is incomplete: missing {missing}, "
                           f"unexpected {unexpected}")
    original.save_pretrained(out_dir)
    processor.tokenizer.save_pretrained(out_dir)
    return out_dir
