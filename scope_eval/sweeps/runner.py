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
exist, and an interrupted launch is simply redone. A cell folder that fails its checks anyway (damaged
by hand or by the disk, see integrity.py, or left without `cell.json`) is moved aside to a hidden
`.damaged-*` folder, kept for diagnosis, and its cell is run again.

Children. The lmms-eval child runs in its own process group (so stopping it stops its workers too) and
dies with the sweep, even on SIGKILL (Linux: PR_SET_PDEATHSIG). Its group id is written to the scratch
folder, so a re-run also stops a child left over from a killed sweep before it redoes that launch.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .cells import CELL_FILE, Cell, Launch, cell_dir, expand, fingerprint, include_path, plan_launches, samples_file, write_include_dir
from .config import SweepConfig, normalise_checkpoint
from .cost import cost_summary
from .integrity import read_cell, seal
from .outputs import TaskOutcome, read_task_outcomes, visual_token_summary
from ..provenance import provenance as environment_provenance

LOG_FILE = "lmms_eval.log"
FORMAT = "scope_eval.cell/1"
FAILURE_FILE = "failure.json"  # in a failed launch's scratch folder: which cells failed and why (read by `report`)
CHILD_FILE = "child.json"  # in a running launch's scratch folder: the lmms-eval child's process group


@dataclass
class SweepSummary:
    finished: list[Cell] = field(default_factory=list)  # finished by this run
    skipped: list[Cell] = field(default_factory=list)  # finished before, left untouched
    failed: list[tuple[Cell, str]] = field(default_factory=list)
    damaged: list[tuple[Cell, str]] = field(default_factory=list)  # finished before but damaged: run again

    @property
    def ok(self) -> bool:
        return not self.failed


class SweepSetupError(RuntimeError):
    """The sweep cannot start (output folder busy, local data incomplete); the message names the fix."""


def classify(
    config: SweepConfig, cells: Sequence[Cell]
) -> tuple[list[Cell], list[tuple[Cell, str]], list[Cell], list[tuple[Cell, str]]]:
    """Split cells into (finished, conflicting, to run, damaged). A finished cell made with other settings
    is a conflict: reusing it would mix numbers, overwriting it would destroy them. A damaged finished
    cell (integrity.py) is also to run: its folder is moved aside first."""
    done, conflicts, pending, damaged = [], [], [], []
    for cell in cells:
        record = cell_dir(config, cell) / CELL_FILE
        if not record.is_file():
            pending.append(cell)
            continue
        content, problem = read_cell(record)
        if problem is not None:
            damaged.append((cell, problem))
            pending.append(cell)
            continue
        stored = _normalised(content.get("fingerprint"))
        wanted = _normalised(fingerprint(config, cell))
        if stored == wanted:
            done.append(cell)
        else:
            changed = sorted(key for key in wanted if (stored or {}).get(key) != wanted[key])
            conflicts.append((cell, f"{record.parent} was produced with different {', '.join(changed)}; finished "
                              f"cells are never overwritten: use another --output, or remove that folder"))  # fmt: skip
    return done, conflicts, pending, damaged


def describe_plan(config: SweepConfig, evaluator: Sequence[str] | None = None) -> list[str]:
    """The dry run: what would be launched, as copy-pasteable shell lines. Raises SweepSetupError for
    what would stop the real run before its first launch (output folder, evaluator program)."""
    check_output(Path(config.output))
    check_evaluator(evaluator)
    cells = expand(config)
    done, conflicts, pending, damaged = classify(config, cells)
    launches = plan_launches(config, pending, evaluator)
    lines = [
        f"# {len(cells)} cells: {len(done)} finished, {len(conflicts)} in conflict, "
        f"{len(pending)} to run in {len(launches)} lmms-eval launch(es); output {config.output}"
    ]
    lines += [f"# conflict: {reason}" for _, reason in conflicts]
    lines += [f"# damaged, will be moved aside and run again: {reason}" for _, reason in damaged]
    for launch in launches:
        env = " ".join(f"{key}={value}" for key, value in launch.env.items())
        lines.append(f"# {', '.join(cell.name() for cell in launch.cells)}")
        lines.append((env + " " if env else "") + shlex.join(launch.command))
    return lines


