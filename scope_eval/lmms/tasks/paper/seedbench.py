"""SEED-Bench as the paper evaluated it: a video question sees its first frame only.

lmms-eval 0.7.3 passes every frame of a video question as separate images; the SCOPE and DivPrune
evaluation code passed the first. ``lmms_eval_specific_kwargs.video_frames`` picks: first | all.
"""

from __future__ import annotations

from lmms_eval.tasks.seedbench import utils as upstream


FRAME_CHOICES = ("first", "all")


def doc_to_visual(doc: dict, lmms_eval_specific_kwargs: dict) -> list:
    frames = lmms_eval_specific_kwargs.get("video_frames", "first")
    if frames not in FRAME_CHOICES:
        raise ValueError(f"video_frames must be one of {FRAME_CHOICES}, got {frames!r}")
    images = upstream.seed_doc_to_visual(doc)
    return images[:1] if frames == "first" else images


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    # upstream's prompt is fixed; this task has kwargs (video_frames), so lmms-eval passes them here too
    return upstream.seed_doc_to_text(doc)


process_results = upstream.seed_process_result
