"""One channel for what each request realised: visual tokens, degenerate selections and cost.

The upstream wrappers reorder requests and return answers only. So the pruned wrappers hand upstream's
``generate_until`` one request at a time (batch size 1 is the only size they run): whatever the
``generate()`` inside that call realises belongs to that request, with no need to look inside the
request. The counts come from the pruning handle after the call, the cost from the cost meter
(``scope_eval.lmms.models.cost``), and both ride on the answer's ``token_counts``, which lmms-eval
writes into the logged sample: ``token_counts: [{"visual_tokens": [64], "cost": {"ttft_s": ...}, ...}]``.
The harness (scope_eval.sweeps) summarises a task's visual tokens from those logged samples.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts

from .errors import RunAborted


@dataclass
class VisualTokenCounts(TokenCounts):
    """lmms-eval's per-request token counters plus the visual tokens that reached the language model,
    and what the request's generate() cost."""

    visual_tokens: list[int] = field(default_factory=list)  # one entry per image of the request
    # images of the request whose selection was degenerate (the lowest indices kept for want of any
    # preference: all-zero saliency or features, underflowing weights); see KeptTokens.degenerate
    degenerate_selections: int = 0
    cost: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        counts = super().to_dict()
        counts["visual_tokens"] = list(self.visual_tokens)
        if self.degenerate_selections:  # absent means none, which keeps ordinary records as they were
            counts["degenerate_selections"] = self.degenerate_selections
        if self.cost:
            counts["cost"] = dict(self.cost)
        return counts


@dataclass
class SampleRecord:
    """What the generate() serving one request realised; filled by ``guarded_generate``."""

    model_id: str
    where: str  # "task <name>, doc <id>", for messages
    counts: list[int] | None = None
    degenerate: int = 0
    cost: dict[str, Any] = field(default_factory=dict)


def describe(request: Instance) -> str:
    return f"task {request.task_name}, doc {request.doc_id}"


def generate_one_by_one(
    owner: Any, requests: list[Instance], run: Callable[[list], list], on_answer: Callable[[int, int], None] | None = None
) -> list[GenerationResult]:
    """Upstream's ``generate_until`` (``run``) on each request alone; the answers with what each realised.
    ``on_answer(answered, len(requests))`` is called after each answer (progress reporting)."""
    answers = []
    for request in requests:
        owner.sample = SampleRecord(owner.model_id, describe(request))
        try:
            outputs = run([request])
        except RunAborted:
            raise
        except Exception as error:  # preparing inputs (processor, images) fails outside generate()
            raise RunAborted(
                f"{owner.model_id}: generation failed on {describe(request)} ({owner.pruning_plan.describe()}): "
                f"{type(error).__name__}: {error}"
            ) from error
        finally:
            sample, owner.sample = owner.sample, None
        if len(outputs) != 1:
            raise RunAborted(f"{owner.model_id}: {len(outputs)} answers for {describe(request)}")
        if sample.counts is None:
            raise RunAborted(f"{owner.model_id}: {describe(request)} was answered without a generate() call")
        answers.append(_with_counts(outputs[0], sample))
        if on_answer is not None:
            on_answer(len(answers), len(requests))
    return answers


def _with_counts(output: Any, sample: SampleRecord) -> GenerationResult:
    text = output.text if isinstance(output, GenerationResult) else output
    upstream_counts = output.token_counts if isinstance(output, GenerationResult) else None
    counts = VisualTokenCounts(**(dataclasses.asdict(upstream_counts) if upstream_counts else {}))
    counts.visual_tokens = list(sample.counts or [])
    counts.degenerate_selections = sample.degenerate
    counts.cost = dict(sample.cost)
    return GenerationResult(text=text, token_counts=counts)


def guarded_generate(owner: Any, stock_generate: Callable) -> Callable:
    """A ``generate`` that records the current request's visual tokens and cost and aborts on any error."""

    def generate(*args, **kwargs):
        sample: SampleRecord | None = getattr(owner, "sample", None)
        if sample is None:  # called outside generate_until (e.g. by user code): plain pass-through
            return stock_generate(*args, **kwargs)
        if sample.counts is not None:
            raise RunAborted(
                f"{sample.model_id}: a second generate() call for {sample.where}; scope models answer each request "
                "with one generate() (batch_size=1)"
            )
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
                f"{sample.model_id}: generation failed on {sample.where} "
                f"({owner.pruning_plan.describe()}): {type(error).__name__}: {error}"
            ) from error
        sample.counts = owner.pruning.take_counts()
        sample.degenerate = owner.pruning.take_degenerate()
        layers = owner.pruning.take_layer_counts()  # in-LLM methods: visual tokens at every decoder layer
        if cost_of is not None:
            sample.cost = cost_of(sample.counts, layers)
        return output

    return generate
