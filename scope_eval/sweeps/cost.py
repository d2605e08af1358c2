"""Per-cell cost summary: median and 90th percentile of each per-sample cost field.

The scope models log each sample's cost beside its realised visual tokens (``token_counts[0]["cost"]``
in the samples file: vision, selection, LLM prefill, time to first token, decode, generate time in
seconds; prefill tokens; analytic prefill FLOPs). A cell keeps, per field, the median and the p90 over
its samples: medians because a shared machine's stalls are one-sided, p90 to show the tail.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

STATISTICS = ("median", "p90")


def logged_cost(sample: dict) -> dict | None:
    """The cost record of one logged sample (lmms-eval's ``--log_samples`` line), if it has one."""
    for entry in sample.get("token_counts") or []:
        if isinstance(entry, dict) and isinstance(entry.get("cost"), dict):
            return entry["cost"]
    return None


def sample_costs(samples_file: Path) -> list[dict]:
    """Each logged sample's cost record, in file order (samples without one are skipped)."""
    with samples_file.open() as lines:
        costs = [logged_cost(json.loads(line)) for line in lines if line.strip()]
    return [cost for cost in costs if cost]


def cost_summary(samples_file: Path | None) -> dict[str, dict[str, float]] | None:
    """{field: {"median": .., "p90": .., "n": ..}} over the samples; None when no sample logged a cost."""
    return summarise(sample_costs(samples_file) if samples_file is not None and samples_file.is_file() else [])


def summarise(costs: list[dict]) -> dict[str, dict[str, float]] | None:
    """{field: {"median": .., "p90": .., "n": ..}} over per-sample cost records; None when there are none."""
    if not costs:
        return None
    summary = {}
    for name in dict.fromkeys(key for cost in costs for key in cost):
        values = np.array([cost[name] for cost in costs if isinstance(cost.get(name), (int, float))], dtype=float)
        if values.size:
            summary[name] = {"median": float(np.median(values)), "p90": float(np.percentile(values, 90)), "n": int(values.size)}
    return summary


# The fields a report carries per cell, each as <field>_median and <field>_p90.
REPORTED_FIELDS = ("vision_s", "selection_s", "llm_prefill_s", "ttft_s", "decode_s", "prefill_tokens", "prefill_flops")
COST_COLUMNS = [f"{name}_{statistic}" for name in REPORTED_FIELDS for statistic in STATISTICS]


def cost_columns(summary: dict | None) -> dict[str, float | None]:
    """A cell's cost summary (cell.json "cost") as flat report columns; None where not recorded."""
    summary = summary or {}
    return {f"{name}_{statistic}": (summary.get(name) or {}).get(statistic) for name in REPORTED_FIELDS for statistic in STATISTICS}
