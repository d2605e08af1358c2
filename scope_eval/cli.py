"""The `scope-eval` command (the harness). Subpackages own their commands; this file only wires them.

The commands need the harness extra (typer, rich, pandas, matplotlib, lmms-eval); with the library alone
installed, `scope-eval` says which extra to install instead of failing on an import.
"""

from __future__ import annotations

import sys


def build_app():
    import typer

    from scope_eval.bench.command import bench
    from scope_eval.bench.qwen_saliency import bench_qwen_saliency
    from scope_eval.bench.selection import bench_selection
    from scope_eval.reports.commands import report
    from scope_eval.reports.regression import regress
    from scope_eval.sweeps.commands import sweep
    from scope_eval.sweeps.task_commands import tasks_dir, validate_tasks
    from scope_eval.toy.benchmark import toy_data
    from scope_eval.toy.export import toy_export

    app = typer.Typer(no_args_is_help=True, add_completion=False, help="Evaluate visual-token pruning in LLaVA models.")
    for name, command in {
        "sweep": sweep,  # methods x budgets x tasks through lmms-eval, resumable
        "report": report,  # tables and plots beside the paper's numbers
        "regress": regress,  # accuracy regression check against a stored baseline
        "bench": bench,  # what pruning saves: prefill, FLOPs, memory
        "bench-selection": bench_selection,  # exact fast greedy vs the naive loop
        "bench-qwen-saliency": bench_qwen_saliency,  # Qwen SCOPE saliency recomputation: time, peak memory
        "tasks-dir": tasks_dir,  # the lmms-eval include directory (optionally pointed at local data)
        "validate-tasks": validate_tasks,  # check task YAMLs the way lmms-eval loads them
        "toy-data": toy_data,  # regenerate the synthetic benchmark files
        "toy-export": toy_export,  # the toy checkpoints in the original LLaVA codebase's format
    }.items():
        app.command(name)(command)
    return app


def __getattr__(name: str):
    if name == "app":  # `from scope_eval.cli import app` (tests, typer's CliRunner): built on first use
        return build_app()
    raise AttributeError(f"module 'scope_eval.cli' has no attribute {name!r}")


def main() -> None:
    try:
        app = build_app()
    except ImportError as error:
        if error.name is None or error.name.split(".")[0] == "scope_eval":
            raise
        sys.exit(
            f"scope-eval: the command line needs the harness extra ({error.name} is not installed); "
            "install it with: pip install 'scope-eval[harness]'"
        )
    app()


if __name__ == "__main__":
    main()