def run_sweep(config: SweepConfig, evaluator: Sequence[str] | None = None, console: Console | None = None) -> SweepSummary:
    console = console or Console()
    check_evaluator(evaluator)
    root = Path(config.output)
    check_output(root)
    cells = expand(config)
    done, conflicts, pending, damaged = classify(config, cells)
    summary = SweepSummary(skipped=done, failed=list(conflicts), damaged=damaged)
    launches = plan_launches(config, pending, evaluator)
    console.print(
        f"{config.model.name}: {len(cells)} cells, {len(done)} already finished, "
        f"{len(pending)} to run in {len(launches)} launch(es) -> {config.output}"
    )
    for _, reason in damaged:
        console.print(f"[yellow]damaged[/] {reason}; moved aside and run again", markup=True, highlight=False)
    if not launches:
        return summary
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SweepSetupError(f"cannot create the output folder {root}: {error.strerror or error}; pass another --output") from None
    provenance = environment_provenance()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with _exclusive(root), _sigterm_as_interrupt(), Progress(*columns, console=console) as progress:
        if config.data_dir is not None:
            _write_local_tasks(config, {cell.task for cell in pending})
        if config.include_path is not None:
            write_include_dir(config)
        bar = progress.add_task("cells", total=len(pending))
        seconds_per_cell: list[float] = []
        for launch in launches:
            progress.update(bar, description=f"running {launch.cells[0].method.label} {launch.cells[0].budget_folder} "
                            f"({', '.join(launch.tasks)})")  # fmt: skip
            started = time.monotonic()
            try:
                _move_aside_unfinished(config, launch)
                results = run_launch(config, launch, provenance)
            except OSError as error:  # e.g. a full disk while writing the log: this launch fails, the next ones run
                reason = f"could not run the launch: {error.strerror or error}" + (f" ({error.filename})" if error.filename else "")
                results = [(cell, _failed_outcome(cell, reason)) for cell in launch.cells]
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
    stop_stale_child(work)  # a child of a killed sweep may still be writing here
    shutil.rmtree(work, ignore_errors=True)  # whatever an interrupted attempt left
    work.mkdir(parents=True)
    started = datetime.now(timezone.utc)
    with (work / LOG_FILE).open("w") as log:
        log.write("$ " + shlex.join(launch.command) + "\n")
        log.flush()
        try:
            process = subprocess.Popen(
                launch.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **launch.env},
                start_new_session=True,
                preexec_fn=_die_with_parent(os.getpid()),
            )
        except OSError as error:
            raise SweepSetupError(f"cannot start the evaluator {launch.command[0]}: {error.strerror or error}; "
                                  f"pass --evaluator '/path/to/python -m lmms_eval'") from None  # fmt: skip
        with contextlib.suppress(OSError):  # only a re-run after a SIGKILL needs it
            write_json_atomic(work / CHILD_FILE, {"pgid": process.pid, "command": list(launch.command)})
        try:
            exit_code = process.wait()
        except BaseException:
            _stop(process)
            raise
        (work / CHILD_FILE).unlink(missing_ok=True)
    finished = datetime.now(timezone.utc)
    timing = {
        "started": started.isoformat(),
        "finished": finished.isoformat(),
        "launch_seconds": (finished - started).total_seconds(),
        "launch_tasks": list(launch.tasks),
        "exit_code": exit_code,
    }
    user_tasks = (Path(config.include_path),) if config.include_path else ()
    outcomes = read_task_outcomes(work / "lmms", launch.tasks, exit_code, user_tasks)
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
    elif work.exists():
        _record_failures(work, results, config)
    return results


def check_output(root: Path) -> None:
    """The output folder must be (or become) a writable folder; checked before anything runs."""
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise SweepSetupError(f"output {root}: {existing} is a file, not a folder; pass another --output")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SweepSetupError(f"output {root}: {existing} is not writable; pass a writable --output")


