"""Finished cells of a runs folder as one tidy table: one row per (cell, benchmark)."""

from __future__ import annotations

import dataclasses
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
    "pretrained", "backend", "setting",
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
                "pretrained": cell.get("pretrained"),
                "backend": cell.get("backend"),
                "setting": _describe_setting(cell["method"], cell["options"], cell.get("budget_policy")),
                **cost_columns(record.get("cost")),
            })  # fmt: skip
    table = pd.DataFrame(rows, columns=TIDY_COLUMNS)
    check_one_setting_per_row(table)
    return table


class MixedCellsError(ValueError):
    """Cells that would share a report row or table although they were made with other settings."""


def check_one_setting_per_row(table: pd.DataFrame) -> None:
    """A table (run) holds one checkpoint, and a row (method label) one method with one set of options: cells
    of two sweeps written into one folder under the same model name or label must not pass as one setting."""
    cells = table.drop_duplicates("cell_dir")
    for run, in_run in cells.groupby("run", sort=True):
        models = _settings(in_run, lambda row: f"{row.pretrained} (backend {row.backend})")
        if len(models) > 1:
            raise MixedCellsError(
                f"run {run} holds cells of {len(models)} checkpoints: {_listing(models)}. One table is one checkpoint: "
                "give each checkpoint its own model.name in its sweep config (or its own --output folder) and move the "
                "cells already made to that folder"
            )
        for label, in_row in in_run.groupby("method_label", sort=True):
            settings = _settings(in_row, lambda row: row.setting)
            if len(settings) > 1:
                raise MixedCellsError(
                    f"row {label} of run {run} would mix cells made with other settings: {_listing(settings)}. One row is "
                    "one setting: give each variant its own label (label: in the sweep config) and move or remove the "
                    "cells of the other, or write the variants to separate --output folders"
                )


def _settings(cells: pd.DataFrame, describe) -> dict[str, list[str]]:
    """{setting: the cells made with it ('b64/gqa')} in the order first seen."""
    found: dict[str, list[str]] = {}
    for row in cells.itertuples():
        found.setdefault(describe(row), []).append("/".join(str(row.cell_dir).split("/")[-2:]))
    return found


def _listing(settings: dict[str, list[str]]) -> str:
    return "; ".join(f"{setting} in {', '.join(sorted(where))}" for setting, where in settings.items())


def _describe_setting(method: str, options: dict, budget_policy: object) -> str:
    """The method with every option's value as the method holds it (defaults filled in, values normalised by
    the method: alpha 1 or 1.0, written or left out, is one setting)."""
    from scope_eval.pruning import PruningError, build_method

    try:
        built = build_method(method, **options)
        values = {f.name: getattr(built, f.name) for f in dataclasses.fields(built) if f.init}
    except (PruningError, TypeError, ValueError):  # a method or option this version does not know: as recorded
        values = dict(options)
    policy = "" if budget_policy is None else f", budget_policy={budget_policy}"
    return f"{method}({', '.join(f'{key}={value!r}' for key, value in sorted(values.items()))}{policy})"
