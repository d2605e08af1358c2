"""The `scope-eval` command. Subpackages own their commands; this file only wires them."""

from __future__ import annotations

import typer

from scope_eval.bench.command import bench
from scope_eval.bench.selection import bench_selection
from scope_eval.lmms.commands import tasks_dir, validate_tasks
from scope_eval.reports.commands import report
from scope_eval.sweeps.commands import sweep
from scope_eval.sweeps.regression import regress
from scope_eval.toy.benchmark import toy_data
from scope_eval.toy.export import toy_export

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Evaluate visual-token pruning in LLaVA models.")

for name, command in {
    "sweep": sweep,  # methods x budgets x tasks through lmms-eval, resumable
    "report": report,  # tables and plots beside the paper's numbers
    "regress": regress,  # accuracy regression check against a stored baseline
    "bench": bench,  # what pruning saves: prefill, FLOPs, memory
    "bench-selection": bench_selection,  # exact fast greedy vs the naive loop
    "tasks-dir": tasks_dir,  # the lmms-eval include directory (optionally pointed at local data)
    "validate-tasks": validate_tasks,  # check task YAMLs the way lmms-eval loads them
    "toy-data": toy_data,  # regenerate the synthetic benchmark files
    "toy-export": toy_export,  # the toy checkpoints in the original LLaVA codebase's format
}.items():
    app.command(name)(command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
