"""`scope-eval report RUNS_DIR`: tables (Markdown, CSV, LaTeX), the comparison with the paper, plots."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import pandas as pd
import typer

from .collect import tidy
from .plots import plot_accuracy_vs_cost, plot_run, plot_time_breakdown
from .reference import reference_long
from .stats import cell_statistics
from .tables import MARKS_LEGEND, compare_with_paper, comparison_grid, interval_layout, markdown, paper_layout, select_rows


@dataclass
class ReportFiles:
    tidy: Path
    tables: list[Path] = field(default_factory=list)
    comparisons: list[Path] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)


def write_report(runs_dir: Path, out_dir: Path) -> tuple[ReportFiles, pd.DataFrame]:
    cells = tidy(runs_dir)
    if cells.empty:
        raise FileNotFoundError(f"no finished cells (cell.json) under {runs_dir}; run `scope-eval sweep CONFIG` first")
    out_dir.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(tidy=out_dir / "cells.csv")
    cells.to_csv(files.tidy, index=False)
    reference = reference_long()
    stats = cell_statistics(cells, runs_dir)  # intervals, paired tests, agreement (stats.py)
    for run in sorted(cells["run"].unique()):
        table = paper_layout(cells, run)
        written = {suffix: out_dir / f"table_{run}{suffix}" for suffix in (".md", ".csv", ".tex")}
        table.to_csv(written[".csv"], index=False)
        written[".md"].write_text(_markdown_page(run, cells, interval_layout(stats, run)) + "\n")
        stats_csv = out_dir / f"stats_{run}.csv"  # every number of the Markdown table, one column each
        stats[stats["run"] == run].to_csv(stats_csv, index=False)
        files.tables.append(stats_csv)
        written[".tex"].write_text(table.to_latex(index=False, float_format="%.1f", na_rep="--"))
        files.tables += list(written.values())
        comparison = compare_with_paper(cells, run, reference)
        if not comparison.empty:
            compared = {suffix: out_dir / f"compare_{run}{suffix}" for suffix in (".md", ".csv")}
            comparison.to_csv(compared[".csv"], index=False)
            compared[".md"].write_text(markdown(comparison_grid(comparison)) + "\n")
            files.comparisons += list(compared.values())
        files.plots.append(plot_run(cells, run, reference, out_dir / f"plot_{run}.png"))
        files.plots += [
            path
            for path in (
                plot_accuracy_vs_cost(stats, run, out_dir / f"cost_{run}.png"),
                plot_time_breakdown(stats, run, out_dir / f"time_{run}.png"),
            )
            if path is not None
        ]
    return files, cells


def report(
    runs_dir: Path = typer.Argument(..., metavar="RUNS_DIR", help="Output root of `scope-eval sweep` (e.g. ./runs)."),
    output: Optional[Path] = typer.Option(None, "--output", help="Where to write the report (default: RUNS_DIR/report)."),
    methods: Optional[List[str]] = typer.Option(None, "--method", help="Print only these methods (repeatable); files keep everything."),
    budgets: Optional[List[int]] = typer.Option(None, "--budget", help="Print only these budgets (repeatable); unpruned rows always show."),
) -> None:
    """Tidy table, the paper's layout with Avg, the side-by-side with the published numbers, and plots."""
    if not runs_dir.is_dir():
        typer.echo(f"error: {runs_dir} is not a folder; pass the --output of a sweep (default ./runs)", err=True)
        raise typer.Exit(2)
    out_dir = output or runs_dir / "report"
    try:
        files, cells = write_report(runs_dir, out_dir)
    except FileNotFoundError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    reference = reference_long()
    for run in sorted(cells["run"].unique()):
        typer.echo(f"\n## {run}: reproduced\n")
        typer.echo(markdown(select_rows(paper_layout(cells, run), methods or (), budgets or ())))
        grid = comparison_grid(compare_with_paper(cells, run, reference))
        if not grid.empty:
            typer.echo(f"\n## {run}: reproduced / paper (difference)\n")
            typer.echo(markdown(select_rows(grid, methods or (), budgets or ())))
    typer.echo(f"\nwritten to {out_dir}: {files.tidy.name}, " + ", ".join(p.name for p in files.tables + files.comparisons + files.plots))


def _markdown_page(run: str, cells: pd.DataFrame, table: pd.DataFrame) -> str:
    data = cells[cells["run"] == run]
    metrics = data.drop_duplicates("benchmark").set_index("benchmark")["metric"]
    limit = data["limit"].dropna().unique()
    lines = [
        f"# {run}",
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
