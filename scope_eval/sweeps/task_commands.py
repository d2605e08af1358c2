"""``scope-eval tasks-dir`` and ``scope-eval validate-tasks`` (registered in scope_eval/cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ..lmms.tasks import TASKS_DIR


def tasks_dir(
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", help="Folder with local copies of the paper's benchmarks (DATA/MME, DATA/GQA, ...). Without it: the shipped, hub-reading tasks."
    ),
    output: Path = typer.Option(Path("scope_tasks"), "--output", help="Where to write the include directory (with --data-dir)."),
) -> None:
    """Print the --include_path for lmms-eval: the shipped tasks, or (with --data-dir) tasks reading local copies."""
    if data_dir is None:
        print(TASKS_DIR)
        return
    from ..lmms.local_data import write_tasks_dir

    report = Console(stderr=True, soft_wrap=True)
    try:
        copies = write_tasks_dir(data_dir, output)
    except FileNotFoundError as error:
        report.print(f"[red]{error}[/red]")
        raise typer.Exit(2)
    for copy in copies:
        status = "[green]local[/green]" if copy.complete else "[yellow]left out[/yellow]"
        report.print(f"{copy.benchmark.task:22} {status}  {copy.describe()}")
    if not any(copy.complete for copy in copies):
        report.print(f"[red]no benchmark found under {data_dir}; see scope_eval/lmms/README.md for the layout[/red]")
        raise typer.Exit(1)
    print(Path(output).resolve())


def validate_tasks(
    directory: Optional[Path] = typer.Argument(None, help="Include directory to check (default: the shipped one)."),
    include_path: Optional[Path] = typer.Option(None, "--include-path", help="The same as DIRECTORY, spelled as in sweep and report."),
    check_hub: bool = typer.Option(False, "--check-hub", help="Also ask the Hugging Face hub whether hub datasets exist."),
) -> None:
    """Load every task YAML under DIRECTORY: schema, !function targets, data present; non-zero exit on any problem."""
    from .validate_tasks import print_checks, validate_directory

    if directory is not None and include_path is not None and directory != include_path:
        raise typer.BadParameter(f"given twice ({directory} and {include_path}); pass one", param_hint="--include-path")
    directory = directory or include_path or TASKS_DIR

    checks = validate_directory(directory, check_hub=check_hub)
    print_checks(checks, Console(soft_wrap=True))
    if not checks or any(not check.ok for check in checks):
        raise typer.Exit(1)
