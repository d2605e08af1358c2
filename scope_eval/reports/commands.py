"""`scope-eval report RUNS_DIR`: tables (Markdown, CSV, LaTeX), the comparison with the paper, plots."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import pandas as pd
import typer

from ..sweeps.cli_values import split_values, whole_numbers
from .collect import MixedCellsError, tidy
from .forked import map_forked
from .gaps import Gap, find_gaps
from .plots import plot_accuracy_vs_cost, plot_run, plot_time_breakdown
from .reference import reference_long
from .stats import cell_statistics
from .tables import MARKS_LEGEND, budget_as_text, compare_with_paper, comparison_grid, interval_layout, markdown, paper_layout, select_rows


@dataclass
class ReportFiles:
    tidy: Path
    tables: list[Path] = field(default_factory=list)
    comparisons: list[Path] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)


def write_report(
    runs_dir: Path, out_dir: Path, cells: pd.DataFrame | None = None, gaps: list[Gap] | None = None, processes: int | None = None
) -> tuple[ReportFiles, pd.DataFrame]:
    """The report files; `cells` and `gaps` as read_runs gives them (read here when not given). `processes`
    compute the statistics and draw the figures (default: one per CPU this process may use); the files are
    the same for any number."""
    if cells is None:
        cells, gaps = read_runs(runs_dir)
    if cells.empty:
        raise FileNotFoundError(f"no finished cells (cell.json) under {runs_dir}; run `scope-eval sweep CONFIG` first")
    out_dir.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(tidy=out_dir / "cells.csv")
    cells.to_csv(files.tidy, index=False)
    reference = reference_long()
    processes = processes or available_cpus()
    stats = cell_statistics(cells, runs_dir, processes=processes)  # intervals, paired tests, agreement (stats.py)
    plots: list[Callable[[], Path | None]] = []
    for run in sorted(cells["run"].unique()):
        text_table = interval_layout(stats, run)  # the Markdown, CSV (with numbers) and TeX tables: one set of columns
        written = {suffix: out_dir / f"table_{run}{suffix}" for suffix in (".md", ".csv", ".tex")}
        interval_layout(stats, run, as_text=False).to_csv(written[".csv"], index=False)
        written[".md"].write_text(_markdown_page(run, cells, text_table) + _gaps_note(run, gaps or []) + "\n")
        stats_csv = out_dir / f"stats_{run}.csv"  # every number of the Markdown table, one column each
        stats[stats["run"] == run].to_csv(stats_csv, index=False)
        files.tables.append(stats_csv)
        written[".tex"].write_text(_latex(budget_as_text(text_table)))  # keep ratios exactly (0.25, not 0.2)
        files.tables += list(written.values())
        comparison = compare_with_paper(cells, run, reference)
        if not comparison.empty:
            compared = {suffix: out_dir / f"compare_{run}{suffix}" for suffix in (".md", ".csv")}
            comparison.to_csv(compared[".csv"], index=False)
            compared[".md"].write_text(markdown(comparison_grid(comparison)) + "\n")
            files.comparisons += list(compared.values())
        plots += [
            lambda run=run: plot_run(stats, run, reference, out_dir / f"plot_{run}.png"),
            lambda run=run: plot_accuracy_vs_cost(stats, run, out_dir / f"cost_{run}.png"),
            lambda run=run: plot_time_breakdown(stats, run, out_dir / f"time_{run}.png"),
        ]
    # The figures, drawn side by side like the statistics (each on its own; a figure the data cannot fill is None)
    drawn = map_forked(lambda index: plots[index](), range(len(plots)), processes)
    files.plots = [path for path in drawn if path is not None]
    return files, cells


def read_runs(runs_dir: Path, include_dirs: tuple[Path, ...] = ()) -> tuple[pd.DataFrame, list[Gap]]:
    """The tidy table of the intact finished cells, and every wanted cell it lacks with the reason."""
    damaged: list[tuple[Path, str]] = []
    cells = tidy(runs_dir, damaged, include_dirs)
    return cells, find_gaps(runs_dir, cells, damaged)


def report(
    runs_dir: Path = typer.Argument(..., metavar="RUNS_DIR", help="Output root of `scope-eval sweep` (e.g. ./runs)."),
    output: Optional[Path] = typer.Option(None, "--output", help="Where to write the report (default: RUNS_DIR/report)."),
    methods: Optional[List[str]] = typer.Option(None, "--method", help="Print only these methods (repeatable or comma-separated); files keep everything."),
    budgets: Optional[List[str]] = typer.Option(None, "--budget", help="Print only these budgets (repeatable or comma-separated); unpruned rows always show."),
    include_path: Optional[Path] = typer.Option(None, "--include-path", help="Folder of your own task YAMLs, for cells whose cell.json does not name it."),
    num_processes: Optional[int] = typer.Option(None, "--num-processes", min=1, help="Processes computing the statistics (default: one per CPU available); the report is the same for any number."),
) -> None:
    """Tidy table, the paper's layout with Avg, the side-by-side with the published numbers, and plots."""
    methods, budgets = split_values(methods), whole_numbers(budgets, "--budget")
    if not runs_dir.is_dir():
        typer.echo(f"error: {runs_dir} is not a folder; pass the --output of a sweep (default ./runs)", err=True)
        raise typer.Exit(2)
    out_dir = output or runs_dir / "report"
    if out_dir.exists() and not out_dir.is_dir():
        typer.echo(f"error: --output {out_dir} is a file; pass a folder (it is created if missing)", err=True)
        raise typer.Exit(2)
    try:
        cells, gaps = read_runs(runs_dir, (include_path,) if include_path else ())
    except MixedCellsError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    if cells.empty:
        typer.echo(f"error: no finished cells (cell.json) under {runs_dir}; run `scope-eval sweep CONFIG` first"
                   + _gaps_note(None, gaps), err=True)  # fmt: skip
        raise typer.Exit(2)
    _check_filters(cells, methods or [], budgets or [])
    try:
        files, cells = write_report(runs_dir, out_dir, cells, gaps, num_processes)
    except OSError as error:
        typer.echo(f"error: cannot write the report to {out_dir}: {error.strerror or error}; pass a writable --output", err=True)
        raise typer.Exit(2) from None
    reference = reference_long()
    for run in sorted(cells["run"].unique()):
        typer.echo(f"\n## {run}: reproduced\n")
        typer.echo(f"{_checkpoint_line(cells, run)}\n")
        typer.echo(markdown(select_rows(paper_layout(cells, run), methods or (), budgets or ())))
        typer.echo(_gaps_note(run, gaps).lstrip("\n"))
        grid = comparison_grid(compare_with_paper(cells, run, reference))
        if not grid.empty:
            typer.echo(f"\n## {run}: reproduced / paper (difference)\n")
            typer.echo(markdown(select_rows(grid, methods or (), budgets or ())))
    for run in sorted({gap.run for gap in gaps} - set(cells["run"])):
        typer.echo(f"\n## {run}: no finished cells" + _gaps_note(run, gaps))
    typer.echo(f"\nwritten to {out_dir}: {files.tidy.name}, " + ", ".join(p.name for p in files.tables + files.comparisons + files.plots))
    if gaps:
        typer.echo(f"{len(gaps)} cell(s) missing, failed or damaged: listed under the tables", err=True)


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity: a container's or taskset's limit, not the host's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _check_filters(cells: pd.DataFrame, methods: list[str], budgets: list[int]) -> None:
    """An unknown --method or --budget is a mistake, not a request for an empty table."""
    known_methods = sorted(set(cells["method_label"]) | set(cells["method"]))
    unknown = [m for m in methods if m not in known_methods]
    if unknown:
        typer.echo(f"error: --method {', '.join(unknown)} is in none of the cells; known: {', '.join(known_methods)}", err=True)
        raise typer.Exit(2)
    known_budgets = sorted({int(b) for b in cells["budget"]})
    unknown_budgets = [b for b in budgets if b not in known_budgets]
    if unknown_budgets:
        typer.echo(f"error: --budget {', '.join(map(str, unknown_budgets))} is in none of the cells; known: "
                   f"{', '.join(map(str, known_budgets))}", err=True)  # fmt: skip
        raise typer.Exit(2)


