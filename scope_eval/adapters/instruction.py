"""The instruction for methods that need it (cdpruner): the prompt's text, embedded by a CLIP text tower.

The host LLaVA models ship no CLIP text tower, so one is loaded from ``text_encoder`` (a path or hub
id of a full CLIP checkpoint with its tokenizer; the official CDPruner uses the vision tower's own,
openai/clip-vit-large-patch14-336). From it come the text tower (instruction embeddings) and the
vision side's post-LayerNorm and visual projection (image tokens into the same joint space).

Which text: the official code embeds the raw question, without conversation template or ``<image>``.
The adapters only see the templated prompt's token ids, so ``instruction_texts`` decodes, per image,
the tokens after that image's placeholder run up to the next image or the end of the row (pad and
special tokens skipped) and strips a trailing assistant-turn marker of the LLaVA chat templates. With
lmms-eval's prompts ("<image>\\n{question}{post_prompt}") that is the question plus the task's
post-prompt, which the official LLaVA question files also carry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from scope_eval.pruning import PruningError

# Assistant-turn markers that end the user's turn in LLaVA-1.5 (vicuna), LLaVA-NeXT mistral and chatml
# templates: the text after them is the model's, not the instruction.
ASSISTANT_MARKERS = ("ASSISTANT:", "[/INST]", "<|im_start|>assistant", "<|im_end|>")


def instruction_texts(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, image_token_id: int, tokenizer: Any) -> list[str]:
    """One instruction per image, in the order the images' placeholder runs appear (row by row)."""
    texts = []
    for row in range(input_ids.shape[0]):
        ids = input_ids[row]
        if attention_mask is not None:
            ids = ids[attention_mask[row].bool()]
        is_image = ids == image_token_id
        # a run ends where an image token is followed by a non-image token (or the row ends)
        starts_after = [i + 1 for i in range(len(ids)) if is_image[i] and (i + 1 == len(ids) or not is_image[i + 1])]
        for start in starts_after:
            following = is_image[start:].nonzero()
            stop = start + int(following[0]) if len(following) else len(ids)
            texts.append(_strip_assistant_marker(tokenizer.decode(ids[start:stop].tolist(), skip_special_tokens=True)))
    return texts


def _strip_assistant_marker(text: str) -> str:
    text = text.strip()
    stripped = True
    while stripped:
        stripped = False
        for marker in ASSISTANT_MARKERS:
            if text.endswith(marker):
                text, stripped = text[: -len(marker)].rstrip(), True
    return text


def original_backend_refusal(method: str) -> PruningError:
    """The original-LLaVA adapter cannot give a method the prompt's text: said the same at every edge."""
    # The prompt reaches that adapter only as token ids, and prune() hands it no tokenizer to read them with
    # (lmms-eval's llava wrapper keeps its own), so the instruction cannot be embedded.
    return PruningError(
        f"method '{method}' needs the prompt's text, which the original-LLaVA adapter cannot decode "
        "(it is given token ids and no tokenizer); run it on the transformers backend (model llava_hf_scope, "
        "or prune() on a LlavaForConditionalGeneration / LlavaNextForConditionalGeneration with processor=)"
    )


def host_tokenizer(processor: Any, method: str) -> Any:
    """The tokenizer that decodes the host's prompt ids: the processor's, or the processor if it is one."""
    tokenizer = getattr(processor, "tokenizer", processor)
    if tokenizer is None or not hasattr(tokenizer, "decode"):
        raise PruningError(
            f"method '{method}' reads the prompt's text: pass processor= (the model's processor or tokenizer, "
            "which decodes the prompt's token ids)"
        )
    return tokenizer


FULL_CLIP_HINT = (
    "pass the path or hub id of a full CLIP checkpoint (text and vision towers with their projections), the CLIP of "
    "the model's own vision tower, e.g. openai/clip-vit-large-patch14-336 for LLaVA-1.5/NeXT (not the LLaVA checkpoint)"
)
# The CLIP weights the instruction and the joint-space map read; a checkpoint without them would run on
# randomly initialised values (transformers fills missing weights and only lists them in its load report).
USED_WEIGHTS = ("text_model.", "text_projection.", "vision_model.post_layernorm.", "visual_projection.")


