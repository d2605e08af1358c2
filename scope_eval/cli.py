"""The `scope-eval` command (the harness). Subpackages own their commands; this file only wires them.

The commands need the harness extra (typer, rich, pandas, matplotlib, lmms-eval); with the library alone
installed, `scope-eval` says which extra to install instead of failing on an import.

A command's module is imported only when that command runs: `scope-eval --help` lists the commands from
the table below without importing torch, pandas or lmms-eval (about 7 s before this table, see
docs/measurements.md).

One vocabulary across the commands: `--output` is where a command writes, `--method` / `--budget` choose
methods and budgets (repeatable, or comma-separated), `--pretrained` is a checkpoint (hub id or folder).
Older spellings still work and print a deprecation note (DEPRECATED below).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class CommandEntry:
    module: str  # scope_eval.<module>, imported when the command runs
    function: str
    summary: str  # the line `scope-eval --help` shows


COMMANDS: dict[str, CommandEntry] = {
    "sweep": CommandEntry("sweeps.commands", "sweep", "Run methods x budgets x tasks through lmms-eval; finished cells are kept and skipped."),
    "report": CommandEntry("reports.commands", "report", "Tables (Markdown, CSV, LaTeX) with intervals, the paper side by side, plots."),
    "methods": CommandEntry("sweeps.method_commands", "list_methods", "List the registered pruning methods: stage, options, defaults."),
    "regress": CommandEntry("reports.regression", "regress", "Accuracy regression check against a stored baseline."),
    "bench": CommandEntry("bench.command", "bench", "What pruning saves: prefill time, FLOPs, memory."),
    "bench-selection": CommandEntry("bench.selection", "bench_selection", "Exact fast greedy against the naive loop (timings)."),
    "bench-qwen-saliency": CommandEntry("bench.qwen_saliency", "bench_qwen_saliency", "Qwen SCOPE saliency recomputation: time and peak memory."),
    "tasks-dir": CommandEntry("sweeps.task_commands", "tasks_dir", "Print the --include_path for lmms-eval (optionally pointed at local data)."),
    "validate-tasks": CommandEntry("sweeps.task_commands", "validate_tasks", "Check task YAMLs the way lmms-eval loads them."),
    "make-task-data": CommandEntry("sweeps.task_data", "make_task_data", "Turn a JSONL of questions + a folder of images into a task's parquet."),
    "toy-data": CommandEntry("toy.benchmark", "toy_data", "Regenerate the synthetic benchmark files."),
    "toy-export": CommandEntry("toy.export", "toy_export", "The toy checkpoints in the original LLaVA codebase's format."),
}

# command -> {old option spelling: current one}; the old ones stay accepted (scripts use them).
DEPRECATED: dict[str, dict[str, str]] = {
    "bench": {"--out": "--output", "--model": "--pretrained", "--methods": "--method", "--budgets": "--budget"},
    "bench-selection": {"--json": "--output", "--markdown": "--output"},
    "toy-data": {"--out-dir": "--output"},
    "regress": {"--runs": "--output"},
}


def _version() -> str:
    import scope_eval  # the package's own number (its __init__ imports nothing heavy)

    return scope_eval.__version__


def build_app():
    import click
    import typer
    from typer.core import TyperGroup

    class LazyGroup(TyperGroup):
        """Commands listed from COMMANDS; a command's module is imported only to run (or document) it."""

        listing = False

        def list_commands(self, ctx: click.Context) -> list[str]:
            return list(COMMANDS)

        def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
            entry = COMMANDS.get(name)
            if entry is None:
                return super().get_command(ctx, name)
            if self.listing:
                return click.Command(name, help=entry.summary, short_help=entry.summary)
            return load_command(name)

        def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
            self.listing = True
            try:
                super().format_help(ctx, formatter)
            finally:
                self.listing = False

        def get_params(self, ctx: click.Context) -> list:
            return standard_placeholders(super().get_params(ctx))

    app = typer.Typer(cls=LazyGroup, no_args_is_help=True, add_completion=False, help="Evaluate visual-token pruning in LLaVA models.")

    def show_version(value: bool) -> None:
        if value:
            typer.echo(f"scope-eval {_version()}")
            raise typer.Exit()

    @app.callback()
    def main_options(
        version: bool = typer.Option(False, "--version", callback=show_version, is_eager=True, help="Print the version and exit."),
    ) -> None:
        """Evaluate visual-token pruning in LLaVA models. `scope-eval COMMAND --help` for a command's options."""

    return app


def load_command(name: str):
    """The click command of one entry of COMMANDS (imports its module)."""
    import typer

    entry = COMMANDS[name]
    function = getattr(importlib.import_module(f"scope_eval.{entry.module}"), entry.function)
    single = typer.Typer(add_completion=False)
    single.command(name, cls=_command_class())(function)
    command = typer.main.get_command(single)
    command.name = name
    return command


def _command_class():
    from typer.core import TyperCommand

    class Command(TyperCommand):
        def get_params(self, ctx):
            return standard_placeholders(super().get_params(ctx))

    return Command


def standard_placeholders(params: list) -> list:
    """Options shown as `--budget INTEGER`, `--output PATH`, flags bare: not typer's `<list[int]>`, `<bool>`;
    an argument taking several values as `<path>...` (how a single one reads: `<path>`)."""
    for param in params:
        if getattr(param, "param_type_name", None) == "argument" and getattr(param, "nargs", 1) != 1:
            single = "<" + PLACEHOLDERS.get(param.bare_type().removeprefix("list[").removesuffix("]"), "TEXT").lower() + ">..."
            param.display_type_rich = lambda ctx, shown=single: shown  # this command's own parameter object only
            continue
        if getattr(param, "param_type_name", None) != "option" or param.metavar is not None:
            continue
        described = getattr(param, "type_descriptor", None)
        if getattr(param, "is_flag", False) or described is None:
            param.metavar = ""
        elif described.is_choice:
            param.metavar = "[" + "|".join(map(str, described.choices or ())) + "]"
        else:
            bare = param.bare_type().removeprefix("list[").removesuffix("]")
            param.metavar = PLACEHOLDERS.get(bare, "TEXT")
    return params


PLACEHOLDERS = {"int": "INTEGER", "float": "NUMBER", "Path": "PATH", "bool": ""}


def deprecation_notes(argv: list[str]) -> list[str]:
    """Notes for the old option spellings in a command line (`--out x` and `--out=x` alike)."""
    if not argv or argv[0] not in DEPRECATED:
        return []
    renamed = DEPRECATED[argv[0]]
    used = {arg.split("=", 1)[0] for arg in argv[1:] if arg.startswith("--")}
    return [f"scope-eval {argv[0]}: {old} is deprecated, use {renamed[old]}" for old in renamed if old in used]


def __getattr__(name: str):
    if name == "app":  # `from scope_eval.cli import app` (tests, typer's CliRunner): built on first use
        return build_app()
    raise AttributeError(f"module 'scope_eval.cli' has no attribute {name!r}")


def main() -> None:
    for note in deprecation_notes(sys.argv[1:]):
        print(note, file=sys.stderr)
    try:
        app = build_app()
        command = sys.argv[1] if len(sys.argv) > 1 else None
        if command in COMMANDS:  # a missing extra surfaces here, before typer reports it as a crash
            load_command(command)
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
