"""Functions of the template task; `!function utils.<name>` in the YAML finds this file next to it."""

from __future__ import annotations

import string


def doc_to_visual(doc: dict) -> list:
    """The images of one document, as RGB PIL images (one entry per image the model should see)."""
    return [doc["image"].convert("RGB")]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict) -> str:
    """The question text; the model wrapper adds the image placeholder and the chat template."""
    return f"{lmms_eval_specific_kwargs['pre_prompt']}{doc['question']}{lmms_eval_specific_kwargs['post_prompt']}"


def _normalise(text: str) -> str:
    return text.strip().lower().translate(str.maketrans("", "", string.punctuation))


def process_results(doc: dict, results: list[str]) -> dict:
    """One metric value per document, keyed by the metric names of metric_list."""
    return {"exact_match": float(_normalise(results[0]) == _normalise(doc["answer"]))}
