"""Deterministic synthetic scenes: coloured shapes of different sizes on varied backgrounds.

A scene is a small JSON-able spec (`Scene`); `render(scene)` draws it the same way every time, so the
benchmark files store specs, never images. Most objects are small (a few 14 px patches), so an answer
about one of them is lost when the patches it touches are pruned away.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 40, 40),
    "green": (40, 195, 65),
    "blue": (60, 100, 240),
    "yellow": (235, 215, 45),
    "white": (240, 240, 240),
}
SHAPES: tuple[str, ...] = ("square", "circle", "triangle")
CLASSES: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLOURS for s in SHAPES)

# Scenes draw classes with unequal frequencies (like objects in real images), so that POPE-style
# "popular" negatives are a distinct, harder sampling strategy than "random" ones.
CLASS_WEIGHTS: tuple[float, ...] = tuple(1.0 / (1 + 0.25 * rank) for rank in range(len(CLASSES)))

SMALL_SIZE = (18, 30)  # px side of a small object: it touches about 4-9 patches of 14 px
LARGE_SIZE = (54, 84)
SQUARE_SIDE = 336
NON_SQUARE_SIZES: tuple[tuple[int, int], ...] = ((640, 480), (480, 640), (900, 300), (300, 900), (672, 336))


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    x: int  # centre, px
    y: int
    size: int  # side of the bounding box, px

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def is_small(self) -> bool:
        return self.size <= SMALL_SIZE[1]

    def box(self) -> tuple[int, int, int, int]:
        half = self.size // 2
        return (self.x - half, self.y - half, self.x - half + self.size, self.y - half + self.size)


@dataclass(frozen=True)
class Background:
    base: tuple[int, int, int]
    gradient: tuple[int, int, int]  # colour added linearly along `angle`
    angle: float  # radians
    noise_sigma: float
    noise_seed: int


@dataclass(frozen=True)
class Scene:
    width: int
    height: int
    background: Background
    objects: tuple[SceneObject, ...]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Scene:
        bg = data["background"]
        background = Background(
            base=tuple(bg["base"]), gradient=tuple(bg["gradient"]), angle=float(bg["angle"]),
            noise_sigma=float(bg["noise_sigma"]), noise_seed=int(bg["noise_seed"]),
        )
        objects = tuple(SceneObject(**obj) for obj in data["objects"])
        return cls(width=int(data["width"]), height=int(data["height"]), background=background, objects=objects)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def classes_present(self) -> set[tuple[str, str]]:
        return {(o.colour, o.shape) for o in self.objects}


@dataclass(frozen=True)
class SceneOptions:
    """How many objects and how big; `size_scale` stretches object sizes (training uses it for variety)."""

    width: int = SQUARE_SIDE
    height: int = SQUARE_SIDE
    small_count: tuple[int, int] = (2, 5)
    large_count: tuple[int, int] = (0, 2)
    size_scale: float = 1.0
    distinct_classes: bool = True  # every class at most once, so "the red circle" names one object
    grid: int = 0  # > 0: boxes start on multiples of this many px (the patch grid); 0: anywhere


def _random_background(rng: random.Random) -> Background:
    grey = rng.randint(20, 105)
    base = tuple(max(0, min(255, grey + rng.randint(-14, 14))) for _ in range(3))
    gradient = tuple(rng.randint(-35, 35) for _ in range(3)) if rng.random() < 0.6 else (0, 0, 0)
    return Background(
        base=base, gradient=gradient, angle=round(rng.uniform(0, 6.2832), 4),
        noise_sigma=round(rng.uniform(2.0, 10.0), 2), noise_seed=rng.randrange(2**31),
    )


def _overlaps(box: tuple[int, int, int, int], others: list[tuple[int, int, int, int]], gap: int) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 < b[2] + gap and b[0] < x1 + gap and y0 < b[3] + gap and b[1] < y1 + gap for b in others)


def generate_scene(rng: random.Random, options: SceneOptions = SceneOptions()) -> Scene:
    """Draw one scene from `rng`; objects never overlap and stay fully inside the image."""
    n_large = rng.randint(*options.large_count)
    n_small = rng.randint(*options.small_count)
    sizes = [rng.randint(*LARGE_SIZE) for _ in range(n_large)] + [rng.randint(*SMALL_SIZE) for _ in range(n_small)]
    sizes = [max(8, round(s * options.size_scale)) for s in sizes]
    if options.distinct_classes:
        classes = _weighted_sample_without_replacement(rng, len(sizes))
    else:
        classes = rng.choices(CLASSES, weights=CLASS_WEIGHTS, k=len(sizes))
    objects: list[SceneObject] = []
    boxes: list[tuple[int, int, int, int]] = []
    for size, (colour, shape) in zip(sizes, classes):
        for _attempt in range(200):
            half = size // 2
            x = rng.randint(half + 2, options.width - size + half - 2)
            y = rng.randint(half + 2, options.height - size + half - 2)
            if options.grid:
                x = _snap(x - half, options.grid, options.width - size) + half
                y = _snap(y - half, options.grid, options.height - size) + half
            candidate = SceneObject(shape=shape, colour=colour, x=x, y=y, size=size)
            if not _overlaps(candidate.box(), boxes, gap=6):
                objects.append(candidate)
                boxes.append(candidate.box())
                break
    return Scene(options.width, options.height, _random_background(rng), tuple(objects))


def _snap(start: int, grid: int, last: int) -> int:
    """`start` moved down to the grid, kept inside [0, last]."""
    return max(0, min(last - last % grid, start - start % grid))


def _weighted_sample_without_replacement(rng: random.Random, count: int) -> list[tuple[str, str]]:
    remaining = list(range(len(CLASSES)))
    picked: list[tuple[str, str]] = []
    for _ in range(min(count, len(remaining))):
        index = rng.choices(remaining, weights=[CLASS_WEIGHTS[j] for j in remaining], k=1)[0]
        remaining.remove(index)
        picked.append(CLASSES[index])
    return picked


def _shape_points(obj: SceneObject) -> list[tuple[float, float]]:
    x0, y0, x1, y1 = obj.box()
    return [((x0 + x1 - 1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)]


def _draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, fill) -> None:
    x0, y0, x1, y1 = obj.box()
    if obj.shape == "square":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif obj.shape == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif obj.shape == "triangle":
        draw.polygon(_shape_points(obj), fill=fill)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}; expected one of {SHAPES}")


def _background_array(scene: Scene) -> np.ndarray:
    bg = scene.background
    ys, xs = np.mgrid[0 : scene.height, 0 : scene.width].astype(np.float32)
    along = xs / max(1, scene.width - 1) * np.cos(bg.angle) + ys / max(1, scene.height - 1) * np.sin(bg.angle)
    along = (along - along.min()) / max(1e-6, float(along.max() - along.min()))
    image = np.asarray(bg.base, np.float32) + along[..., None] * np.asarray(bg.gradient, np.float32)
    noise = np.random.default_rng(bg.noise_seed).normal(0.0, bg.noise_sigma, size=image.shape).astype(np.float32)
    return image + noise


@lru_cache(maxsize=4096)
def _render_cached(scene: Scene) -> Image.Image:
    canvas = Image.fromarray(np.clip(_background_array(scene), 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    for obj in scene.objects:
        _draw_object(draw, obj, COLOURS[obj.colour])
    return canvas


def render(scene: Scene | dict) -> Image.Image:
    """The scene's RGB image (a fresh copy: callers may modify it)."""
    if isinstance(scene, dict):
        scene = Scene.from_dict(scene)
    return _render_cached(scene).copy()


def label_map(scene: Scene) -> np.ndarray:
    """[H, W] int array: 0 for background, i+1 where object i was drawn (later objects on top)."""
    canvas = Image.new("I", (scene.width, scene.height), 0)
    draw = ImageDraw.Draw(canvas)
    for index, obj in enumerate(scene.objects):
        _draw_object(draw, obj, index + 1)
    return np.asarray(canvas, dtype=np.int64)
