"""Timing one generate() pass piece by piece, with hooks on model instances (removed afterwards).

Every time stamp synchronises CUDA first, so a stamp means "the GPU has finished everything queued".
The pieces: the vision tower's forward calls, the pruning method's ``run`` calls (a shadow on the
method instance, ``handle.plan.method``), the language model's calls (the first is the prefill), and
the end of the first top-level forward (the first token's logits exist: time to first token).
Decoding steps are not stamped one by one (a synchronisation per step would slow them down); only
the end of generate() is. Python's garbage collector is off during a pass (after a collection).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


class Clock:
    def __init__(self, device: torch.device):
        self.device = device

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


@dataclass
class PassTiming:
    """Seconds spent in one generate() pass."""

    total: float = 0.0
    first_token: float = 0.0  # generate() call to the end of the first forward (time to first token)
    vision: float = 0.0
    selection: float = 0.0
    language_model_prefill: float = 0.0  # the language model's first call
    prefill_tokens: int = 0  # sequence length the language model's prefill saw
    # CPU time of the whole process (all its threads) over the same spans: on a shared machine it leaves
    # out the time the process waited for a core, which wall-clock time includes.
    first_token_cpu: float = 0.0
    total_cpu: float = 0.0

    @property
    def decode(self) -> float:
        """From the first token to the end of generate()."""
        return self.total - self.first_token


class _Span:
    """Adds up the time between a start and a stop call (re-entrant calls are counted once)."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.depth = 0
        self.started = 0.0
        self.spans: list[float] = []

    def start(self) -> None:
        if self.depth == 0:
            self.started = self.clock.now()
        self.depth += 1

    def stop(self) -> None:
        self.depth -= 1
        if self.depth == 0:
            self.spans.append(self.clock.now() - self.started)


class PassTimer:
    """Hooks timing the parts of generate(); ``run`` times one pass. Call ``close()`` to remove them."""

    def __init__(self, model: nn.Module, method: Any | None, clock: Clock):
        self.clock = clock
        base = model.model
        self._vision = _Span(clock)
        self._selection = _Span(clock)
        self._language_model = _Span(clock)
        self._first_forward_end: float | None = None
        self._first_forward_end_cpu = 0.0
        self._prefill_tokens = 0
        tower = getattr(base, "vision_tower", None) or base.visual  # LLaVA's, or Qwen2-VL's
        self._handles = [
            tower.register_forward_pre_hook(lambda *_: self._vision.start()),
            tower.register_forward_hook(lambda *_: self._vision.stop()),
            base.language_model.register_forward_pre_hook(self._language_model_starts, with_kwargs=True),
            base.language_model.register_forward_hook(self._language_model_ends),
            model.register_forward_hook(self._model_forward_ends),
        ]
        self._method = method
        if method is not None:
            self._shadow_select(method)

    # -- hooks ---------------------------------------------------------------------------------
    def _language_model_starts(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self._language_model.spans:
            return  # a decoding step
        if self._language_model.depth == 0:
            embeds = kwargs.get("inputs_embeds")
            self._prefill_tokens = int(embeds.shape[1]) if embeds is not None else int(kwargs["input_ids"].shape[1])
        self._language_model.start()

    def _language_model_ends(self, *_: Any) -> None:
        if not self._language_model.spans:
            self._language_model.stop()

    def _model_forward_ends(self, *_: Any) -> None:
        if self._first_forward_end is None:
            self._first_forward_end = self.clock.now()
            self._first_forward_end_cpu = time.process_time()

    @staticmethod
    def _timed_entry(method: Any) -> str:
        """What the adapters call to select: ``run`` (pre-LLM, with a plan's validated budget), or ``choose``
        (in-LLM, once per drop, inside the language model's prefill: its time is also in that span)."""
        return "choose" if getattr(method, "stage", "vision") == "llm" else "run"

    def _shadow_select(self, method: Any) -> None:
        # An instance attribute shadows the class's method for this one object; close() deletes it.
        entry = self._timed_entry(method)
        if entry in vars(method) or "for_crops" in vars(method):
            raise RuntimeError(f"the pruning method's {entry}() is already shadowed; is another timer installed?")
        self._time(method, entry)
        if entry == "run":
            # A method may hand the per-crop selections to a copy of itself with other options (VisionZip's
            # crop_split="official"): the copy, made per image, is timed too and dropped with the image.
            stock_for_crops: Callable = method.for_crops

            def for_crops_timed(budget: int, num_crops: int) -> Any:
                crop_method, per_crop = stock_for_crops(budget, num_crops)
                if crop_method is not method:
                    self._time(crop_method, "run")
                return crop_method, per_crop

            object.__setattr__(method, "for_crops", for_crops_timed)

    def _time(self, method: Any, entry: str) -> None:
        stock: Callable = getattr(method, entry)
        span = self._selection

        def timed(*args: Any, **kwargs: Any) -> Any:
            span.start()
            try:
                return stock(*args, **kwargs)
            finally:
                span.stop()

        object.__setattr__(method, entry, timed)  # also works on frozen dataclasses

    # -- one pass ------------------------------------------------------------------------------
    def run(self, generate: Callable[[], Any]) -> PassTiming:
        for span in (self._vision, self._selection, self._language_model):
            span.spans.clear()
        self._first_forward_end = None
        # As timeit does: collect garbage first and keep the collector off during the pass, so that a
        # collection triggered by earlier allocations does not land inside one case's timings.
        gc.collect()
        collector_was_on = gc.isenabled()
        gc.disable()
        try:
            started = self.clock.now()
            started_cpu = time.process_time()
            generate()
            ended = self.clock.now()
            ended_cpu = time.process_time()
        finally:
            if collector_was_on:
                gc.enable()
        if self._first_forward_end is None:
            raise RuntimeError("generate() never called the model's forward; nothing was timed")
        return PassTiming(
            total=ended - started,
            first_token=self._first_forward_end - started,
            first_token_cpu=self._first_forward_end_cpu - started_cpu,
            total_cpu=ended_cpu - started_cpu,
            vision=sum(self._vision.spans),
            selection=sum(self._selection.spans),
            language_model_prefill=self._language_model.spans[0] if self._language_model.spans else 0.0,
            prefill_tokens=self._prefill_tokens,
        )

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._method is not None:
            for name in (self._timed_entry(self._method), "for_crops"):
                if name in vars(self._method):
                    object.__delattr__(self._method, name)
        self._method = None
