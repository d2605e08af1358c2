"""Reading what one lmms-eval launch left behind, and deciding whether a task really finished.

The lmms-eval CLI exits 0 even when evaluation raised, so the exit code proves nothing: a task counts
as finished only when the results json holds every expected metric as a finite number.
lmms-eval writes `<output_path>/<sanitised model name>/<timestamp>_results.json` and, with
--log_samples, `<timestamp>_samples_<task>.jsonl` beside it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .metrics import is_finite_number
from .tasks import expected_keys


@dataclass(frozen=True)
class TaskOutcome:
    task: str
    ok: bool
    reason: str  # why it failed; empty when ok
    results: dict  # results[task] of the results json ({} when absent)
    n_samples: int | None
    samples_file: Path | None
    results_file: Path | None = None  # the lmms-eval results json the metrics were read from


def find_results_json(output_path: Path) -> Path | None:
    found = sorted(output_path.glob("**/*_results.json"))
    return found[-1] if found else None  # timestamps sort in time order


def read_task_outcomes(output_path: Path, tasks: tuple[str, ...], exit_code: int, include_dirs: Sequence[Path] = ()) -> list[TaskOutcome]:
    results_file = find_results_json(output_path)
    if results_file is None:
        reason = f"lmms-eval wrote no results json (exit code {exit_code})"
        return [TaskOutcome(task, False, reason, {}, None, None) for task in tasks]
    try:
        data = json.loads(results_file.read_text())
    except (OSError, ValueError) as error:  # e.g. cut off by a full disk
        reason = f"results json {results_file} is unreadable or truncated (full disk?): {error}"
        return [TaskOutcome(task, False, reason, {}, None, None, results_file) for task in tasks]
    if not isinstance(data, dict):
        reason = f"results json {results_file} is not a mapping"
        return [TaskOutcome(task, False, reason, {}, None, None, results_file) for task in tasks]
    return [_task_outcome(data, results_file, task, include_dirs) for task in tasks]


def _task_outcome(data: dict, results_file: Path, task: str, include_dirs: Sequence[Path] = ()) -> TaskOutcome:
    task_results = (data.get("results") or {}).get(task)
    samples = next(iter(sorted(results_file.parent.glob(f"*_samples_{task}.jsonl"))), None)
    n_samples = ((data.get("n-samples") or {}).get(task) or {}).get("effective")
    if not isinstance(task_results, dict):
        return TaskOutcome(task, False, f"no results for '{task}' in {results_file.name}", {}, n_samples, samples, results_file)
    missing = [
        key for key in expected_keys(task, include_dirs) if not is_finite_number(task_results.get(key))
    ]
    if missing:
        reason = f"metric(s) {', '.join(missing)} missing or not finite in {results_file.name}"
        return TaskOutcome(task, False, reason, task_results, n_samples, samples, results_file)
    return TaskOutcome(task, True, "", task_results, n_samples, samples, results_file)


def visual_token_summary(outcome: TaskOutcome) -> dict[str, float] | None:
    """Realised visual tokens per sample (all images of a sample summed): min / mean / max, from the logged
    samples' token_counts (the plugin's one channel, scope_eval/lmms/tracking.py). None when no sample has
    them (e.g. a model that does not record them)."""
    totals = _sample_totals(outcome.samples_file) if outcome.samples_file else []
    if not totals:
        return None
    return {"min": float(min(totals)), "mean": sum(totals) / len(totals), "max": float(max(totals))}


def _sample_totals(samples_file: Path) -> list[int]:
    totals = []
    with samples_file.open() as lines:
        for line in lines:
            counts = json.loads(line).get("token_counts") or []
            per_image = [n for entry in counts if isinstance(entry, dict) for n in entry.get("visual_tokens") or []]
            if per_image:
                totals.append(sum(per_image))
    return totals
