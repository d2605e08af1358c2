"""Question templates over scenes, shared by the benchmark files and the training sampler.

Each builder takes a scene and an rng and returns a `Question` (or None when the scene cannot support that
kind of question, e.g. no unique referent). Wording follows the real benchmarks: POPE-style existence,
GQA-style attribute/relation short answers, counting, MME-style yes/no pairs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from scope_eval.lmms.tasks.toy.scenes import CLASS_WEIGHTS, CLASSES, COLOURS, SHAPES, Scene, SceneObject
from .vocab import YES_NO_SUFFIX

MIN_HORIZONTAL_GAP = 28  # px between centres before "left of" is asked: no borderline relations
POPULAR_POOL = 3  # "popular" negatives come from the most frequent classes absent from the image


@dataclass(frozen=True)
class Question:
    text: str
    answer: str
    category: str
    target_small: bool | None = None  # whether the object the answer hinges on is small (None: several)


def existence_text(colour: str, shape: str, mme: bool = False) -> str:
    if mme:
        return f"Is there a {colour} {shape} in this image? {YES_NO_SUFFIX}"
    return f"Is there a {colour} {shape} in the image?"


def _object_of_class(scene: Scene, cls: tuple[str, str]) -> SceneObject:
    return next(o for o in scene.objects if (o.colour, o.shape) == cls)


def existence_positive(scene: Scene, rng: random.Random, category: str, mme: bool = False) -> Question | None:
    if not scene.objects:
        return None
    target = rng.choice(scene.objects)
    same_class = [o for o in scene.objects if (o.colour, o.shape) == (target.colour, target.shape)]
    return Question(existence_text(target.colour, target.shape, mme), "yes", category,
                    target_small=all(o.is_small for o in same_class))


def is_attribute_swap(cls: tuple[str, str], obj: SceneObject) -> bool:
    """`cls` (colour, shape) shares exactly one attribute with `obj`: POPE's adversarial negatives."""
    return (cls[0] == obj.colour) != (cls[1] == obj.shape)


def existence_negative(scene: Scene, rng: random.Random, strategy: str, mme: bool = False) -> Question | None:
    """POPE's negative sampling: random absent class, popular (frequent) absent class, or adversarial
    (an attribute swap of an object that is present: same shape in another colour, or vice versa)."""
    present = scene.classes_present()
    absent = [c for c in CLASSES if c not in present]
    if not absent:
        return None
    if strategy == "random":
        colour, shape = rng.choice(absent)
    elif strategy == "popular":
        by_frequency = sorted(absent, key=lambda c: -CLASS_WEIGHTS[CLASSES.index(c)])
        colour, shape = rng.choice(by_frequency[:POPULAR_POOL])
    elif strategy == "adversarial":
        swaps = sorted({c for o in scene.objects for c in absent if is_attribute_swap(c, o)})
        if not swaps:
            return None
        colour, shape = rng.choice(swaps)
    else:
        raise ValueError(f"unknown negative strategy {strategy!r}")
    return Question(existence_text(colour, shape, mme), "no", strategy)


def attribute_existence(scene: Scene, rng: random.Random) -> Question | None:
    """One-attribute existence ("Is there a red object in the image?", "Is there a circle in the image?"),
    yes or no with equal odds. Training only: a one-hop lookup over image tokens that a tiny language
    model finds much sooner than the colour-and-shape conjunction of POPE-style questions."""
    attribute = rng.choice(("colour", "shape"))
    values = tuple(COLOURS) if attribute == "colour" else SHAPES
    present = sorted({getattr(o, attribute) for o in scene.objects})
    absent = [v for v in values if v not in present]
    if rng.random() < 0.5 and present:
        value, answer = rng.choice(present), "yes"
    elif absent:
        value, answer = rng.choice(absent), "no"
    else:
        return None
    noun = f"{value} object" if attribute == "colour" else value
    return Question(f"Is there a {noun} in the image?", answer, "attribute")


def _unique_by(scene: Scene, attribute: str) -> list[SceneObject]:
    values = [getattr(o, attribute) for o in scene.objects]
    return [o for o in scene.objects if values.count(getattr(o, attribute)) == 1]


