"""Finished cells of a runs folder as one tidy table: one row per (cell, benchmark)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..provenance import describe as describe_environment
from ..sweeps.cells import CELL_FILE, run_name
from ..sweeps.cost import COST_COLUMNS, cost_columns
from ..sweeps.integrity import read_cell
from ..sweeps.tasks import include_dirs_of, task_benchmarks

TIDY_COLUMNS = [
    "run", "model", "paper_model", "method", "method_label", "options", "budget", "budget_policy", "limit",
    "task", "benchmark", "metric", "unit", "chance", "include_path", "value", "n", "tokens_min", "tokens_mean", "tokens_max", "cell_dir", "environment",
]  # fmt: skip
TIDY_COLUMNS += COST_COLUMNS  # per-sample cost of the cell: median and p90 (scope_eval/sweeps/cost.py)


def finished_cells(runs_dir: Path) -> list[Path]:
    """Every cell.json below runs_dir; scratch folders (.tmp-*, .stage-*) never hold one by construction,
    but are skipped anyway in case a copy was made by hand."""
    return sorted(p for p in runs_dir.rglob(CELL_FILE) if not any(part.startswith(".") for part in p.relative_to(runs_dir).parts))


def tidy(runs_dir: Path, damaged: list[tuple[Path, str]] | None = None, include_dirs: tuple[Path, ...] = ()) -> pd.DataFrame:
    """Damaged cells (integrity.py) are left out, and listed in `damaged` as (cell.json, why) when given.
    A task's benchmark (name, headline, scale) comes from its YAML: the shipped ones, the include path the
    cell was swept with (in its cell.json), else `include_dirs` (`report --include-path`)."""
    rows = []
    for record_path in finished_cells(runs_dir):
        record, problem = read_cell(record_path)
        if problem is not None:
            if damaged is not None:
                damaged.append((record_path, problem))
            continue
        cell = record["cell"]
        tokens = record.get("visual_tokens") or {}
        dirs = include_dirs_of(record) or include_dirs
        for benchmark in task_benchmarks(cell["task"], dirs):
            rows.append({
                "run": run_name(cell["model"], cell.get("limit")),
                "model": cell["model"],
                "paper_model": cell.get("paper_model"),
                "method": cell["method"],
                "method_label": cell["method_label"],
                "options": ",".join(f"{k}={v}" for k, v in sorted(cell["options"].items())),
                "budget": cell["table_budget"],
                "budget_policy": cell.get("budget_policy"),
                "limit": cell.get("limit"),
                "task": cell["task"],
                "benchmark": benchmark.name,
                "metric": benchmark.describe(),
                "unit": benchmark.unit,
                "chance": benchmark.chance,
                "include_path": str(dirs[0]) if dirs else None,
                "value": benchmark.value(record["results"]),
                "n": record.get("n_samples"),
                "tokens_min": tokens.get("min"),
                "tokens_mean": tokens.get("mean"),
                "tokens_max": tokens.get("max"),
                "cell_dir": str(record_path.parent.relative_to(runs_dir)),
                "environment": describe_environment(record),
                **cost_columns(record.get("cost")),
            })  # fmt: skip
    return pd.DataFrame(rows, columns=TIDY_COLUMNS)
