"""Quick accuracy of a toy model on the synthetic tasks, unpruned or pruned, without lmms-eval.

Used for the model card and during development; the project's real numbers come from the lmms-eval
sweep. Same prompt (chat template + "\\nAnswer the question using a single word or phrase."), same
images (rendered from the committed specs), same scoring functions as the lmms-eval tasks. The answer
is the first greedy token, which is the first word `generate` would produce: every toy answer is one
word. One item at a time, like lmms-eval's LLaVA wrappers: batching with left padding changed answers
(8 of 48 GQA-like items on the toy LLaVA-1.5; LLaVA-NeXT's long, unequal sequences fell apart).

    python -m toy_training.measure --model-dir scope_eval/toy/weights/llava15 --methods none,random,saliency
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from scope_eval.lmms.tasks.toy import utils as task_utils

from scope_eval.toy.benchmark import TASK_DIR
from scope_eval.lmms.tasks.toy.scenes import Scene, render
from .training_data import patch_targets, pixel_values
from scope_eval.toy.vocab import SHORT_ANSWER_PROMPT


@dataclass(frozen=True)
class TaskScoring:
    process_results: Callable[[dict, list[str]], dict]
    metrics: dict[str, Callable[[list], float]]


def _mean(values: list) -> float:
    return sum(values) / len(values)


TASK_SCORING: dict[str, TaskScoring] = {
    "scope_toy_pope": TaskScoring(task_utils.pope_process_results,
                                  {"pope_accuracy": task_utils.pope_accuracy, "pope_f1_score": task_utils.pope_f1_score}),
    "scope_toy_gqa": TaskScoring(task_utils.exact_match_process_results, {"exact_match": _mean}),
    "scope_toy_count": TaskScoring(task_utils.exact_match_process_results, {"exact_match": _mean}),
    "scope_toy_mme": TaskScoring(task_utils.mme_process_results,
                                 {"mme_score": task_utils.mme_score, "mme_acc": task_utils.mme_acc}),
    "scope_toy_pope_wide": TaskScoring(task_utils.pope_process_results,
                                       {"pope_accuracy": task_utils.pope_accuracy, "pope_f1_score": task_utils.pope_f1_score}),
}


def load_items(task: str, task_dir: Path = TASK_DIR) -> list[dict]:
    path = task_dir / f"{task}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `scope-eval toy-data`")
    return [json.loads(line) for line in path.read_text().splitlines()]


def prompt_text(processor, question: str) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question + SHORT_ANSWER_PROMPT}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


@torch.no_grad()
def first_token_answers(model, processor, items: list[dict], batch_size: int = 1) -> list[str]:
    answers: list[str] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        inputs = processor(images=[render(item["scene"]) for item in chunk],
                           text=[prompt_text(processor, item["question"]) for item in chunk],
                           return_tensors="pt", padding=True)
        logits = model(**inputs).logits[:, -1]
        answers += processor.tokenizer.batch_decode(logits.argmax(-1)[:, None], skip_special_tokens=True)
    return answers


def score(task: str, items: list[dict], answers: list[str]) -> dict[str, float]:
    scoring = TASK_SCORING[task]
    per_doc = [scoring.process_results(item, [answer]) for item, answer in zip(items, answers)]
    return {name: aggregate([d[name] for d in per_doc]) for name, aggregate in scoring.metrics.items()}


def measure(model, processor, tasks: list[str], method: str = "none", budget: int | None = None,
            limit: int | None = None, **options) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} for one pruning setting (method 'none' = all visual tokens)."""
    from scope_eval import prune

    results: dict[str, dict[str, float]] = {}
    for task in tasks:
        items = load_items(task)[:limit]
        if method == "none":
            answers = first_token_answers(model, processor, items)
        else:
            with prune(model, method, budget, processor=processor, **options):
                answers = first_token_answers(model, processor, items)
        results[task] = score(task, items, answers)
    return results


@torch.no_grad()
def cls_attention_on_objects(model, scenes: list[Scene]) -> tuple[float, float]:
    """(share of the layer -2 CLS attention mass on object patches, share of patches that are object patches).

    The ratio of the two says how object-focused the saliency SCOPE reads is (1.0: no focus)."""
    from scope_eval.adapters.vision_probe import VisionLayerProbe

    probe = VisionLayerProbe(model.model.vision_tower, model.config.vision_feature_layer)
    try:
        model.model.vision_tower(pixel_values=pixel_values(np.stack([np.asarray(render(s)) for s in scenes])))
        _, saliency, _ = probe.take()
    finally:
        probe.remove()
    objects = torch.from_numpy(np.stack([patch_targets(s)[0] > 0 for s in scenes]))
    mass = (saliency / saliency.sum(1, keepdim=True))[objects].sum().item() / len(scenes)
    return mass, objects.float().mean().item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toy_training.measure", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--tasks", default="scope_toy_pope,scope_toy_gqa,scope_toy_count,scope_toy_mme")
    parser.add_argument("--methods", default="none,random,saliency,scope")
    parser.add_argument("--budgets", default="192,128,64")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cls-check", type=int, default=64,
                        help="images of the pope task for the CLS-attention-on-objects check (0: skip)")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(args.model_dir, dtype=torch.float32, device_map="cpu").eval()
    processor = AutoProcessor.from_pretrained(args.model_dir)
    tasks = args.tasks.split(",")
    rows = []
    if args.cls_check:
        scenes = [Scene.from_dict(item["scene"]) for item in load_items("scope_toy_pope")[: 2 * args.cls_check : 2]]
        mass, share = cls_attention_on_objects(model, scenes)
        rows.append({"cls_attention_on_object_patches": round(mass, 4), "object_patch_share": round(share, 4)})
        print(json.dumps(rows[-1]), flush=True)
    for method in args.methods.split(","):
        for budget in [None] if method == "none" else [int(b) for b in args.budgets.split(",")]:
            started = time.time()
            results = measure(model, processor, tasks, method, budget, limit=args.limit)
            row = {"method": method, "budget": budget, "seconds": round(time.time() - started, 1), **{
                f"{task}/{metric}": round(value, 4) for task, metrics in results.items() for metric, value in metrics.items()}}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
