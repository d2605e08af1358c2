"""Run every method x budget on one model: warm-up, then repeat rounds, medians per case.

Cases run round-robin (one pass of every case per round) so that load from other processes spreads
over all cases instead of landing on whichever case happened to run at the time. The unpruned model
(method 'none') always runs: it is the reference for the speed-ups.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from scope_eval.adapters.placeholders import pad_token_id
from scope_eval.cost.flops import DecoderDims, PrefillFlops, kv_cache_bytes, prefill_flops, qwen_prefill_flops
from scope_eval.cost.timing import Clock, PassTimer, PassTiming
from scope_eval.pruning import PruningError
from scope_eval.pruning.plan import PruningPlan

from .loading import BenchModel, build_inputs
from .memory import MemoryReading, PeakMemory

MB = 1024 * 1024


@dataclass
class BenchSettings:
    methods: list[str]
    budgets: list[int]
    budget_policy: str = "per_crop"
    repeats: int = 5
    warmup: int = 2
    image_size: tuple[int, int] = (336, 336)
    prompt_tokens: int = 32
    new_tokens: int = 8
    seed: int = 0
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> its options

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise PruningError(f"repeats must be at least 1, got {self.repeats}")
        if self.warmup < 0 or self.prompt_tokens < 0:
            raise PruningError("warmup and prompt_tokens must be >= 0")
        if self.new_tokens < 1:
            raise PruningError(
                f"new_tokens must be at least 1 (the first token ends the prefill), got {self.new_tokens}"
            )

    def cases(self) -> list[tuple[str, int | None]]:
        pruned = [(method, budget) for method in self.methods if method != "none" for budget in self.budgets]
        return [("none", None), *pruned]


@dataclass
class CaseResult:
    method: str
    budget: int | None
    visual_tokens: int  # realised: visual tokens that reached the language model
    prefill_tokens: int  # the language model's prefill sequence length
    crops: int
    timings: list[PassTiming] = field(default_factory=list, repr=False)
    memory: list[MemoryReading] = field(default_factory=list, repr=False)
    flops: PrefillFlops | None = None
    kv_cache_bytes: int = 0
    # in-LLM methods: visual tokens at every decoder layer (visual_tokens is then their layer average)
    visual_per_layer: list[int] | None = None

    def median_ms(self, value: Callable[[PassTiming], float]) -> float:
        return 1000 * statistics.median(value(t) for t in self.timings)

    def decode_tokens_per_s(self, new_tokens: int) -> float | None:
        rates = [(new_tokens - 1) / t.decode for t in self.timings if t.decode > 0]
        return statistics.median(rates) if new_tokens >= 2 and rates else None

    def median_memory_mb(self, value: Callable[[MemoryReading], int | None]) -> float | None:
        readings = [value(m) for m in self.memory]
        if not readings or any(r is None for r in readings):
            return None
        return statistics.median(readings) / MB  # type: ignore[arg-type]


@dataclass
class BenchRun:
    cases: list[CaseResult]
    preprocessing_ms: float  # median time of the processor call + copy to the device (same for every case)
    load_average: dict[str, list[float] | None]  # 1/5/15-minute load averages at the start and end (Unix)


def run_bench(bench_model: BenchModel, settings: BenchSettings, progress: Callable[[str], None] = print) -> BenchRun:
    from scope_eval.adapters.api import prune

    model = bench_model.model
    load_at_start = _load_average()
    clock, memory = Clock(bench_model.device), PeakMemory(bench_model.device)
    preprocessing = []
    for _ in range(settings.repeats):
        started = clock.now()
        inputs = build_inputs(bench_model, settings.image_size, settings.prompt_tokens, settings.seed)
        preprocessing.append(clock.now() - started)
    crops = _crops(bench_model, inputs)
    results = {case: None for case in settings.cases()}
    plans = {  # validated once, before any pass
        (method, budget): _plan(method, budget, settings) for method, budget in results
    }
    generate_options = {
        "max_new_tokens": settings.new_tokens,
        "min_new_tokens": settings.new_tokens,
        "do_sample": False,
        "num_beams": 1,
        "pad_token_id": pad_token_id(model.config),
    }

    def one_pass(method: str, budget: int | None, measured: bool) -> None:
        plan = plans[(method, budget)]
        processor = bench_model.processor if plan.method.needs_instruction else None  # it reads the prompt
        with prune(model, plan, processor=processor) as handle:
            timer = PassTimer(model, handle.plan.method, clock)
            try:
                memory.start()
                timing = timer.run(lambda: model.generate(**inputs, **generate_options))
                reading = memory.stop()
            finally:
                timer.close()
            counts = handle.take_counts()
            layer_counts = handle.take_layer_counts()
        if len(counts) != 1:
            raise RuntimeError(f"expected the visual-token count of 1 image, got {counts}")
        result = results[(method, budget)]
        if result is None:
            result = results[(method, budget)] = CaseResult(method, budget, counts[0], timing.prefill_tokens, crops)
            result.visual_per_layer = layer_counts[0].per_layer if layer_counts else None
        elif (counts[0], timing.prefill_tokens) != (result.visual_tokens, result.prefill_tokens):
            raise RuntimeError(f"{method}@{budget}: token counts changed between passes")
        if measured:
            result.timings.append(timing)
            result.memory.append(reading)

    with torch.inference_mode():
        for round_index in range(settings.warmup + settings.repeats):
            measured = round_index >= settings.warmup
            label = (
                f"repeat {round_index - settings.warmup + 1}/{settings.repeats}"
                if measured
                else f"warm-up {round_index + 1}/{settings.warmup}"
            )
            progress(f"{label}: {len(results)} cases")
            for method, budget in results:
                one_pass(method, budget, measured)

    finished = [r for r in results.values() if r is not None]
    dims = DecoderDims.of(model.config.get_text_config())
    element_bytes = torch.finfo(bench_model.dtype).bits // 8
    if "image_grid_thw" in inputs:  # Qwen: one image of a varying number of patches
        grid = tuple(int(x) for x in inputs["image_grid_thw"][0])
        for result in finished:
            result.flops = qwen_prefill_flops(
                model.config, plans[(result.method, result.budget)], grid=grid,  # type: ignore[arg-type]
                prefill_tokens=result.prefill_tokens, visual_per_layer=result.visual_per_layer,
            )
            result.kv_cache_bytes = kv_cache_bytes(dims, result.prefill_tokens, element_bytes)
        return BenchRun(finished, 1000 * statistics.median(preprocessing), {"start": load_at_start, "end": _load_average()})
    tokens_per_crop = (model.config.vision_config.image_size // model.config.vision_config.patch_size) ** 2
    for result in finished:
        projected = crops * tokens_per_crop if result.method == "none" else result.visual_tokens
        if result.visual_per_layer is not None:  # in-LLM: every visual token is projected and enters the LM
            projected = result.visual_per_layer[0]
        result.flops = prefill_flops(
            model.config,
            plans[(result.method, result.budget)],
            crops=crops,
            projected_tokens=projected,
            prefill_tokens=result.prefill_tokens,
            visual_per_layer=result.visual_per_layer,
        )
        result.kv_cache_bytes = kv_cache_bytes(dims, result.prefill_tokens, element_bytes)
    load = {"start": load_at_start, "end": _load_average()}
    return BenchRun(finished, 1000 * statistics.median(preprocessing), load)


def _plan(method: str, budget: int | None, settings: BenchSettings) -> PruningPlan:
    try:
        return PruningPlan.build(method, budget, settings.budget_policy, **settings.method_options.get(method, {}))
    except PruningError as error:
        raise PruningError(
            f"{error} (bench: give a method's options with --method-option {method}.KEY=VALUE, or leave it out of --methods)"
        ) from None


def _load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):  # not available on this platform
        return None


def _crops(bench_model: BenchModel, inputs: dict) -> int:
    if bench_model.family != "llava-next":  # LLaVA-1.5, Qwen: one image, one encoding
        return 1
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    config = bench_model.config
    size = inputs["image_sizes"][0].tolist()
    return image_size_to_num_patches(size, config.image_grid_pinpoints, config.vision_config.image_size)
