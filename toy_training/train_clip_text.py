"""A CLIP text tower for the toy LLaVA, so that instruction-aware methods (CDPruner) run on the toy.

CDPruner embeds the prompt with the CLIP text tower paired with the LLaVA vision tower and maps the vision
features into the same joint space (the vision side's post-LayerNorm and visual projection). The toy's
vision tower was trained inside this repository and has no text tower, so this script trains one: a
2-layer CLIP text transformer over the toy's own vocabulary, and the visual projection, against the
frozen toy vision tower, so that a question's embedding is close (cosine) to the patches of the object
it names. The result is a full CLIPModel checkpoint (the toy vision tower copied in) with its tokenizer:

    python -m toy_training.train_clip_text                       # -> scope_eval/toy/weights/clip_text
    scope-eval sweep configs/toy_llava15.yaml                    # cdpruner uses it (text_encoder=...)

Deterministic on one machine for a given seed; a few minutes on one CPU core.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tokenizers import processors
from torch.nn import functional as F
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig

from scope_eval.lmms.tasks.toy.scenes import CLASSES
from scope_eval.toy.model import WEIGHTS_DIR, build_tokenizer, load_toy
from scope_eval.toy.questions import existence_text

from .training_data import build_pool, pixel_values

OUTPUT = WEIGHTS_DIR / "clip_text"
SEGMENT = 77  # CLIP's text length; the instruction encoder cuts longer prompts into segments of it


def clip_tokenizer():
    """The toy's word-level tokenizer, ending every text with </s>: CLIP pools the text at its EOS token."""
    tokenizer = build_tokenizer()
    backend = tokenizer.backend_tokenizer
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    tokenizer.model_max_length = SEGMENT
    return tokenizer


def build_clip(vision_tower, tokenizer, width: int = 64) -> CLIPModel:
    vision_config = vision_tower.config
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=SEGMENT, projection_dim=width,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    config = CLIPConfig(text_config=text_config.to_dict(), vision_config=vision_config.to_dict(), projection_dim=width)
    clip = CLIPModel(config)
    clip.vision_model.load_state_dict(vision_tower.state_dict())  # transformers 5: the tower is the transformer
    return clip


@torch.no_grad()
def vision_features(vision_tower, images: np.ndarray, layer: int, batch: int = 32) -> torch.Tensor:
    """[N, 576, D] the hidden states LLaVA selects (CLS dropped), the features CDPruner maps to the joint space."""
    chunks = []
    for start in range(0, len(images), batch):
        out = vision_tower(pixel_values(images[start : start + batch]), output_hidden_states=True)
        chunks.append(out.hidden_states[layer][:, 1:].float())
    return torch.cat(chunks)


def train(steps: int, pool_size: int, seed: int, output: Path, log=print) -> dict:
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model, _ = load_toy("llava15")
    vision_tower = model.model.vision_tower.eval()
    layer = model.config.vision_feature_layer
    tokenizer = clip_tokenizer()
    clip = build_clip(vision_tower, tokenizer)
    pool = build_pool(pool_size, seed)
    started = time.time()
    features = vision_features(vision_tower, pool.images, layer)
    log(f"features of {pool_size} scenes: {time.time() - started:.0f} s")
    texts = [existence_text(colour, shape) for colour, shape in CLASSES]
    encoded = tokenizer(texts, padding="max_length", max_length=SEGMENT, return_tensors="pt")
    untrained = _ranking_quality(clip, clip.vision_model.post_layernorm, features, pool, encoded)
    for parameter in clip.vision_model.parameters():
        parameter.requires_grad_(False)
    post_layernorm = clip.vision_model.post_layernorm
    trainable = [*clip.text_model.parameters(), *clip.text_projection.parameters(), *clip.visual_projection.parameters()]
    scale, bias = torch.nn.Parameter(torch.tensor(10.0)), torch.nn.Parameter(torch.tensor(-5.0))
    optimiser = torch.optim.AdamW([*trainable, scale, bias], lr=2e-3, weight_decay=0.01)
    batch = 32
    history = []
    for step in range(steps):
        images, classes = [], []
        for _ in range(batch):
            index = rng.randrange(pool_size)
            present = np.flatnonzero(pool.presence[index])
            k = int(rng.choice(present)) if len(present) and rng.random() < 0.8 else rng.randrange(len(CLASSES))
            images.append(index)
            classes.append(k)
        z = clip.visual_projection(post_layernorm(features[images]))  # [b, 576, C]
        text = clip.text_projection(
            clip.text_model(input_ids=encoded["input_ids"][classes], attention_mask=encoded["attention_mask"][classes]).pooler_output
        )  # [b, C]
        cosine = F.cosine_similarity(z, text[:, None, :], dim=-1)
        targets = torch.from_numpy(pool.patch_class[images] == (np.array(classes)[:, None] + 1)).float()
        positive = targets.sum().clamp(min=1.0)
        loss = F.binary_cross_entropy_with_logits(
            scale * cosine + bias, targets, pos_weight=(targets.numel() - positive) / positive
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            log(f"step {step}: loss {np.mean(history[-100:]):.3f} ({time.time() - started:.0f} s)")
    quality = _ranking_quality(clip, post_layernorm, features, pool, encoded)
    log(f"before training: AUC {untrained:.3f}")
    log(f"the named object's patches ranked above the other objects' by the text: AUC {quality:.3f} over {pool_size} scenes")
    output.mkdir(parents=True, exist_ok=True)
    clip.half().save_pretrained(output)
    tokenizer.save_pretrained(output)
    return {"loss": float(np.mean(history[-100:])), "auc": quality, "untrained_auc": untrained}


@torch.no_grad()
def _ranking_quality(clip, post_layernorm, features, pool, encoded) -> float:
    """Mean AUC, over scenes and the classes they contain, of the named class's patches against the patches
    of the scene's other objects (background excluded: telling objects from background needs no text)."""
    text = clip.text_projection(clip.text_model(**encoded).pooler_output)
    aucs = []
    for index in range(len(pool)):
        z = clip.visual_projection(post_layernorm(features[index]))
        for k in np.flatnonzero(pool.presence[index]):
            scores = F.cosine_similarity(z, text[k][None], dim=-1).numpy()
            on_objects = pool.patch_class[index] > 0
            positive = pool.patch_class[index][on_objects] == k + 1
            if positive.all() or not positive.any():
                continue
            ranks = scores[on_objects].argsort().argsort()
            n_pos, n_neg = positive.sum(), (~positive).sum()
            aucs.append((ranks[positive].sum() - n_pos * (n_pos - 1) / 2) / (n_pos * n_neg))
    return float(np.mean(aucs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toy_training.train_clip_text", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--pool-size", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    train(args.steps, args.pool_size, args.seed, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
