"""Tie each ``generate()`` call of an upstream wrapper to the request it serves.

The upstream wrappers reorder requests and return answers only; the realised visual tokens come from
the pruning handle after each ``generate()``. Each request is handed to upstream as a copy whose
document callable (``doc_to_visual`` / ``doc_to_messages``, which upstream calls right before
generating) first marks that request as the one being generated. With batch size 1 that mapping is
exact; anything else (two marks before a generate, a generate without a mark) aborts the run.

Each answer's token counts also carry the sample's cost (``cost``: times and FLOPs of its generate(),
see ``scope_eval.lmms.models.cost``), so lmms-eval logs it with the sample through the same channel as
the realised visual tokens: ``token_counts: [{"visual_tokens": [64], "cost": {"ttft_s": ...}, ...}]``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from lmms_eval.api.instance import GenerationResult, Instance

from . import visual_tokens
from .errors import RunAborted
from .visual_tokens import VisualTokenCounts


@dataclass
class CostedTokenCounts(VisualTokenCounts):
    """Visual-token counts plus what the sample's generate() cost."""

    cost: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        counts = super().to_dict()
        if self.cost:
            counts["cost"] = dict(self.cost)
        return counts


class RequestTracker:
    def __init__(self, model_id: str, requests: list[Instance], doc_fn_index: int):
        self.model_id = model_id
        self.requests = requests
        self.doc_fn_index = doc_fn_index
        self.counts: dict[int, list[int]] = {}
        self.costs: dict[int, dict[str, Any]] = {}
        self.degenerate: dict[int, int] = {}  # request -> images with a degenerate selection
        self._docs: dict[int, Any] = {}
        self._pending: int | None = None

    def tagged_requests(self) -> list[Instance]:
        return [self._tag(index, request) for index, request in enumerate(self.requests)]

    def _tag(self, index: int, request: Instance) -> Instance:
        args = list(request.args)
        original = args[self.doc_fn_index]

        def marking_doc_fn(doc, *more, **kwargs):
            self._mark(index, doc)
            return original(doc, *more, **kwargs)

        args[self.doc_fn_index] = marking_doc_fn
        return dataclasses.replace(request, arguments=tuple(args))

    def _mark(self, index: int, doc: Any) -> None:
        if self._pending is not None and self._pending != index:
            raise RunAborted(
                f"{self.model_id}: requests {self._pending} and {index} reached one generate() call; "
                "scope models evaluate one request per call (batch_size=1)"
            )
        self._pending = index
        self._docs[index] = doc

    @property
    def current(self) -> int | None:
        """The request whose inputs are being prepared or generated, if any."""
        return self._pending

    def start_generate(self) -> int:
        if self._pending is None:
            raise RunAborted(f"{self.model_id}: generate() was called for no known request; cannot attribute visual tokens")
        return self._pending

    def finish_generate(self, index: int, counts: list[int], cost: dict[str, Any] | None = None) -> None:
        self.counts[index] = counts
        if cost is not None:
            self.costs[index] = cost
        visual_tokens.record(self._docs.pop(index), counts)
        self._pending = None

    def describe(self, index: int) -> str:
        request = self.requests[index]
        return f"task {request.task_name}, doc {request.doc_id}"

    def with_counts(self, outputs: list[Any]) -> list[GenerationResult]:
        """Upstream's answers (in request order) with each request's visual-token counts attached."""
        if len(outputs) != len(self.requests):
            raise RunAborted(f"{self.model_id}: {len(outputs)} answers for {len(self.requests)} requests")
        attached = []
        for index, output in enumerate(outputs):
            if index not in self.counts:
                raise RunAborted(f"{self.model_id}: {self.describe(index)} was answered without a generate() call")
            text = output.text if isinstance(output, GenerationResult) else output
            upstream_counts = output.token_counts if isinstance(output, GenerationResult) else None
            counts = CostedTokenCounts(**(dataclasses.asdict(upstream_counts) if upstream_counts else {}))
            counts.visual_tokens = self.counts[index]
            counts.degenerate_selections = self.degenerate.get(index, 0)
            counts.cost = self.costs.get(index, {})
            attached.append(GenerationResult(text=text, token_counts=counts))
        return attached


def guarded_generate(owner: Any, stock_generate: Callable) -> Callable:
    """A ``generate`` that attributes visual tokens and cost to the current request and aborts on any error."""

    def generate(*args, **kwargs):
        tracker: RequestTracker | None = owner.tracker
        if tracker is None:  # called outside generate_until (e.g. by user code): plain pass-through
            return stock_generate(*args, **kwargs)
        index = tracker.start_generate()
        owner.pruning.take_counts()  # nothing recorded outside a request belongs to this one
        owner.pruning.take_degenerate()
        owner.pruning.take_layer_counts()
        meter = getattr(owner, "cost_meter", None)
        try:
            if meter is None:
                output, cost_of = stock_generate(*args, **kwargs), None
            else:
                output, cost_of = meter.measure(lambda: stock_generate(*args, **kwargs))
        except Exception as error:
            raise RunAborted(
                f"{tracker.model_id}: generation failed on {tracker.describe(index)} "
                f"({owner.pruning_spec.describe()}): {type(error).__name__}: {error}"
            ) from error
        counts = owner.pruning.take_counts()
        tracker.degenerate[index] = owner.pruning.take_degenerate()
        layers = owner.pruning.take_layer_counts()  # in-LLM methods: visual tokens at every decoder layer
        tracker.finish_generate(index, counts, cost_of(counts, layers) if cost_of else None)
        return output

    return generate
