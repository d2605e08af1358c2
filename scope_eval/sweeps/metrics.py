"""Which lmms-eval metric is a benchmark's headline number, in the paper's units. The one place for it.

lmms-eval reports most accuracies in [0, 1] while the paper prints percentages, and MME is printed as
perception + cognition. A *benchmark* is a paper-table column; it reads one lmms-eval task (or an
equivalent variant of it, e.g. a local-data copy) and combines one or more metric keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

FILTER_SUFFIX = ",none"  # lmms-eval appends the filter name to every metric key


@dataclass(frozen=True)
class Benchmark:
    name: str  # the paper's column name
    tasks: tuple[str, ...]  # lmms-eval task names that measure it (first = the canonical one)
    metrics: tuple[str, ...]  # metric names, summed
    scale: float = 1.0  # multiply the sum by this to get the paper's units
    in_avg: bool = True  # False for a second view of a task that another benchmark already counts
    chance: float | None = None  # the score of guessing, in the same units (drawn on plots), if known
    unit: str = ""  # "%" when the score is a percentage; shown on plot axes

    def describe(self) -> str:
        summed = " + ".join(self.metrics)
        return summed if self.scale == 1.0 else f"({summed}) x {self.scale:g}"

    def value(self, task_results: Mapping[str, object]) -> float:
        """The headline number from one task's `results[task]` dict of a results json."""
        total = 0.0
        for metric in self.metrics:
            raw = task_results.get(metric + FILTER_SUFFIX)
            if not is_finite_number(raw):
                raise KeyError(f"metric '{metric}' missing or not a number in the results of {self.tasks[0]}")
            total += float(raw)
        return total * self.scale


# Scales were read from lmms-eval 0.7.3's aggregation functions: mmbench and mmvet already return 0-100,
# MME sums per-category (acc + acc+) on 0-100 each; everything else is a fraction. The plugin's
# scope_<name> tasks (the paper's settings, scope_eval/lmms/tasks/paper) keep the built-in metrics.
BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("GQA", ("scope_gqa", "gqa", "gqa_lite"), ("exact_match",), 100.0),
    Benchmark(
        "MMB",
        ("scope_mmbench_en_dev", "mmbench_en_dev", "mmbench_en_dev_static", "mmbench_en_dev_lite"),
        ("gpt_eval_score",),
    ),
    Benchmark("MME", ("scope_mme", "mme"), ("mme_perception_score", "mme_cognition_score")),
    Benchmark("POPE", ("scope_pope", "pope"), ("pope_f1_score",), 100.0),  # one F1 over every answer pooled
    Benchmark("SQA", ("scope_scienceqa_img", "scienceqa_img"), ("exact_match",), 100.0),
    Benchmark("TextVQA", ("scope_textvqa_val", "textvqa_val", "textvqa_val_lite"), ("exact_match",), 100.0),
    Benchmark("SEED", ("scope_seedbench", "seedbench"), ("seed_all",), 100.0),  # SCOPE Table 1
    Benchmark("SEED-I", ("scope_seedbench", "seedbench"), ("seed_image",), 100.0, in_avg=False),  # Tables 6, 7
    Benchmark("MMVet", ("scope_mmvet", "mmvet"), ("gpt_eval_score",)),
    Benchmark("MMMU", ("scope_mmmu_val", "mmmu_val"), ("mmmu_acc",), 100.0),
    Benchmark("VQAv2", ("scope_vqav2_val", "vqav2_val", "vqav2_val_lite"), ("exact_match",), 100.0),
    # SCOPE App. Table 9 (OCR): ANLS, relaxed accuracy, and OCRBench's share of correct answers, as percentages
    Benchmark("DocVQA", ("scope_docvqa_val", "docvqa_val"), ("anls",), 100.0),
    Benchmark("ChartQA", ("scope_chartqa", "chartqa"), ("relaxed_overall",), 100.0),
    Benchmark("OCRBench", ("scope_ocrbench", "ocrbench"), ("ocrbench_accuracy",), 100.0),
    # The same answers scored as the paper's lmms-eval fork scores them (its Table 9 numbers): DocVQA's share
    # of questions with ANLS >= 0.5 (lmms-eval issue 363), OCRBench with the fork's case handling. Second
    # views, not averaged beside the correct ones; the paper's columns are compared with these.
    Benchmark("DocVQA-fork", ("scope_docvqa_val",), ("anls_fork",), 100.0, in_avg=False),
    Benchmark("OCRBench-fork", ("scope_ocrbench",), ("ocrbench_accuracy_fork",), 100.0, in_avg=False),
    # The synthetic toy tasks are described by the metadata of their own YAMLs (scope_eval/lmms/tasks/toy).
)

BENCHMARK_ORDER: tuple[str, ...] = tuple(b.name for b in BENCHMARKS)


def averaged(names: list[str]) -> list[str]:
    """The benchmarks an "Avg" counts: all, except a second view of a task already counted (SEED-I
    beside SEED: both come from one seedbench run)."""
    known = {b.name: b for b in BENCHMARKS}
    counted = []
    for name in names:
        bench = known.get(name)
        twin = bench is not None and not bench.in_avg and any(
            other != name and other in known and set(known[other].tasks) & set(bench.tasks) for other in names
        )
        if not twin:
            counted.append(name)
    return counted


METADATA_KEYS = ("display_name", "headline", "scale", "chance", "unit")


def benchmarks_for_task(task: str, yaml_metrics: tuple[str, ...] = (), metadata: Mapping[str, object] | None = None) -> tuple[Benchmark, ...]:
    """The benchmarks a task feeds.

    A task YAML says how it is reported under its `metadata:` (lmms-eval passes that block through):
    `display_name` (the table column), `headline` (metric, or list of metrics summed; default the first
    of metric_list), `scale` (e.g. 100 for a fraction shown as a percentage), `chance` (the guessing score,
    in the scaled units), `unit` ("%" by default when scale is 100). Without them, lmms-eval's own tasks
    (which we cannot annotate) come from the table above, and any other task becomes its own benchmark
    named after the task, headlined by the first metric its YAML lists, in lmms-eval's units.
    """
    metadata = metadata or {}
    if any(key in metadata for key in METADATA_KEYS):
        return (benchmark_from_metadata(task, yaml_metrics, metadata),)
    known = tuple(b for b in BENCHMARKS if task in b.tasks)
    if known:
        return known
    if not yaml_metrics:
        raise KeyError(f"no headline metric known for task '{task}' and its YAML lists no metric")
    return (Benchmark(task, (task,), (yaml_metrics[0],)),)


def benchmark_from_metadata(task: str, yaml_metrics: tuple[str, ...], metadata: Mapping[str, object]) -> Benchmark:
    headline = metadata.get("headline") or (yaml_metrics[:1] if yaml_metrics else None)
    metrics = (headline,) if isinstance(headline, str) else tuple(headline or ())
    if not metrics or not all(isinstance(m, str) for m in metrics):
        raise KeyError(f"task '{task}': metadata.headline must name a metric (or a list of them) of its metric_list")
    scale, chance = metadata.get("scale", 1.0), metadata.get("chance")
    if not is_finite_number(scale) or (chance is not None and not is_finite_number(chance)):
        raise KeyError(f"task '{task}': metadata.scale and metadata.chance must be numbers, got {scale!r}, {chance!r}")
    name = metadata.get("display_name", task)
    unit = metadata.get("unit", "%" if float(scale) == 100.0 else "")
    return Benchmark(str(name), (task,), metrics, float(scale), chance=None if chance is None else float(chance), unit=str(unit))


def is_finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
