"""GQA: questions in one dataset config, images in another, joined by ``imageId``.

lmms-eval's ``gqa_process_docs`` copies every image into every question from the hub (``token=True``).
Here the image dataset is opened once, from wherever ``lmms_eval_specific_kwargs.gqa_images`` says
(the hub by default; a local copy in tasks written by ``scope-eval tasks-dir``), and looked up per doc.
"""

from __future__ import annotations

import threading
from typing import Any

import datasets
from lmms_eval.api.metrics import exact_match_hf_evaluate


_OPENED: dict[str, tuple[datasets.Dataset, dict[str, int]]] = {}
_LOCK = threading.Lock()


def open_images(source: dict[str, Any]) -> tuple[datasets.Dataset, dict[str, int]]:
    """(image dataset, imageId -> row) for a source: {hub, name, split} | {parquet: [files]} | {load_from_disk, split}."""
    key = repr(sorted(source.items()))
    with _LOCK:
        if key not in _OPENED:
            images = _load(source)
            _OPENED[key] = (images, {image_id: row for row, image_id in enumerate(images["id"])})
        return _OPENED[key]


def _load(source: dict[str, Any]) -> datasets.Dataset:
    if "parquet" in source:
        return datasets.load_dataset("parquet", data_files=list(source["parquet"]), split="train")
    if "load_from_disk" in source:
        return datasets.load_from_disk(source["load_from_disk"])[source["split"]]
    if "hub" in source:
        return datasets.load_dataset(source["hub"], source.get("name"), split=source["split"])
    raise ValueError(f"gqa_images must name a hub dataset, parquet files or a load_from_disk folder, got {source!r}")


def doc_to_visual(doc: dict, lmms_eval_specific_kwargs: dict) -> list:
    images, row_of = open_images(lmms_eval_specific_kwargs["gqa_images"])
    image_id = doc["imageId"]
    if image_id not in row_of:
        raise KeyError(f"GQA image {image_id!r} (question {doc.get('id')}) is not in the image dataset")
    return [images[row_of[image_id]]["image"].convert("RGB")]


def _exact_match(doc: dict, results: list[str]) -> dict:
    # the built-in gqa task scores through metric_list (exact_match, ignore case and punctuation)
    score = exact_match_hf_evaluate(
        predictions=[results[0]], references=[doc["answer"]], ignore_case=True, ignore_punctuation=True
    )["exact_match"]
    return {"exact_match": float(score)}


process_results = _exact_match