def check_text_encoder(source: Any, feature_width: int | None = None) -> None:
    """What can be known of ``text_encoder`` before any weights load: a local path exists, its config.json
    is a CLIP model's, and its vision width is the host vision tower's (``feature_width``, when known).
    A hub id not in the local cache is left to the load (InstructionEncoder), which checks it all."""
    from scope_eval.checkpoints import looks_like_local_path

    from .families import checkpoint_config

    if not isinstance(source, str) or not source:
        raise PruningError(f"text_encoder must be a path or hub id, got {source!r}; {FULL_CLIP_HINT}")
    if looks_like_local_path(source) and not Path(source).expanduser().is_dir():
        raise PruningError(f"text_encoder={source!r} is not a folder; {FULL_CLIP_HINT}")
    config = checkpoint_config(source)
    if config is not None:
        check_clip_config(source, config, feature_width)
    stored = _stored_weight_names(Path(source).expanduser()) if Path(source).expanduser().is_dir() else None
    absent = [part for part in USED_WEIGHTS if stored is not None and not any(name.startswith(part) for name in stored)]
    if absent:
        raise PruningError(
            f"text_encoder={source!r} holds no {', '.join(part.rstrip('.') for part in absent)} weights, which transformers "
            f"would fill with random values; {FULL_CLIP_HINT}"
        )


def _stored_weight_names(folder: Path) -> set[str] | None:
    """The weight names a local safetensors checkpoint stores (its index, or the file's header alone); None
    for other formats, left to the load report."""
    import json

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            return set(json.loads(index.read_text())["weight_map"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    single = folder / "model.safetensors"
    if not single.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(single), framework="pt") as weights:
            return set(weights.keys())
    except (OSError, ValueError, RuntimeError):
        return None


def check_clip_config(source: str, config: dict[str, Any], feature_width: int | None) -> None:
    from transformers import CLIPVisionConfig

    model_type = config.get("model_type")
    if model_type != "clip":
        raise PruningError(
            f"text_encoder={source!r} is a {model_type or 'untyped'} checkpoint (config.json model_type), not a CLIP "
            f"model; {FULL_CLIP_HINT}"
        )
    width = (config.get("vision_config") or {}).get("hidden_size", CLIPVisionConfig().hidden_size)
    if feature_width is not None and width != feature_width:
        raise PruningError(
            f"text_encoder={source!r} has {width}-d vision features but this model's vision tower gives "
            f"{feature_width}-d ones, so its joint space does not fit; pass the CLIP checkpoint of the model's own vision tower"
        )


class InstructionEncoder:
    """CLIP text tower + tokenizer + the vision side's post-LayerNorm and visual projection, float32."""

    def __init__(self, source: str, feature_width: int, device: torch.device):
        from transformers import AutoTokenizer, CLIPModel

        check_text_encoder(source, feature_width)
        try:
            clip, loading = CLIPModel.from_pretrained(source, output_loading_info=True)
            self.tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as error:
            raise PruningError(
                f"text_encoder={source!r} could not be loaded as a CLIP model with its tokenizer ({error}); {FULL_CLIP_HINT}"
            ) from error
        check_clip_config(source, clip.config.to_dict(), feature_width)
        missing = sorted(key for key in loading.get("missing_keys", ()) if key.startswith(USED_WEIGHTS))
        if missing:
            raise PruningError(
                f"text_encoder={source!r} lacks {len(missing)} CLIP weight(s) the instruction needs (e.g. "
                f"{', '.join(missing[:3])}), which transformers would fill with random values; {FULL_CLIP_HINT}"
            )
        clip = clip.float().eval().to(device)
        self.text_model, self.text_projection = clip.text_model, clip.text_projection
        self.post_layernorm, self.visual_projection = clip.vision_model.post_layernorm, clip.visual_projection
        self.segment = clip.config.text_config.max_position_embeddings

    @torch.no_grad()
    def encode(self, text: str) -> torch.Tensor:
        """[M, C] embeddings of ``text``'s M segments of ``segment`` tokens, as the official code splits it:
        tokenized whole (no truncation), zero-padded (ids and mask) to a multiple of the segment length."""
        inputs = self.tokenizer(text, return_tensors="pt")
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        padding = -ids.shape[1] % self.segment
        device = self.text_projection.weight.device
        ids = torch.cat([ids, ids.new_zeros(1, padding)], dim=1).view(-1, self.segment).to(device)
        mask = torch.cat([mask, mask.new_zeros(1, padding)], dim=1).view(-1, self.segment).to(device)
        pooled = self.text_model(input_ids=ids, attention_mask=mask).pooler_output
        return self.text_projection(pooled)

    @torch.no_grad()
    def text_space(self, features: torch.Tensor) -> torch.Tensor:
        """[.., N, C]: vision features (the LLaVA layer's hidden states) in the CLIP joint space."""
        device = self.visual_projection.weight.device
        return self.visual_projection(self.post_layernorm(features.to(device=device, dtype=torch.float32)))
