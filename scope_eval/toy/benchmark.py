"""The synthetic benchmark: deterministic JSONL files (scene spec + question + answer, no images).

`toy_data()` (the `scope-eval toy-data` command) regenerates them into the plugin's lmms-eval task
directory; `--check` only compares, for CI. Each task has its own seed, so one task can change without
moving the others.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import typer

from .model import PATCH_SIZE
from .questions import (
    MME_CATEGORIES,
    POPE_STRATEGIES,
    Question,
    colour_question,
    count_question,
    existence_negative,
    existence_positive,
    mme_pair,
    relation_question,
    shape_question,
)
from scope_eval.lmms.tasks.toy.scenes import NON_SQUARE_SIZES, Scene, SceneOptions, generate_scene

TASK_DIR = Path(__file__).resolve().parents[1] / "lmms" / "tasks" / "toy"

# Square scenes put every box corner on the 14 px patch grid. Off the grid a 10-30 px shape is cut across
# 4-9 patches at random offsets, and a presence probe on the patch tokens of every toy tower tried found at
# most 82 % of the objects; on the grid an object's first patch shows a characteristic corner (97 %; see
# feature_probe.py and the model card). The non-square POPE-wide scenes stay off-grid: the processors
# resize them, so no grid would survive; they are the harder task.
SQUARE_SCENES = SceneOptions(grid=PATCH_SIZE)
COUNT_SCENES = SceneOptions(small_count=(2, 6), distinct_classes=False, grid=PATCH_SIZE)
COUNT_ANSWERS = 4  # count items cycle through answers 1..4 so that no answer dominates


def _item(task: str, index: int, scene: Scene, question: Question, suffix: str = "") -> dict:
    image_id = f"{task}-{index:03d}"
    return {
        "question_id": f"{image_id}{suffix}",
        "image_id": image_id,
        "question": question.text,
        "answer": question.answer,
        "category": question.category,
        "target_small": question.target_small,
        "scene": scene.to_dict(),
    }


def _pope_items(task: str, rng: random.Random, per_strategy: int, options_for: Callable[[], SceneOptions]) -> list[dict]:
    items: list[dict] = []
    index = 0
    for strategy in POPE_STRATEGIES:
        made = 0
        while made < per_strategy:
            scene = generate_scene(rng, options_for())
            yes = existence_positive(scene, rng, strategy)
            no = existence_negative(scene, rng, strategy)
            if yes is None or no is None:
                continue
            items += [_item(task, index, scene, yes, "-yes"), _item(task, index, scene, no, "-no")]
            index += 1
            made += 1
    return items


def build_pope(rng: random.Random) -> list[dict]:
    return _pope_items("pope", rng, per_strategy=30, options_for=lambda: SQUARE_SCENES)


def build_pope_wide(rng: random.Random) -> list[dict]:
    def options() -> SceneOptions:
        width, height = rng.choice(NON_SQUARE_SIZES)
        return SceneOptions(width=width, height=height, small_count=(3, 7), large_count=(0, 2))

    return _pope_items("pope_wide", rng, per_strategy=20, options_for=options)


def build_gqa(rng: random.Random) -> list[dict]:
    items: list[dict] = []
    for builder in (colour_question, shape_question, relation_question):
        made = 0
        while made < 40:
            scene = generate_scene(rng, SQUARE_SCENES)
            question = builder(scene, rng)
            if question is not None:
                items.append(_item("gqa", len(items), scene, question))
                made += 1
    return items


def build_count(rng: random.Random) -> list[dict]:
    items: list[dict] = []
    while len(items) < 100:
        scene = generate_scene(rng, COUNT_SCENES)
        question = count_question(scene, rng, answer=1 + len(items) % COUNT_ANSWERS)
        if question is not None:
            items.append(_item("count", len(items), scene, question))
    return items


def build_mme(rng: random.Random) -> list[dict]:
    items: list[dict] = []
    index = 0
    for category in MME_CATEGORIES:
        made = 0
        while made < 15:
            scene = generate_scene(rng, COUNT_SCENES if category == "count" else SQUARE_SCENES)
            pair = mme_pair(scene, rng, category)
            if pair is None:
                continue
            items += [_item("mme", index, scene, pair[0], "-0"), _item("mme", index, scene, pair[1], "-1")]
            index += 1
            made += 1
    return items


def interleave_categories(items: list[dict]) -> list[dict]:
    """Round-robin over categories, keeping an image's questions together, so that any prefix (what
    `--limit` evaluates) covers every category evenly instead of the first one only."""
    units: list[list[dict]] = []
    for item in items:
        if units and units[-1][0]["image_id"] == item["image_id"]:
            units[-1].append(item)
        else:
            units.append([item])
    by_category: dict[str, list[list[dict]]] = {}
    for unit in units:
        by_category.setdefault(unit[0]["category"], []).append(unit)
    queues = list(by_category.values())
    ordered: list[dict] = []
    for round_index in range(max(len(q) for q in queues)):
        for queue in queues:
            if round_index < len(queue):
                ordered += queue[round_index]
    return ordered


@dataclass(frozen=True)
class ToyTask:
    name: str  # the lmms-eval task name; the data file is <name>.jsonl
    seed: int
    build: Callable[[random.Random], list[dict]]
    interleave: bool = True  # False where the order itself is balanced (counting cycles its answers)

    def items(self) -> list[dict]:
        items = self.build(random.Random(self.seed))
        return interleave_categories(items) if self.interleave else items

    def jsonl(self) -> str:
        return "".join(json.dumps(item, sort_keys=True) + "\n" for item in self.items())


TOY_TASKS: tuple[ToyTask, ...] = (
    ToyTask("scope_toy_pope", 2101, build_pope),
    ToyTask("scope_toy_gqa", 2102, build_gqa),
    ToyTask("scope_toy_count", 2103, build_count, interleave=False),
    ToyTask("scope_toy_mme", 2104, build_mme),
    ToyTask("scope_toy_pope_wide", 2105, build_pope_wide),
)


def toy_data(
    out_dir: Path = typer.Option(TASK_DIR, "--output", "--out-dir", help="where the <task>.jsonl files go (default: the plugin's task dir; --out-dir: old spelling)"),
    check: bool = typer.Option(False, help="only compare regenerated files with those in out_dir; exit 1 on a difference"),
) -> None:
    """Regenerate the synthetic benchmark's JSONL files (deterministic: same seed, same bytes)."""
    stale: list[str] = []
    for task in TOY_TASKS:
        path = Path(out_dir) / f"{task.name}.jsonl"
        text = task.jsonl()
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        typer.echo(f"wrote {path} ({text.count(chr(10))} items)")
    if check and not stale:
        typer.echo(f"toy data in {out_dir} is up to date")
    if stale:
        typer.echo("stale or missing toy data: " + ", ".join(stale) + "\nfix: run `scope-eval toy-data`", err=True)
        raise typer.Exit(1)
