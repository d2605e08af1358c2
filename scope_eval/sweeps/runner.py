"""Runs a sweep: every unfinished cell through lmms-eval, resumable, never overwriting a finished cell.

Unit of work. A finished cell is one (method, budget, task). By default each cell is its own lmms-eval
launch: a paper-scale task runs for minutes to hours, so losing a finished GQA because MM-Vet crashed
later in the same process costs far more than the extra start-up per launch (about 8 s of lmms-eval
import and task indexing plus loading the checkpoint), and a task that cannot load (missing data, no
judge key) fails alone. `group_tasks: true` runs all tasks of a (method, budget) in one launch, for
the toy sweeps where start-up dominates; finished cells are still stored and resumed one by one.

Atomicity. A launch writes into a scratch folder `.tmp-*` next to its cells, wiped before every start.
A cell becomes finished in one step: its folder, complete with `cell.json`, is renamed into place
(`os.replace` of a directory). So after a crash, a cell folder either holds everything or does not
exist, and an interrupted launch is simply redone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .cells import CELL_FILE, Cell, Launch, cell_dir, expand, fingerprint, include_path, plan_launches
from .config import SweepConfig
from .cost import cost_summary
from .outputs import TaskOutcome, read_task_outcomes, visual_token_summary
from ..provenance import provenance as environment_provenance

LOG_FILE = "lmms_eval.log"
FORMAT = "scope_eval.cell/1"


@dataclass
class SweepSummary:
    finished: list[Cell] = field(default_factory=list)  # finished by this run
    skipped: list[Cell] = field(default_factory=list)  # finished before, left untouched
    failed: list[tuple[Cell, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


class SweepSetupError(RuntimeError):
    """The sweep cannot start (output folder busy, local data incomplete); the message names the fix."""


def classify(config: SweepConfig, cells: Sequence[Cell]) -> tuple[list[Cell], list[tuple[Cell, str]], list[Cell]]:
    """Split cells into (finished, conflicting, to run). A finished cell made with other settings is a
    conflict: reusing it would mix numbers, overwriting it would destroy them."""
    done, conflicts, pending = [], [], []
    for cell in cells:
        record = cell_dir(config, cell) / CELL_FILE
        if not record.is_file():
            pending.append(cell)
            continue
        stored = json.loads(record.read_text()).get("fingerprint")
        wanted = _json_roundtrip(fingerprint(config, cell))
        if stored == wanted:
            done.append(cell)
        else:
            changed = sorted(key for key in wanted if (stored or {}).get(key) != wanted[key])
            conflicts.append((cell, f"{record.parent} was produced with different {', '.join(changed)}; finished "
                              f"cells are never overwritten: use another --output, or remove that folder"))  # fmt: skip
    return done, conflicts, pending


def describe_plan(config: SweepConfig, evaluator: Sequence[str] | None = None) -> list[str]:
    """The dry run: what would be launched, as copy-pasteable shell lines."""
    cells = expand(config)
    done, conflicts, pending = classify(config, cells)
    launches = plan_launches(config, pending, evaluator)
    lines = [
        f"# {len(cells)} cells: {len(done)} finished, {len(conflicts)} in conflict, "
        f"{len(pending)} to run in {len(launches)} lmms-eval launch(es); output {config.output}"
    ]
    lines += [f"# conflict: {reason}" for _, reason in conflicts]
    for launch in launches:
        env = " ".join(f"{key}={value}" for key, value in launch.env.items())
        lines.append(f"# {', '.join(cell.name() for cell in launch.cells)}")
        lines.append((env + " " if env else "") + shlex.join(launch.command))
    return lines


def run_sweep(config: SweepConfig, evaluator: Sequence[str] | None = None, console: Console | None = None) -> SweepSummary:
    console = console or Console()
    cells = expand(config)
    done, conflicts, pending = classify(config, cells)
    summary = SweepSummary(skipped=done, failed=list(conflicts))
    launches = plan_launches(config, pending, evaluator)
    console.print(
        f"{config.model.name}: {len(cells)} cells, {len(done)} already finished, "
        f"{len(pending)} to run in {len(launches)} launch(es) -> {config.output}"
    )
    if not launches:
        return summary
    root = Path(config.output)
    root.mkdir(parents=True, exist_ok=True)
    provenance = environment_provenance()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with _exclusive(root), _sigterm_as_interrupt(), Progress(*columns, console=console) as progress:
        if config.data_dir is not None:
            _write_local_tasks(config, {cell.task for cell in pending})
        bar = progress.add_task("cells", total=len(pending))
        seconds_per_cell: list[float] = []
        for launch in launches:
            progress.update(bar, description=f"running {launch.cells[0].method.label} {launch.cells[0].budget_folder} "
                            f"({', '.join(launch.tasks)})")  # fmt: skip
            started = time.monotonic()
            results = run_launch(config, launch, provenance)
            seconds_per_cell.append((time.monotonic() - started) / len(launch.cells))
            for cell, outcome in results:
                if outcome.ok:
                    summary.finished.append(cell)
                    progress.console.print(f"[green]done[/]   {cell.name()}  {seconds_per_cell[-1]:.1f} s")
                else:
                    summary.failed.append((cell, f"{outcome.reason}; log: {launch.work_dir / LOG_FILE}"))
                    progress.console.print(f"[red]failed[/] {cell.name()}: {outcome.reason}")
                    progress.console.print(_log_tail(launch.work_dir / LOG_FILE), style="dim", markup=False, highlight=False)
            progress.advance(bar, len(launch.cells))
            left = len(pending) - progress.tasks[0].completed
            mean = sum(seconds_per_cell) / len(seconds_per_cell)
            progress.update(bar, description=f"cells ({left} left, {mean:.1f} s per cell)")
    return summary


def run_launch(config: SweepConfig, launch: Launch, provenance: dict) -> list[tuple[Cell, TaskOutcome]]:
    work = launch.work_dir
    shutil.rmtree(work, ignore_errors=True)  # whatever an interrupted attempt left
    work.mkdir(parents=True)
    started = datetime.now(timezone.utc)
    with (work / LOG_FILE).open("w") as log:
        log.write("$ " + shlex.join(launch.command) + "\n")
        log.flush()
        process = subprocess.Popen(launch.command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **launch.env})
        try:
            exit_code = process.wait()
        except BaseException:
            _stop(process)
            raise
    finished = datetime.now(timezone.utc)
    timing = {
        "started": started.isoformat(),
        "finished": finished.isoformat(),
        "launch_seconds": (finished - started).total_seconds(),
        "launch_tasks": list(launch.tasks),
        "exit_code": exit_code,
    }
    outcomes = read_task_outcomes(work / "lmms", launch.tasks, exit_code)
    results = []
    for cell, outcome in zip(launch.cells, outcomes):
        if outcome.ok:
            try:
                _finish_cell(config, launch, cell, outcome, timing, provenance)
            except OSError as error:
                outcome = dataclasses.replace(outcome, ok=False, reason=f"could not store the cell: {error}")
        results.append((cell, outcome))
    if work.exists() and all(outcome.ok for _, outcome in results):
        shutil.rmtree(work)
    return results


def _write_local_tasks(config: SweepConfig, tasks: set[str]) -> None:
    """The plugin's include directory, re-pointed at the local copies under data_dir."""
    from ..lmms.local_data import write_tasks_dir

    copies = write_tasks_dir(Path(config.data_dir), include_path(config))
    missing = [copy for copy in copies if copy.benchmark.task in tasks and not copy.complete]
    if missing:
        problems = "; ".join(f"{copy.benchmark.task}: {copy.describe()}" for copy in missing)
        raise SweepSetupError(f"local copies missing under {config.data_dir}: {problems}")


