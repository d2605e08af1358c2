"""`scene(...)`: a picture of the kind the shipped toy model was trained on, for trying the API by hand.

What the toy understands: 336 x 336 px scenes of coloured shapes (red, green, blue, yellow, white x square,
circle, triangle) on a dark grey background, and the questions of its benchmark (scope_eval/toy/questions.py):
"Is there a red circle in the image?", "What color is the square?", "What shape is the blue object?",
"How many circles are there?", "Is the red circle to the left or to the right of the blue square?", each
followed by ANSWER_STYLE (the short-answer prompt it was trained with; without it answers drift).
On photographs, or on anything else, it answers nonsense: it is a 1-layer-scale model trained on these
scenes only (scope_eval/toy/weights/MODEL_CARD.md).
"""

from __future__ import annotations

from typing import Iterable

from PIL import Image

from ..lmms.tasks.toy.scenes import COLOURS, SHAPES, SQUARE_SIDE, Background, Scene, SceneObject, render

PLACES: dict[str, tuple[float, float]] = {
    "center": (0.5, 0.5), "left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25), "bottom": (0.5, 0.75),
    "top left": (0.25, 0.25), "top right": (0.75, 0.25), "bottom left": (0.25, 0.75), "bottom right": (0.75, 0.75),
}  # fmt: skip
SIZES = {"small": 26, "large": 70}
PLAIN_GREY = Background(base=(60, 60, 60), gradient=(0, 0, 0), angle=0.0, noise_sigma=4.0, noise_seed=0)


ANSWER_STYLE = "\nAnswer the question using a single word or phrase."  # end every question with it, as the benchmark does


def scene(objects: Iterable[tuple[str, str, str]], size: str | int = "small") -> Image.Image:
    """A 336 px toy scene: ``objects`` as (colour, shape, place), place one of PLACES (e.g. "top left")."""
    side = SIZES.get(size, size) if isinstance(size, str) else size
    if not isinstance(side, int) or not 8 <= side <= SQUARE_SIDE // 3:
        raise ValueError(f"size must be 'small', 'large' or a side in px from 8 to {SQUARE_SIDE // 3}, got {size!r}")
    drawn = []
    for colour, shape, place in objects:
        if colour not in COLOURS or shape not in SHAPES or place not in PLACES:
            raise ValueError(
                f"({colour!r}, {shape!r}, {place!r}): the toy knows the colours {', '.join(COLOURS)}, the shapes "
                f"{', '.join(SHAPES)} and the places {', '.join(PLACES)}"
            )
        fx, fy = PLACES[place]
        drawn.append(SceneObject(shape=shape, colour=colour, x=round(fx * SQUARE_SIDE), y=round(fy * SQUARE_SIDE), size=side))
    return render(Scene(SQUARE_SIDE, SQUARE_SIDE, PLAIN_GREY, tuple(drawn)))