def colour_question(scene: Scene, rng: random.Random) -> Question | None:
    candidates = _unique_by(scene, "shape")
    if not candidates:
        return None
    target = rng.choice(candidates)
    return Question(f"What color is the {target.shape}?", target.colour, "color", target.is_small)


def shape_question(scene: Scene, rng: random.Random) -> Question | None:
    candidates = _unique_by(scene, "colour")
    if not candidates:
        return None
    target = rng.choice(candidates)
    return Question(f"What shape is the {target.colour} object?", target.shape, "shape", target.is_small)


def _unique_objects(scene: Scene) -> list[SceneObject]:
    names = [o.name for o in scene.objects]
    return [o for o in scene.objects if names.count(o.name) == 1]


def _separated_pair(scene: Scene, rng: random.Random) -> tuple[SceneObject, SceneObject] | None:
    objects = _unique_objects(scene)
    pairs = [(a, b) for a in objects for b in objects if a is not b and abs(a.x - b.x) >= MIN_HORIZONTAL_GAP]
    return rng.choice(pairs) if pairs else None


def relation_question(scene: Scene, rng: random.Random) -> Question | None:
    pair = _separated_pair(scene, rng)
    if pair is None:
        return None
    a, b = pair
    answer = "left" if a.x < b.x else "right"
    return Question(f"Is the {a.name} to the left or to the right of the {b.name}?", answer, "relation",
                    a.is_small and b.is_small)


def count_questions(scene: Scene) -> list[Question]:
    """Every count question the scene supports, about shapes and about colours that are present."""
    by_shape = [
        Question(f"How many {shape}s are there?", str(sum(o.shape == shape for o in scene.objects)), "shape_count")
        for shape in sorted({o.shape for o in scene.objects})
    ]
    by_colour = [
        Question(f"How many {colour} objects are there?", str(sum(o.colour == colour for o in scene.objects)),
                 "color_count")
        for colour in sorted({o.colour for o in scene.objects})
    ]
    return by_shape + by_colour


def count_question(scene: Scene, rng: random.Random, answer: int | None = None) -> Question | None:
    """A count question, optionally one whose answer is `answer` (to balance the answer distribution)."""
    candidates = [q for q in count_questions(scene) if answer is None or q.answer == str(answer)]
    return rng.choice(candidates) if candidates else None


def mme_pair(scene: Scene, rng: random.Random, category: str) -> tuple[Question, Question] | None:
    """Two yes/no questions on one image, one true and one false (MME scores acc and acc+ per image)."""
    suffix = f" {YES_NO_SUFFIX}"
    if category == "existence":
        yes = existence_positive(scene, rng, category, mme=True)
        no = existence_negative(scene, rng, rng.choice(["random", "adversarial"]), mme=True)
        if yes is None or no is None:
            return None
        return yes, Question(no.text, "no", category)
    if category == "count":
        shapes = sorted({o.shape for o in scene.objects})
        if not shapes:
            return None
        shape = rng.choice(shapes)
        count = sum(o.shape == shape for o in scene.objects)
        wrong = count + 1 if count == 1 or rng.random() < 0.5 else count - 1
        text = "Are there {} {}s in this image?" + suffix
        return (Question(text.format(count, shape), "yes", category),
                Question(text.format(wrong, shape), "no", category))
    if category == "color":
        candidates = _unique_by(scene, "shape")
        if not candidates:
            return None
        target = rng.choice(candidates)
        other = rng.choice([c for c in COLOURS if c != target.colour])
        text = "Is the {} {}?" + suffix
        return (Question(text.format(target.shape, target.colour), "yes", category, target.is_small),
                Question(text.format(target.shape, other), "no", category, target.is_small))
    if category == "position":
        pair = _separated_pair(scene, rng)
        if pair is None:
            return None
        left, right = sorted(pair, key=lambda o: o.x)
        text = "Is the {} on the left of the {}?" + suffix
        small = left.is_small and right.is_small
        return (Question(text.format(left.name, right.name), "yes", category, small),
                Question(text.format(right.name, left.name), "no", category, small))
    raise ValueError(f"unknown MME category {category!r}")


MME_CATEGORIES: tuple[str, ...] = ("existence", "count", "color", "position")
POPE_STRATEGIES: tuple[str, ...] = ("random", "popular", "adversarial")