def _finish_cell(config: SweepConfig, launch: Launch, cell: Cell, outcome: TaskOutcome, timing: dict, provenance: dict) -> None:
    final = cell_dir(config, cell)
    tokens = visual_token_summary(outcome)  # before the samples file moves
    cost = cost_summary(outcome.samples_file)
    if len(launch.cells) == 1:
        staging = launch.work_dir  # the whole scratch folder becomes the cell
    else:
        staging = launch.work_dir.parent / f".stage-{cell.task}"
        shutil.rmtree(staging, ignore_errors=True)
        _copy_task_files(launch.work_dir, staging, outcome)
    record = {
        "format": FORMAT,
        "cell": {
            "model": cell.model.name,
            "paper_model": cell.model.paper,
            "family": cell.model.family,
            "backend": cell.model.backend,
            "pretrained": cell.model.pretrained,
            "method": cell.method.name,
            "method_label": cell.method.label,
            "options": dict(cell.method.options),
            "budget": cell.budget,
            "table_budget": cell.table_budget,
            "budget_policy": config.budget_policy,
            "task": cell.task,
            "limit": config.limit,
        },
        "fingerprint": fingerprint(config, cell),
        "config": config.to_dict(),
        "command": list(launch.command),
        "env": dict(launch.env),
        "timing": timing,
        **provenance,
        "results": outcome.results,
        "n_samples": outcome.n_samples,
        "visual_tokens": tokens,
        "cost": cost,  # per-sample times and FLOPs: median and p90 per field (scope_eval/sweeps/cost.py)
        "files": {
            "log": LOG_FILE,
            "samples": str(outcome.samples_file.relative_to(launch.work_dir)) if outcome.samples_file else None,
        },
    }
    write_json_atomic(staging / CELL_FILE, record)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, final)  # fails, rather than overwrite, if a non-empty folder is already there


def _copy_task_files(work: Path, staging: Path, outcome: TaskOutcome) -> None:
    """One task's share of a grouped launch: the results json and log copied, its samples moved."""
    staging.mkdir(parents=True)
    shutil.copy2(work / LOG_FILE, staging / LOG_FILE)
    for results_file in (work / "lmms").glob("**/*_results.json"):
        target = staging / results_file.relative_to(work)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(results_file, target)
    if outcome.samples_file is not None:
        target = staging / outcome.samples_file.relative_to(work)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(outcome.samples_file, target)


def write_json_atomic(path: Path, data: dict) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(temporary, path)


def print_summary(summary: SweepSummary, console: Console) -> None:
    table = Table(title="sweep summary")
    for column in ("finished now", "already finished", "failed"):
        table.add_column(column, justify="right")
    table.add_row(str(len(summary.finished)), str(len(summary.skipped)), str(len(summary.failed)))
    console.print(table)
    for cell, reason in summary.failed:
        console.print(f"[red]failed[/] {cell.name()}: {reason}")


@contextlib.contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """One sweep at a time per output folder; the OS drops the lock if the process dies."""
    with (root / ".sweep.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SweepSetupError(
                f"another scope-eval sweep is writing to {root}; wait for it to end or pass another --output"
            ) from None
        yield


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """A terminated sweep stops its lmms-eval child too, exactly as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _log_tail(log: Path, lines: int = 8) -> str:
    """The end of a failed launch's log: usually the traceback lmms-eval printed before exiting 0."""
    if not log.is_file():
        return f"(no log at {log})"
    tail = log.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in tail)


def _json_roundtrip(value: object) -> object:
    return json.loads(json.dumps(value, default=str))
