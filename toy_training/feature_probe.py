"""How much of "which objects are in the image" can be read from a toy tower's patch tokens?

An upper bound for existence questions, independent of the language model: a per-patch MLP scores the
15 classes on the layer -2 patch tokens (what LLaVA feeds the projector), the max over patches is the
presence logit, trained on one set of fresh scenes and scored on another. If this probe cannot find an
object, no language model reading the same tokens can. It showed why off-grid square scenes were too
hard for the toy tower (see the model card).

    python -m toy_training.feature_probe --model-dir scope_eval/toy/weights/llava15 --grid 14
    python -m toy_training.feature_probe --model-dir scope_eval/toy/weights/llava15 --grid 0
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from scope_eval.toy.questions import is_attribute_swap
from scope_eval.lmms.tasks.toy.scenes import CLASSES, SceneOptions, generate_scene, render
from .train_language import featurize
from .training_data import class_presence


def scenes_with_presence(count: int, seed: int, grid: int) -> tuple[np.ndarray, torch.Tensor, list]:
    rng = random.Random(seed)
    scenes = [generate_scene(rng, SceneOptions(grid=grid)) for _ in range(count)]
    presence = torch.from_numpy(np.stack([class_presence(scene) for scene in scenes]))
    return np.stack([np.asarray(render(scene)) for scene in scenes]), presence, scenes


def probe_presence(tower, grid: int, train_images: int = 500, test_images: int = 500, steps: int = 1500,
                   seed: int = 0) -> dict[str, float]:
    """Recall of present classes, specificity on absent ones and on attribute swaps (POPE's adversarial
    negatives) of a max-over-patches presence probe on frozen patch tokens."""
    torch.manual_seed(seed)
    train_x, train_y, _ = scenes_with_presence(train_images, seed + 1, grid)
    test_x, test_y, test_scenes = scenes_with_presence(test_images, seed + 2, grid)
    train_f, test_f = (featurize(tower, x, dtype=torch.float32) for x in (train_x, test_x))
    hidden = train_f.shape[-1]
    probe = torch.nn.Sequential(torch.nn.LayerNorm(hidden), torch.nn.Linear(hidden, 128), torch.nn.GELU(),
                                torch.nn.Linear(128, len(CLASSES)))
    optimizer = torch.optim.AdamW(probe.parameters(), lr=2e-3)
    for _ in range(steps):
        rows = torch.randint(0, train_images, (32,))
        loss = F.binary_cross_entropy_with_logits(probe(train_f[rows]).amax(1), train_y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = probe(test_f).amax(1) > 0
    present = test_y > 0
    swaps = torch.zeros_like(present)
    for row, scene in enumerate(test_scenes):
        for index, cls in enumerate(CLASSES):
            swaps[row, index] = not present[row, index] and any(is_attribute_swap(cls, o) for o in scene.objects)
    return {
        "recall_present": predicted[present].float().mean().item(),
        "specificity_absent": (~predicted[~present]).float().mean().item(),
        "specificity_attribute_swaps": (~predicted[swaps]).float().mean().item(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toy_training.feature_probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True, help="a toy LLaVA save_pretrained directory")
    parser.add_argument("--grid", type=int, default=14, help="scene grid in px (0: objects anywhere)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(args.model_dir, dtype=torch.float32).eval()
    result = probe_presence(model.model.vision_tower, args.grid)
    print(json.dumps({"model_dir": str(args.model_dir), "grid": args.grid, **result}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