def _latex(table: pd.DataFrame) -> str:
    """The Markdown table's columns and text, escaped for LaTeX (%, _ and the significance marks)."""
    marks = {"†": r"$^\dagger$", "‡": r"$^\ddagger$", "→": r"$\to$", "%": r"\%", "_": r"\_"}

    def escape(value: object) -> object:
        if not isinstance(value, str):
            return value
        for mark, latex in marks.items():
            value = value.replace(mark, latex)
        return value

    escaped = table.map(escape).rename(columns=escape)
    return escaped.to_latex(index=False, float_format="%.1f", na_rep="--", escape=False)


def _gaps_note(run: str | None, gaps: list[Gap]) -> str:
    """Lines naming the cells the table of `run` (None: every run) lacks; empty when it lacks none."""
    mine = [gap for gap in gaps if run is None or gap.run == run]
    if not mine:
        return ""
    lines = ["", "", f"**{len(mine)} cell(s) not in this table:**", ""]
    lines += [f"- {gap.describe() if run is not None else gap.run + ' ' + gap.describe()}" for gap in mine]
    return "\n".join(lines)


def _markdown_page(run: str, cells: pd.DataFrame, table: pd.DataFrame) -> str:
    data = cells[cells["run"] == run]
    metrics = data.drop_duplicates("benchmark").set_index("benchmark")["metric"]
    limit = data["limit"].dropna().unique()
    lines = [
        f"# {run}",
        "",
        _checkpoint_line(cells, run),
        "",
        f"Reproduced with scope_eval from {data['cell_dir'].nunique()} finished cells (cell.json files).",
        "Avg = mean over the benchmarks of score / unpruned score x 100 (the paper's definition); "
        "SEED-I beside SEED is not counted twice.",
    ]
    if len(limit):
        lines.append(f"**Limited run ({limit[0]} documents per task): not comparable with the paper's numbers.**")
    lines += ["", markdown(table), "", MARKS_LEGEND, "", "Metrics (lmms-eval keys):", ""]
    lines += [f"- {benchmark}: {metric}" for benchmark, metric in metrics.items()]
    environments = sorted(data["environment"].dropna().unique())
    lines += ["", "Environment (package versions and lock, from the cells):" if len(environments) == 1
              else f"**Cells computed in {len(environments)} different environments:**", ""]
    lines += [f"- {environment}" for environment in environments]
    return "\n".join(lines)


def _checkpoint_line(cells: pd.DataFrame, run: str) -> str:
    """Which model computed the table (one checkpoint per run: collect.check_one_setting_per_row)."""
    data = cells[cells["run"] == run]
    checkpoint, backend = data["pretrained"].iloc[0], data["backend"].iloc[0]
    return f"Checkpoint: {checkpoint} (backend {backend})"
