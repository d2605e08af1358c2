"""The score table a sweep prints when it ends: method x benchmark, headline numbers of its finished cells.

A first look only: the numbers are those `scope-eval report` tabulates (the headline metric of each
benchmark, in the paper's units: sweeps/metrics.py), without intervals, averages or the published
references; the last line names the command that writes the full report.
"""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from .cells import CELL_FILE, cell_dir, expand
from .config import SweepConfig, own_task_dirs
from .integrity import read_cell
from .metrics import BENCHMARK_ORDER
from .tasks import task_benchmarks


def score_rows(config: SweepConfig) -> tuple[list[str], list[tuple[str, str, dict[str, float]]]]:
    """(benchmark columns, rows of (method label, budget, {benchmark: value})) over the sweep's intact
    finished cells, in the sweep's order; cells not finished (or damaged) are left out."""
    rows: dict[tuple[str, str], dict[str, float]] = {}
    columns: list[str] = []
    for cell in expand(config):
        record_path = cell_dir(config, cell) / CELL_FILE
        if not record_path.is_file():
            continue
        record, problem = read_cell(record_path)
        if problem is not None or record is None:
            continue
        budget = "full" if cell.budget is None else str(cell.budget)
        values = rows.setdefault((cell.method.label, budget), {})
        for benchmark in task_benchmarks(cell.task, own_task_dirs(config)):  # one's own benchmark: its YAML's metadata
            try:
                values[benchmark.name] = benchmark.value(record["results"])
            except KeyError:
                continue
            if benchmark.name not in columns:
                columns.append(benchmark.name)
    order = {name: index for index, name in enumerate(BENCHMARK_ORDER)}
    columns.sort(key=lambda name: order.get(name, len(order)))
    return columns, [(label, budget, values) for (label, budget), values in rows.items() if values]


def score_table(config: SweepConfig) -> Table | None:
    """The rich table of `score_rows`, or None when no cell is finished."""
    columns, rows = score_rows(config)
    if not rows:
        return None
    limited = "" if config.limit is None else f", limit {config.limit} documents per task"
    table = Table(title=f"scores: {config.model.name}{limited}")
    table.add_column("method")
    table.add_column("budget", justify="right")
    for column in columns:
        table.add_column(column, justify="right")
    for label, budget, values in rows:
        table.add_row(label, budget, *(f"{values[c]:.1f}" if c in values else "-" for c in columns))
    return table


def report_hint(config: SweepConfig) -> str:
    """The command that writes the full report of this sweep's output."""
    return f"full report (intervals, averages, paper references, plots): scope-eval report {config.output} --output {Path(config.output) / 'report'}"
