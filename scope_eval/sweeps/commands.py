"""`scope-eval sweep CONFIG`: the command-line face of the runner (registered in scope_eval/cli.py)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from .cli_values import split_values, whole_numbers
from .config import SweepConfigError, load_sweep, with_overrides
from .runner import SweepSetupError, WorkerLanes, describe_plan, print_summary, run_sweep
from .scores import report_hint, score_table


def sweep(
    config_paths: List[Path] = typer.Argument(..., metavar="CONFIG", help="Sweep YAML(s), e.g. configs/llava15_7b_table1.yaml; several run one after another, the options applying to each."),
    num_processes: Optional[int] = typer.Option(None, "--num-processes", help="Processes (GPUs) per lmms-eval launch; >1 uses accelerate launch."),
    parallel: Optional[str] = typer.Option(None, "--parallel", help="With --num-processes > 1: documents (each cell split over the processes, the default) or cells (whole cells spread over independent workers; many short cells)."),
    limit: Optional[str] = typer.Option(None, "--limit", help="Documents per task (N, or a fraction in (0,1)); limited runs go to their own folders."),
    methods: Optional[List[str]] = typer.Option(None, "--method", help="Run only this method (name or label; repeatable or comma-separated). Config entries keep their options."),
    budgets: Optional[List[str]] = typer.Option(None, "--budget", help="Run these budgets instead of the config's (repeatable or comma-separated). The unpruned cells are not affected."),
    keep_ratios: Optional[List[float]] = typer.Option(None, "--keep-ratio", help="Run these keep ratios (share of each image's visual tokens, e.g. 0.25) instead of the config's budgets (repeatable)."),
    tasks: Optional[List[str]] = typer.Option(None, "--task", help="Run only these tasks (repeatable or comma-separated)."),
    output: Optional[str] = typer.Option(None, "--output", help="Root folder of the runs (default: the config's output, relative to the config file; else ./runs)."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="Checkpoint (hub id or local folder) instead of the config's."),
    include_path: Optional[str] = typer.Option(None, "--include-path", help="Folder of your own task YAMLs (as lmms-eval's --include_path), beside the shipped ones."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Folder with local copies of the benchmarks, handed to the plugin."),
    offline: Optional[bool] = typer.Option(None, "--offline/--online", help="Run lmms-eval with the Hugging Face hub switched off (or on)."),
    isolation: Optional[str] = typer.Option(None, "--isolation", help="worker: one process per model loads it once for all cells (default); process: one lmms-eval process per cell."),
    evaluator: Optional[str] = typer.Option(None, "--evaluator", help="Python interpreter and what it runs instead of lmms-eval, e.g. '/other/venv/bin/python -m lmms_eval'; runs one process per cell (isolation: process)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the lmms-eval commands and run nothing."),
) -> None:
    """Run a methods x budgets x tasks sweep through lmms-eval; finished cells are kept and skipped."""
    console = Console(soft_wrap=True)  # paths stay whole (pasteable) whatever the terminal width
    errors = Console(stderr=True, soft_wrap=True)
    try:  # every config checked before the first cell runs
        overrides = dict(
            num_processes=num_processes,
            parallel=parallel,
            limit=_parse_limit(limit),
            methods=split_values(methods),
            budgets=whole_numbers(budgets, "--budget"),
            keep_ratios=keep_ratios or None,
            tasks=split_values(tasks),
            output=output,
            pretrained=pretrained,
            data_dir=data_dir,
            include_path=include_path,
            offline=offline,
            isolation=isolation,
        )
        configs = [with_overrides(load_sweep(config_path), **overrides) for config_path in config_paths]
    except SweepConfigError as error:
        errors.print(f"[red]error:[/] {error}", highlight=False)
        raise typer.Exit(2) from None
    evaluator_args = shlex.split(evaluator) if evaluator else None
    failed = False
    try:
        if dry_run:
            for config in configs:
                for line in describe_plan(config, evaluator_args):
                    typer.echo(line)
            return
        # Several configs: with parallel: cells, their workers start once, each sweep handing them its job
        with WorkerLanes() as lanes:
            for config in configs:
                summary = run_sweep(config, evaluator_args, console, lanes)
                print_summary(summary, console)
                table = score_table(config)
                if table is not None:
                    console.print(table)
                    console.print(report_hint(config), soft_wrap=True, highlight=False)
                failed = failed or not summary.ok
    except SweepSetupError as error:
        errors.print(f"[red]error:[/] {error}", highlight=False)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        errors.print("[yellow]interrupted[/]: finished cells are kept; run the same command again to resume")
        raise typer.Exit(130) from None
    if failed:
        raise typer.Exit(1)


def _parse_limit(text: str | None) -> int | float | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise typer.BadParameter(f"--limit takes a number of documents or a fraction, got {text!r}") from None
