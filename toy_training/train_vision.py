"""Stage 1: train the CLIP vision tower alone, with image-level objectives on CLS and per-patch targets.

The CLS objectives (which classes are present, read from the layer -2 CLS and from the final pooled CLS)
make the CLS token attend to objects, which is what SCOPE's saliency reads; the per-patch targets (class,
colour, shape, object centre) make the layer -2 patch tokens say what they show.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from transformers import CLIPVisionModel

from scope_eval.toy.model import VISION_FEATURE_LAYER
from scope_eval.lmms.tasks.toy.scenes import CLASSES
from .training_data import NUM_COLOURS, NUM_SHAPES, ScenePool, colour_of_class, pixel_values, shape_of_class


@dataclass
class VisionStageConfig:
    steps: int = 800
    batch_size: int = 16
    lr: float = 2e-3
    warmup: int = 50
    weight_decay: float = 0.01
    background_weight: float = 0.3  # object patches are ~5 % of all patches
    # Presence of each class read as the max over patch tokens (multiple-instance learning). LLaVA drops
    # CLS, so an existence answer must come from some patch token that says "red circle" clearly; this
    # objective asks for exactly that, where the per-patch class target also drills the ambiguous edges.
    patch_presence_weight: float = 1.0
    log_every: int = 50


class VisionProbeHeads(nn.Module):
    """Auxiliary heads used only while training the tower (not part of the shipped model)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        n = len(CLASSES)
        self.cls_norm = nn.LayerNorm(hidden)
        self.cls_presence = nn.Linear(hidden, n)
        self.final_presence = nn.Linear(hidden, n)
        self.patch_norm = nn.LayerNorm(hidden)
        self.patch_class = nn.Linear(hidden, 1 + n)
        self.patch_colour = nn.Linear(hidden, 1 + NUM_COLOURS)
        self.patch_shape = nn.Linear(hidden, 1 + NUM_SHAPES)
        self.patch_centre = nn.Linear(hidden, 1)
        self.patch_presence = nn.Linear(hidden, n)


def tower_losses(tower: CLIPVisionModel, heads: VisionProbeHeads, batch: dict, background_weight: float,
                 patch_presence_weight: float = 0.0):
    out = tower(pixel_values=batch["pixels"], output_hidden_states=True)
    hidden = out.hidden_states[VISION_FEATURE_LAYER]
    cls, patches = heads.cls_norm(hidden[:, 0]), heads.patch_norm(hidden[:, 1:])
    classes = batch["patch_class"]
    weight = torch.where(classes > 0, 1.0, background_weight)
    class_logits = heads.patch_class(patches)

    def weighted_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none")
        return (loss * weight.flatten()).sum() / weight.sum()

    losses = {
        "cls_presence": F.binary_cross_entropy_with_logits(heads.cls_presence(cls), batch["presence"]),
        "final_presence": F.binary_cross_entropy_with_logits(heads.final_presence(out.pooler_output), batch["presence"]),
        "patch_class": weighted_ce(class_logits, classes),
        "patch_colour": 0.5 * weighted_ce(heads.patch_colour(patches), colour_of_class(classes)),
        "patch_shape": 0.5 * weighted_ce(heads.patch_shape(patches), shape_of_class(classes)),
        "patch_centre": 0.5 * F.binary_cross_entropy_with_logits(
            heads.patch_centre(patches).squeeze(-1), batch["patch_centre"], pos_weight=torch.tensor(20.0)
        ),
    }
    if patch_presence_weight:
        presence_logits = heads.patch_presence(patches).amax(dim=1)
        losses["patch_presence"] = patch_presence_weight * F.binary_cross_entropy_with_logits(
            presence_logits, batch["presence"])
    object_patches = classes > 0
    predicted = class_logits.argmax(-1)
    stats = {
        "object_patch_acc": (predicted[object_patches] == classes[object_patches]).float().mean().item(),
        "background_acc": (predicted[~object_patches] == 0).float().mean().item(),
    }
    return losses, stats


def pool_batch(pool: ScenePool, indices: np.ndarray) -> dict:
    return {
        "pixels": pixel_values(pool.images[indices]),
        "patch_class": torch.from_numpy(pool.patch_class[indices]),
        "patch_centre": torch.from_numpy(pool.patch_centre[indices]),
        "presence": torch.from_numpy(pool.presence[indices]),
    }


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def clipped_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, schedule, params, max_norm: float = 1.0) -> None:
    """One training step of every toy stage: backward, gradient norm clipped to `max_norm`, step, schedule."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    optimizer.step()
    schedule.step()


def train_vision_tower(tower: CLIPVisionModel, pool: ScenePool, config: VisionStageConfig, seed: int, log=print):
    torch.manual_seed(seed)
    heads = VisionProbeHeads(tower.config.hidden_size)
    params = list(tower.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, config.warmup, config.steps))
    order = np.random.default_rng(seed)
    tower.train()
    started = time.time()
    running: dict[str, float] = {}
    for step in range(config.steps):
        batch = pool_batch(pool, order.integers(0, len(pool), config.batch_size))
        losses, stats = tower_losses(tower, heads, batch, config.background_weight, config.patch_presence_weight)
        total = sum(losses.values())
        clipped_step(total, optimizer, schedule, params)
        for key, value in {"loss": total.item(), **stats}.items():
            running[key] = 0.9 * running.get(key, value) + 0.1 * value
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            summary = " ".join(f"{k}={v:.3f}" for k, v in running.items())
            log(f"[vision] step {step + 1}/{config.steps} {summary} ({time.time() - started:.0f}s)")
    tower.eval()
    return heads
