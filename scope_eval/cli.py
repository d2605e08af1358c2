"""The `scope-eval` command. Subpackages own their commands; this file only wires them."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Evaluate visual-token pruning in LLaVA models.")

# Each subpackage exposes plain functions with typer-annotated parameters; registration lines go here.
from scope_eval.bench.command import bench  # noqa: E402

app.command("bench")(bench)
from scope_eval.sweeps.commands import sweep  # noqa: E402
from scope_eval.reports.commands import report  # noqa: E402

app.command("sweep")(sweep)
app.command("report")(report)
from scope_eval.bench.selection import bench_selection  # noqa: E402

app.command("bench-selection")(bench_selection)
from scope_eval.toy.benchmark import toy_data  # noqa: E402

app.command("toy-data")(toy_data)
from scope_eval.sweeps.regression import regress  # noqa: E402
from scope_eval.toy.export import toy_export  # noqa: E402

app.command("toy-export")(toy_export)

app.command("regress")(regress)

from scope_eval.lmms.commands import tasks_dir, validate_tasks  # noqa: E402

app.command("validate-tasks")(validate_tasks)
app.command("tasks-dir")(tasks_dir)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
