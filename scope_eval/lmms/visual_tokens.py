"""Realised visual tokens: recorded per sample, summarised per task.

Per sample: every response of a scope model carries ``VisualTokenCounts``; lmms-eval writes it into the
logged sample as ``token_counts: [{"visual_tokens": [64], "output_tokens": 3}]`` (one entry per image).

Per task: lmms-eval's ``process_results(doc, results)`` sees neither the request nor the model, so the
model leaves each sample's total in ``RECORDED`` under the doc's ``scope_doc_key`` column, which the
shipped task YAMLs add in ``process_docs`` (``keyed_docs``). ``with_visual_tokens`` wraps a task's
``process_results`` to return ``visual_tokens_min/mean/max`` as metrics, so results.json holds
``results[task]["visual_tokens_mean,none"]`` etc. Generation and scoring of a doc run on the same rank,
so this also holds under data parallelism.
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable

from lmms_eval.api.instance import TokenCounts

KEY_COLUMN = "scope_doc_key"
METRICS = ("visual_tokens_min", "visual_tokens_mean", "visual_tokens_max")

# doc key -> visual tokens per image of that doc's last generation in this process
RECORDED: dict[str, list[int]] = {}
_DATASET_LOADS = itertools.count()


@dataclass
class VisualTokenCounts(TokenCounts):
    """lmms-eval's per-request token counters plus the visual tokens that reached the language model."""

    visual_tokens: list[int] = field(default_factory=list)  # one entry per image of the request
    # images of the request whose selection was degenerate (the lowest indices kept for want of any
    # preference: all-zero saliency or features, underflowing weights); see KeptTokens.degenerate
    degenerate_selections: int = 0

    def to_dict(self) -> dict[str, Any]:
        counts = super().to_dict()
        counts["visual_tokens"] = list(self.visual_tokens)
        if self.degenerate_selections:  # absent means none, which keeps ordinary records as they were
            counts["degenerate_selections"] = self.degenerate_selections
        return counts


def keyed_docs(dataset):
    """``process_docs``: add a ``scope_doc_key`` column, unique per dataset load in this process."""
    load = next(_DATASET_LOADS)
    return dataset.add_column(KEY_COLUMN, [f"{load}:{index}" for index in range(len(dataset))])


def then_keyed(process_docs: Callable) -> Callable:
    """A task's own ``process_docs`` followed by ``keyed_docs``."""

    def process(dataset):
        return keyed_docs(process_docs(dataset))

    return process


def record(doc: Any, counts: list[int]) -> None:
    key = doc.get(KEY_COLUMN) if hasattr(doc, "get") else None
    if key is not None:
        RECORDED[key] = list(counts)


def with_visual_tokens(process_results: Callable) -> Callable:
    """Wrap a task's ``process_results`` to add this sample's visual-token total as three metrics."""

    def process(doc, results, **kwargs):
        metrics = process_results(doc, results, **kwargs)
        counts = RECORDED.get(doc.get(KEY_COLUMN))
        if counts is not None:  # absent for models that do not record (e.g. lmms-eval's own llava)
            total = sum(counts)
            metrics = {**metrics, **{name: total for name in METRICS}}
        return metrics

    return process


def minimum(values: list[float]) -> float:
    return min(values)


def mean(values: list[float]) -> float:
    return statistics.fmean(values)


def maximum(values: list[float]) -> float:
    return max(values)