def check_evaluator(evaluator: Sequence[str] | None) -> None:
    """A missing --evaluator program fails before any cell, naming it (not as a raw OS error per cell)."""
    if not evaluator:
        return
    program = evaluator[0]
    if shutil.which(program) is None:
        raise SweepSetupError(
            f"evaluator program {program!r} not found or not executable; pass --evaluator as an interpreter and what it "
            f"runs, e.g. '{sys.executable} -m lmms_eval'"
        )


def stop_stale_child(work: Path) -> None:
    """Stop the lmms-eval process group a killed sweep left running in this scratch folder (if it is still
    the same command: a process group id can be reused)."""
    try:
        child = json.loads((work / CHILD_FILE).read_text())
        pgid, command = int(child["pgid"]), list(child["command"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    try:
        leader = Path(f"/proc/{pgid}/cmdline").read_bytes().split(b"\0")[:-1]
    except OSError:
        leader = None
    if leader is not None and [part.decode(errors="replace") for part in leader] != command:
        return  # that id belongs to another program now
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pgid}").exists():
        time.sleep(0.05)


def _die_with_parent(parent: int):
    """preexec_fn: the child gets SIGKILL when the sweep dies, however it dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded here: the forked child should only call into it

    def arm() -> None:
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the sweep died before the line above
            os._exit(1)

    return arm


def _move_aside_unfinished(config: SweepConfig, launch: Launch) -> None:
    """A cell folder that exists although its cell is to run (damaged, or without cell.json) would block
    the finished folder's rename: keep it, hidden, beside the cell."""
    for cell in launch.cells:
        folder = cell_dir(config, cell)
        if folder.exists():
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
            os.replace(folder, folder.with_name(f".damaged-{folder.name}-{stamp}"))


def _failed_outcome(cell: Cell, reason: str) -> TaskOutcome:
    return TaskOutcome(cell.task, False, reason, {}, None, None)


def _record_failures(work: Path, results: list[tuple[Cell, TaskOutcome]], config: SweepConfig) -> None:
    failures = [
        {"cell": {"model": cell.model.name, "method_label": cell.method.label, "method": cell.method.name,
                  "budget": cell.table_budget, "task": cell.task, "limit": config.limit}, "reason": outcome.reason}
        for cell, outcome in results
        if not outcome.ok
    ]  # fmt: skip
    with contextlib.suppress(OSError):  # a full disk must not turn a failed cell into a crashed sweep
        write_json_atomic(work / FAILURE_FILE, {"failures": failures})


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
    results_file = str(outcome.results_file.relative_to(launch.work_dir)) if outcome.results_file else None
    if len(launch.cells) == 1:
        staging = launch.work_dir  # the whole scratch folder becomes the cell
    else:
        staging = launch.work_dir.parent / f".stage-{cell.task}"
        shutil.rmtree(staging, ignore_errors=True)
        _copy_task_files(launch.work_dir, staging, outcome)
    samples = None
    if outcome.samples_file is not None:  # lmms-eval's <checkpoint folder>/<timestamp>_samples_<task>.jsonl
        samples = samples_file(staging, cell.task)
        os.replace(staging / outcome.samples_file.relative_to(launch.work_dir), samples)
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
            "samples": samples.name if samples is not None else None,
            "results": results_file,
        },
    }
    write_json_atomic(staging / CELL_FILE, seal(record, staging, results_file))
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
    for cell, reason in summary.damaged:
        console.print(f"[yellow]damaged, run again[/] {cell.name()}: {reason}", highlight=False)
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
    """Stop the child and everything it started (its own process group)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _log_tail(log: Path, lines: int = 8) -> str:
    """The end of a failed launch's log: usually the traceback lmms-eval printed before exiting 0."""
    if not log.is_file():
        return f"(no log at {log})"
    tail = log.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in tail)


def _json_roundtrip(value: object) -> object:
    return json.loads(json.dumps(value, default=str))


def _normalised(fingerprint_value: object) -> object:
    """A fingerprint as JSON, its checkpoint path canonical: `ckpt/`, `ckpt` and a symlink to it are one model."""
    value = _json_roundtrip(fingerprint_value)
    args = value.get("model_args") if isinstance(value, dict) else None
    if isinstance(args, dict) and isinstance(args.get("pretrained"), str):
        args["pretrained"] = normalise_checkpoint(args["pretrained"])
    return value
