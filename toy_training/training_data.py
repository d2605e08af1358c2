"""Training pools for the toy: rendered scenes plus per-image and per-patch targets, all from one seed."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from scope_eval.toy.model import CLIP_MEAN, CLIP_STD, IMAGE_SIZE, PATCH_SIZE
from scope_eval.lmms.tasks.toy.scenes import CLASSES, COLOURS, SHAPES, Scene, SceneOptions, generate_scene, label_map, render

GRID = IMAGE_SIZE // PATCH_SIZE
PATCH_COVERAGE_MIN = 0.1  # a patch belongs to an object when >= 10 % of its pixels are that object's


@dataclass
class ScenePool:
    scenes: list[Scene]
    images: np.ndarray  # [N, 336, 336, 3] uint8
    patch_class: np.ndarray  # [N, 576] 0 = background, 1 + index into CLASSES
    patch_centre: np.ndarray  # [N, 576] 1 where an object's centre lies
    presence: np.ndarray  # [N, len(CLASSES)] 0/1

    def __len__(self) -> int:
        return len(self.scenes)


ALIGNED_SHARE = 0.85  # of training scenes on the patch grid, like the square benchmark scenes; the rest anywhere


def training_scene_options(rng: random.Random) -> SceneOptions:
    """Varied object counts and scales: smaller objects also stand in for LLaVA-NeXT's downscaled base view.
    Most boxes start on the patch grid, as in the square benchmark tasks (see benchmark.SQUARE_SCENES)."""
    return SceneOptions(
        small_count=(1, 6), large_count=(0, 2), size_scale=rng.uniform(0.55, 1.25),
        distinct_classes=rng.random() < 0.7, grid=PATCH_SIZE if rng.random() < ALIGNED_SHARE else 0,
    )


def patch_targets(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch class (largest covering object above PATCH_COVERAGE_MIN) and object-centre flags."""
    labels = label_map(scene)
    coverage = np.stack(
        [(labels == k + 1).reshape(GRID, PATCH_SIZE, GRID, PATCH_SIZE).mean(axis=(1, 3)) for k in range(len(scene.objects))]
    ) if scene.objects else np.zeros((0, GRID, GRID))
    patch_class = np.zeros((GRID, GRID), np.int64)
    centre = np.zeros((GRID, GRID), np.float32)
    if scene.objects:
        best = coverage.argmax(0)
        covered = coverage.max(0) >= PATCH_COVERAGE_MIN
        class_ids = np.array([1 + CLASSES.index((o.colour, o.shape)) for o in scene.objects])
        patch_class[covered] = class_ids[best[covered]]
        for obj in scene.objects:
            centre[min(GRID - 1, obj.y // PATCH_SIZE), min(GRID - 1, obj.x // PATCH_SIZE)] = 1.0
    return patch_class.reshape(-1), centre.reshape(-1)


def class_presence(scene: Scene) -> np.ndarray:
    """[len(CLASSES)] 0/1: which colour-shape classes the scene contains."""
    present = np.zeros(len(CLASSES), np.float32)
    for obj in scene.objects:
        present[CLASSES.index((obj.colour, obj.shape))] = 1.0
    return present


def build_pool(size: int, seed: int) -> ScenePool:
    rng = random.Random(seed)
    scenes, images, classes, centres, presence = [], [], [], [], []
    for _ in range(size):
        scene = generate_scene(rng, training_scene_options(rng))
        patch_class, centre = patch_targets(scene)
        scenes.append(scene)
        images.append(np.asarray(render(scene), np.uint8))
        classes.append(patch_class)
        centres.append(centre)
        presence.append(class_presence(scene))
    return ScenePool(scenes, np.stack(images), np.stack(classes), np.stack(centres), np.stack(presence))


_MEAN = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
_STD = torch.tensor(CLIP_STD).view(1, 3, 1, 1)


def pixel_values(images: np.ndarray) -> torch.Tensor:
    """[B, 336, 336, 3] uint8 -> normalised [B, 3, 336, 336]; equals the toy processor on 336 px squares."""
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (pixels - _MEAN) / _STD


def colour_of_class(class_ids: torch.Tensor) -> torch.Tensor:
    """0 stays background; class 1 + c * len(SHAPES) + s maps to colour 1 + c."""
    return torch.where(class_ids > 0, 1 + (class_ids - 1) // len(SHAPES), 0)


def shape_of_class(class_ids: torch.Tensor) -> torch.Tensor:
    return torch.where(class_ids > 0, 1 + (class_ids - 1) % len(SHAPES), 0)


NUM_COLOURS = len(COLOURS)
NUM_SHAPES = len(SHAPES)
