"""Turn case results into rows: medians, FLOPs and speed-ups against the unpruned model."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ..provenance import provenance
from .loading import BenchModel
from .memory import PeakMemory
from .runner import BenchRun, BenchSettings, CaseResult

SCHEMA = "scope_eval.bench/1"


def rows(results: list[CaseResult], settings: BenchSettings) -> list[dict[str, Any]]:
    reference = next(r for r in results if r.method == "none")
    reference_ttft = reference.median_ms(lambda t: t.first_token)
    reference_lm = reference.median_ms(lambda t: t.language_model_prefill)
    reference_total = reference.median_ms(lambda t: t.total)
    reference_ttft_cpu = reference.median_ms(lambda t: t.first_token_cpu)
    table = []
    for result in results:
        flops = result.flops
        assert flops is not None and reference.flops is not None
        ttft = result.median_ms(lambda t: t.first_token)
        lm_prefill = result.median_ms(lambda t: t.language_model_prefill)
        selection = result.median_ms(lambda t: t.selection)
        total = result.median_ms(lambda t: t.total)
        ttft_cpu = result.median_ms(lambda t: t.first_token_cpu)
        table.append(
            {
                "method": result.method,
                "budget": result.budget,
                "visual_tokens": result.visual_tokens,
                "prefill_tokens": result.prefill_tokens,
                "crops": result.crops,
                "vision_ms": result.median_ms(lambda t: t.vision),
                "selection_ms": selection,
                "lm_prefill_ms": lm_prefill,
                "ttft_ms": ttft,
                "decode_tokens_per_s": result.decode_tokens_per_s(settings.new_tokens),
                "total_ms": total,
                "ttft_cpu_ms": ttft_cpu,
                "total_cpu_ms": result.median_ms(lambda t: t.total_cpu),
                "peak_memory_mb": result.median_memory_mb(lambda m: m.peak_bytes),
                "memory_increase_mb": result.median_memory_mb(lambda m: m.increase_bytes),
                "kv_cache_mb": result.kv_cache_bytes / 2**20,
                "flops": {
                    "vision": flops.vision,
                    "selection": flops.selection,
                    "projector": flops.projector,
                    "language_model": flops.language_model,
                    "total_prefill": flops.total,
                },
                "ideal_speedup": reference.flops.total / flops.total,
                "ideal_lm_speedup": reference.flops.language_model / flops.language_model,
                "measured_speedup": reference_ttft / ttft,
                "measured_lm_speedup": reference_lm / lm_prefill,
                "measured_cpu_time_speedup": reference_ttft_cpu / ttft_cpu,
                "speedup_vs_ideal": (reference_ttft / ttft) / (reference.flops.total / flops.total),
                "end_to_end_speedup": reference_total / total,
                "selection_share_of_unpruned_prefill": selection / reference_ttft,
                "samples_ms": {
                    "ttft": [1000 * t.first_token for t in result.timings],
                    "ttft_cpu": [1000 * t.first_token_cpu for t in result.timings],
                    "lm_prefill": [1000 * t.language_model_prefill for t in result.timings],
                    "selection": [1000 * t.selection for t in result.timings],
                    "vision": [1000 * t.vision for t in result.timings],
                },
            }
        )
    return table


def hardware(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info["gpu"] = properties.name
        info["gpu_memory_gb"] = round(properties.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


def report(bench_model: BenchModel, settings: BenchSettings, run: BenchRun, command: str) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "hardware": hardware(bench_model.device),
        "provenance": provenance(),
        "model": {
            "source": bench_model.source,
            "family": bench_model.family,
            "parameters": bench_model.parameter_count(),
            "dtype": str(bench_model.dtype).removeprefix("torch."),
            "device": str(bench_model.device),
            "attention": getattr(bench_model.config.get_text_config(), "_attn_implementation", None),
        },
        "settings": {**asdict(settings), "image_size": list(settings.image_size)},
        "preprocessing_ms": run.preprocessing_ms,
        "load_average": run.load_average,
        "conventions": {
            "times": "medians over repeats after warm-up; CUDA synchronised at every time stamp",
            "ttft_ms": "generate() call to the end of the first forward: image processing in the model, "
            "vision tower, selection, projector, language-model prefill, LM head",
            "lm_prefill_ms": "the language model's first call (prefill) alone",
            "decode_tokens_per_s": "(new_tokens - 1) / time from the first token to the end of generate()",
            "memory": PeakMemory(bench_model.device).description,
            "flops": "analytic, multiply-add = 2; full T x T attention (not halved for the causal mask); "
            "see scope_eval/bench/README.md",
            "ideal_speedup": "total prefill FLOPs of 'none' / of this case (vision + selection + projector + LM)",
            "measured_speedup": "ttft of 'none' / ttft of this case",
            "total_ms": "the whole generate() call: prefill and every decoding step; excludes the processor "
            "(preprocessing_ms, the same for every case)",
            "end_to_end_speedup": "total_ms of 'none' / total_ms of this case",
            "ttft_cpu_ms": "process CPU time (all threads) over the ttft span: excludes waiting for a core on a "
            "shared machine; with several torch threads it exceeds wall-clock time",
            "measured_cpu_time_speedup": "ttft_cpu_ms of 'none' / ttft_cpu_ms of this case",
        },
        "rows": rows(run.cases, settings),
    }


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"
