"""Runs a sweep: every unfinished cell through lmms-eval, resumable, never overwriting a finished cell.

Two routes (the config's `isolation`); both write the same cell folders, judged and sealed the same way.

- `worker` (default). One worker process (scope_eval/sweeps/worker.py) loads the model once and, for each
  unfinished cell in turn, prunes the loaded instance with the cell's plan, runs lmms-eval's own evaluator
  in-process, removes the pruning and checks that the model is back in its unpruned state; the runner
  seals each cell as soon as the worker reports it ended. On the toy a cell spends well under a second
  evaluating and about 8-20 s starting a process (lmms-eval import, task index, model load): the start is
  now paid once per sweep, not once per cell (or per group). Per-sample answers, scores and realised token
  counts are identical to the process route (tests/test_sweep_worker.py). Isolation is kept where it
  matters: an exception fails only its cell (the worker goes on); a worker that dies (OOM-kill, SIGKILL,
  segfault) loses no finished cell: a fresh worker starts at the cell it was on, and a cell that kills
  two workers fails, with its log, and the rest go on. A failed restore check stops the worker; a fresh
  one continues with the next cell. `group_tasks` does not apply: every cell is evaluated and timed alone.
- `process`. Each cell is its own `python -m lmms_eval` launch (`group_tasks: true`: one launch per
  (method, budget) for all its tasks). For a method whose state cannot be restored in place; `--evaluator`
  (another interpreter or program standing in for lmms-eval) always takes this route.

Several processes (`num_processes` > 1, GPUs): two ways, the config's `parallel`.
- `documents` (the default). Data parallel per cell: `accelerate launch` starts N ranks, each rank of the
  worker loads the model once, and every cell is split over all ranks by lmms-eval (its own sharding,
  gathering and padding: the code path the plugin's 1-process == 2-process test covers). Right for a paper
  sweep: few, long cells (a full benchmark per cell, e.g. 16 cells for configs/llava15_7b_table1.yaml,
  lengths varying 10x between tasks) keep every GPU busy on every cell, and each cell ends (and is sealed)
  as soon as possible. With several ranks any error in a cell ends the worker (the other ranks would wait
  for the failed one), so it counts as a worker death of that cell.
- `cells`. N independent one-process workers ("lanes", CUDA_VISIBLE_DEVICES one GPU each), fed whole cells
  one at a time from one queue over their stdin. Right for many short cells (the toy sweeps: hundreds of
  cells of 12-60 documents): a data-parallel cell pays lmms-eval's fixed per-evaluation work on every
  rank and waits at its end for the slowest rank, a whole cell pays it once and waits for nobody, and no
  process group or accelerate launcher is started. Each cell is evaluated exactly as by a one-process
  worker, so its numbers are those of `num_processes: 1`; an error fails only its cell, a crash only the
  cell its worker was on (retried once by a fresh worker, as above). The end of the queue leaves lanes
  idle for at most one cell.
`num_processes` and `parallel` never change a cell's numbers (they are not in its fingerprint): a sweep
interrupted under one may be resumed under the other.

Several sweeps in one command (`scope-eval sweep A.yaml B.yaml`, `scope-eval regress`). With `parallel:
cells` the lanes outlive a sweep (WorkerLanes): at its end each idle worker stays, and the next sweep hands
it its job over stdin; the worker drops its model and the next cell loads the new one, exactly as a fresh
worker's first cell would (tests/test_sweep_worker.py runs a sweep on workers a toy Qwen2-VL sweep used
first: same numbers). What is saved is the process start, mostly imports (about 6 s of CPU per worker on
the toy; the three sweeps of `make demo` start two workers instead of six).

Atomicity. A cell (or a process launch) writes into a scratch folder `.tmp-*` next to its cells, wiped
before every start. A cell becomes finished in one step: its folder, complete with `cell.json`, is renamed
into place (`os.replace` of a directory). So after a crash, a cell folder either holds everything or does
not exist, and an interrupted cell is simply redone. A cell folder that fails its checks anyway (damaged by
hand or by the disk, see integrity.py, or left without `cell.json`) is moved aside to a hidden
`.damaged-*` folder, kept for diagnosis, and its cell is run again.

Children. The lmms-eval child or the worker runs in its own process group (so stopping it stops its ranks
too) and dies with the sweep, even on SIGKILL (Linux: PR_SET_PDEATHSIG). Its group id is written to its
scratch folder (`.worker/` beside the method folders for the worker), so a re-run also stops a child left
over from a killed sweep before it redoes that work.

Feedback. A bar over cells and one over the running cell's documents (the worker reports each answered
document; ETA from the rate so far), each cell's log path when it starts (never wrapped: it must stay
pasteable), each cell's own time when it ends (the process route with `group_tasks` can only give the
launch's time, said so). `scope-eval sweep` then prints a score table and the report command (scores.py).
"""

from __future__ import annotations

import collections
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
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .cells import (
    CELL_FILE, Cell, Launch, cell_dir, child_env, expand, fingerprint, include_path, model_folder, plan_launches,
    samples_file, write_include_dir, accelerate_launch,
)
from .config import SweepConfig, normalise_checkpoint, own_task_dirs
from .cost import cost_summary
from .integrity import read_cell, seal
from .outputs import TaskOutcome, read_task_outcomes, visual_token_summary
from ..provenance import provenance as environment_provenance

LOG_FILE = "lmms_eval.log"
FORMAT = "scope_eval.cell/1"
FAILURE_FILE = "failure.json"  # in a failed launch's scratch folder: which cells failed and why (read by `report`)
CHILD_FILE = "child.json"  # in a running launch's scratch folder: the lmms-eval child's process group
WORKER_DIR = ".worker"  # beside the method folders: the running worker's job, events, own log and child.json
JOB_FILE = "job.json"
TASK_INDEX_DIR = ".task_index"  # in the output folder: lmms-eval's task index, shared by its sweeps' workers
EVENTS_FILE = "events.jsonl"
WORKER_LOG = "worker.log"  # what the worker writes outside its cells (each cell has its own log)
WORKER_DEATHS_PER_CELL = 2  # a cell that kills this many workers fails


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
    isolation = _isolation(config, evaluator)
    launches = plan_launches(config if isolation == "process" else one_cell_per_launch(config), pending, evaluator)
    lines = [
        f"# {len(cells)} cells: {len(done)} finished, {len(conflicts)} in conflict, "
        f"{len(pending)} to run {_how(config, isolation, launches)}; output {config.output}"
    ]
    if isolation == "worker" and launches:
        worker = shlex.join(worker_command(config, Path("JOB.json")))
        if _lane_count(config, launches) > 1:
            lines.append(f"# {_lane_count(config, launches)} workers ({worker}, one GPU each, cell indices fed on stdin) "
                         "share the commands below, each evaluating whole cells in-process on its one model load")  # fmt: skip
        else:
            lines.append(f"# one worker ({worker}) evaluates in-process, on one model load, what each command below would")
    lines += [f"# conflict: {reason}" for _, reason in conflicts]
    lines += [f"# damaged, will be moved aside and run again: {reason}" for _, reason in damaged]
    for launch in launches:
        env = " ".join(f"{key}={value}" for key, value in launch.env.items())
        lines.append(f"# {', '.join(cell.name() for cell in launch.cells)}")
        lines.append((env + " " if env else "") + shlex.join(launch.command))
    return lines


def run_sweep(
    config: SweepConfig,
    evaluator: Sequence[str] | None = None,
    console: Console | None = None,
    lanes: WorkerLanes | None = None,
) -> SweepSummary:
    """Run every unfinished cell. `evaluator` (a program replacing `python -m lmms_eval`) runs the process
    route whatever the config's isolation: the worker route runs lmms-eval inside this package's worker.
    `lanes`: the workers of `parallel: cells`, kept alive across the sweeps of one command (WorkerLanes);
    by default this sweep's own, ended with it."""
    console = console or Console()
    check_evaluator(evaluator)
    root = Path(config.output)
    check_output(root)
    cells = expand(config)
    done, conflicts, pending, damaged = classify(config, cells)
    summary = SweepSummary(skipped=done, failed=list(conflicts), damaged=damaged)
    isolation = _isolation(config, evaluator)
    launches = plan_launches(config if isolation == "process" else one_cell_per_launch(config), pending, evaluator)
    console.print(
        f"{config.model.name}: {len(cells)} cells, {len(done)} already finished, {len(pending)} to run "
        f"{_how(config, isolation, launches)} -> {config.output}",
        soft_wrap=True,
    )
    for _, reason in damaged:
        console.print(f"[yellow]damaged[/] {reason}; moved aside and run again", markup=True, highlight=False, soft_wrap=True)
    if not launches:
        return summary
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SweepSetupError(f"cannot create the output folder {root}: {error.strerror or error}; pass another --output") from None
    provenance = environment_provenance()
    with _exclusive(root), _sigterm_as_interrupt(), _progress(console) as progress:
        if config.data_dir is not None:
            _write_local_tasks(config, {cell.task for cell in pending})
        if config.include_path is not None:
            write_include_dir(config)
        feedback = _Feedback(progress, len(pending), summary)
        if isolation == "process":
            if lanes is not None:
                lanes.take(0)  # an earlier sweep's idle workers would hold their models' memory meanwhile
            _run_processes(config, launches, provenance, feedback)
        else:
            if lanes is None:
                with WorkerLanes() as own:
                    _run_workers(config, launches, provenance, feedback, own)
            else:
                _run_workers(config, launches, provenance, feedback, lanes)
    return summary


def _isolation(config: SweepConfig, evaluator: Sequence[str] | None) -> str:
    return "process" if evaluator else config.isolation


def _how(config: SweepConfig, isolation: str, launches: list[Launch]) -> str:
    if isolation == "process":
        return f"in {len(launches)} lmms-eval launch(es)"
    if _lane_count(config, launches) > 1:
        return f"in {_lane_count(config, launches)} worker processes sharing the cells (one model load each)"
    return "in one worker process (one model load)"


def _lane_count(config: SweepConfig, launches: list[Launch]) -> int:
    """Workers of `parallel: cells` (1 otherwise): one per process, no more than there are cells."""
    return min(config.num_processes, len(launches)) if config.parallel == "cells" else 1


def _progress(console: Console) -> Progress:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    return Progress(*columns, console=console)


class _Feedback:
    """What a running sweep shows: a bar over cells, a bar over the running cell's documents (with ETA),
    the log of each cell as it starts, each cell's own time as it ends."""

    def __init__(self, progress: Progress, cells: int, summary: SweepSummary):
        self.progress = progress
        self.summary = summary
        self.cells = progress.add_task("cells", total=cells)
        self.documents = {0: progress.add_task("documents", total=None, visible=False)}  # one bar per worker lane
        self.seconds: list[float] = []

    def print(self, text: str, **options: object) -> None:
        self.progress.console.print(text, soft_wrap=True, **options)  # never wrap a path: it must stay pasteable

    def starting(self, what: str, log: Path, lane: int = 0) -> None:
        self.progress.update(self.cells, description=f"running {what}")
        self.progress.reset(self._documents(lane), total=None, visible=False)
        self.print(f"[cyan]start[/]  {what}  log: {log}", highlight=False)

    def answered(self, done: int, total: int, lane: int = 0) -> None:
        what = "documents of this cell" if lane == 0 and len(self.documents) == 1 else f"documents, worker {lane + 1}"
        self.progress.update(self._documents(lane), completed=done, total=total, visible=True, description=what)

    def _documents(self, lane: int):
        if lane not in self.documents:
            self.documents[lane] = self.progress.add_task("documents", total=None, visible=False)
        return self.documents[lane]

    def finished(self, cell: Cell, outcome: TaskOutcome, seconds: float | None, log: Path, shared: int = 1) -> None:
        """`shared`: cells of one process launch (group_tasks), whose time cannot be told apart."""
        took = "" if seconds is None else f"  {seconds:.1f} s" + (f" (one launch of {shared} tasks)" if shared > 1 else "")
        if outcome.ok:
            self.summary.finished.append(cell)
            self.print(f"[green]done[/]   {cell.name()}{took}", highlight=False)
        else:
            self.summary.failed.append((cell, f"{outcome.reason}; log: {log}"))
            self.print(f"[red]failed[/] {cell.name()}{took}: {outcome.reason}", highlight=False)
            self.print(_log_tail(log), style="dim", markup=False, highlight=False)
        if seconds is not None:
            self.seconds.append(seconds / shared)
        self.progress.advance(self.cells, 1)
        cells = next(task for task in self.progress.tasks if task.id == self.cells)
        left = (cells.total or 0) - cells.completed
        mean = f", {sum(self.seconds) / len(self.seconds):.1f} s per cell" if self.seconds else ""
        self.progress.update(self.cells, description=f"cells ({left:.0f} left{mean})")


def _run_processes(config: SweepConfig, launches: list[Launch], provenance: dict, feedback: _Feedback) -> None:
    for launch in launches:
        first = launch.cells[0]
        feedback.starting(f"{first.method.label} {first.budget_folder} ({', '.join(launch.tasks)})", launch.work_dir / LOG_FILE)
        started = time.monotonic()
        try:
            _move_aside_unfinished(config, launch)
            results = run_launch(config, launch, provenance)
        except OSError as error:  # e.g. a full disk while writing the log: this launch fails, the next ones run
            reason = f"could not run the launch: {error.strerror or error}" + (f" ({error.filename})" if error.filename else "")
            results = [(cell, _failed_outcome(cell, reason)) for cell in launch.cells]
        seconds = time.monotonic() - started
        for cell, outcome in results:
            feedback.finished(cell, outcome, seconds, launch.work_dir / LOG_FILE, shared=len(launch.cells))


def one_cell_per_launch(config: SweepConfig) -> SweepConfig:
    """The worker evaluates and times each cell on its own: group_tasks only groups process launches. With
    `parallel: cells` each cell is a one-process evaluation (what its equivalent command then says)."""
    return dataclasses.replace(config, group_tasks=False, num_processes=1 if config.parallel == "cells" else config.num_processes)


def _run_workers(config: SweepConfig, launches: list[Launch], provenance: dict, feedback: _Feedback, lanes: WorkerLanes) -> None:
    """The worker route: see the module docstring. A worker that dies (crash, OOM-kill, SIGKILL) fails no
    finished cell; the cell it was on is tried once more in a fresh worker and fails on the second death."""
    for folder in (Path(config.output) / model_folder(config)).glob(WORKER_DIR + "*"):  # every lane of an earlier run
        stop_stale_child(folder)
    if _lane_count(config, launches) > 1:
        _run_worker_lanes(config, launches, provenance, feedback, lanes.take(_lane_count(config, launches)))
        return
    lanes.take(0)  # an earlier sweep's idle workers would hold their models' memory meanwhile
    scratch = Path(config.output) / model_folder(config) / WORKER_DIR
    remaining = list(launches)
    deaths: dict[Path, int] = {}  # by the cell's scratch folder (unique per cell)
    while remaining:
        for launch in remaining:
            _move_aside_unfinished(config, launch)
        ended, crashed = _run_worker(config, remaining, scratch, provenance, feedback)
        if crashed is not None:
            launch, reason = crashed
            if _worker_death(launch, reason, deaths, config, feedback, "restarting it there"):
                ended.add(launch.work_dir)
        elif not ended:
            reason = f"the sweep worker ended before its first cell; log: {scratch / WORKER_LOG}"
            for launch in remaining:
                feedback.finished(launch.cells[0], _failed_outcome(launch.cells[0], reason), None, scratch / WORKER_LOG)
            return
        remaining = [launch for launch in remaining if launch.work_dir not in ended]


def _run_worker(
    config: SweepConfig, launches: list[Launch], scratch: Path, provenance: dict, feedback: _Feedback
) -> tuple[set[Path], tuple[Launch, str] | None]:
    """One worker process over `launches` (one cell each), until it ends. Returns the scratch folders of the
    cells it ended (finished or failed) and, if it died inside a cell, that cell's launch and how it died."""
    _fresh_folder(scratch)
    for launch in launches:
        _clear_cell_scratch(launch)
    command = worker_command(config, write_worker_job(launches, scratch, Path(config.output).resolve() / TASK_INDEX_DIR))
    watch = _WorkerEvents(config, launches, provenance, feedback, command)
    with (scratch / WORKER_LOG).open("w") as log:
        process = _start_worker(config, scratch, command, log)
        with _EventReader(scratch / EVENTS_FILE) as reader:
            try:
                while process.poll() is None:
                    watch.handle(reader.new())
                    time.sleep(0.1)
            except BaseException:  # interrupted: stop the worker, but keep every cell it had ended
                _stop(process)
                watch.handle(reader.new(), ends_only=True)
                raise
            watch.handle(reader.new())  # what it wrote before it exited
        (scratch / CHILD_FILE).unlink(missing_ok=True)
    if watch.running is not None:
        return watch.ended, (watch.running[0], _death_reason(process.returncode, scratch))
    return watch.ended, None


def _fresh_folder(scratch: Path) -> None:
    """A worker's scratch folder, emptied (its earlier worker, if one survived a killed sweep, stopped)."""
    stop_stale_child(scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)


def _clear_cell_scratch(launch: Launch) -> None:
    stop_stale_child(launch.work_dir)  # a process-route child of an earlier run may still write there
    shutil.rmtree(launch.work_dir, ignore_errors=True)


def _start_worker(config: SweepConfig, scratch: Path, command: list[str], log, stdin=None, device: str | None = None) -> subprocess.Popen:
    """Start a sweep worker writing to `log`, in its own process group (dying with the sweep), that group
    recorded in `scratch` for `stop_stale_child`. `device`: its only visible GPU (parallel: cells)."""
    log.write("$ " + shlex.join(command) + "\n")
    log.flush()
    env = {**os.environ, **child_env(config), **({"CUDA_VISIBLE_DEVICES": device} if device is not None else {})}
    try:
        process = subprocess.Popen(command, stdin=stdin, stdout=log, stderr=subprocess.STDOUT, env=env, text=True,
                                   start_new_session=True, preexec_fn=_die_with_parent(os.getpid()))  # fmt: skip
    except OSError as error:
        raise SweepSetupError(f"cannot start the sweep worker {command[0]}: {error.strerror or error}") from None
    _record_child(scratch, process, command)
    return process


def _record_child(scratch: Path, process: subprocess.Popen, command: list[str]) -> None:
    """The worker's process group, in `scratch`, for `stop_stale_child` of a later run."""
    with contextlib.suppress(OSError):
        write_json_atomic(scratch / CHILD_FILE, {"pgid": process.pid, "command": command})


def _death_reason(code: int, scratch: Path) -> str:
    how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
    return f"the sweep worker {how} during this cell (worker log: {scratch / WORKER_LOG})"


def _run_worker_lanes(config: SweepConfig, launches: list[Launch], provenance: dict, feedback: _Feedback, lanes: list[_Lane]) -> None:
    """`parallel: cells`: independent one-process workers ("lanes", one GPU each), fed one cell at a time
    from one queue, so that a lane that finishes early takes the next cell (no end-of-sweep imbalance
    beyond one cell). Each cell is evaluated exactly as by a one-process worker. Deaths as in `_run_workers`:
    the cell a dying worker was on goes back to the front of the queue and fails on its second death; a
    cell fed to a worker that exited before starting it goes back without counting. The workers still
    alive at the end stay idle, for the command's next sweep (WorkerLanes)."""
    root = Path(config.output) / model_folder(config)
    devices = _lane_devices(config, len(lanes))
    for lane in lanes:
        lane.join(root / _lane_folder(lane.number), devices[lane.number], config, launches, provenance, feedback)
    queue = collections.deque(range(len(launches)))
    deaths: dict[Path, int] = {}
    try:
        while queue or any(lane.assigned is not None for lane in lanes):
            for lane in lanes:
                if lane.process is None:
                    if not queue or lane.retired:
                        continue
                    lane.start()
                    lane.feed(queue.popleft())  # at once: a worker that dies unfed would look like a clean end
                lane.read_events()
                if lane.process.poll() is not None:
                    lane.read_events()  # what it wrote before it exited
                    _lane_ended(lane, queue, deaths, launches, config, feedback)
                elif lane.assigned is None and queue:
                    lane.feed(queue.popleft())
            time.sleep(0.02)  # a fed cell waits at most this long for its worker
    except BaseException:  # interrupted: stop every worker, but keep every cell they had ended
        for lane in lanes:
            lane.stop()
        raise
    for lane in lanes:
        lane.leave()


class WorkerLanes:
    """The lanes (workers) of `parallel: cells`, kept across the sweeps of one command (`scope-eval sweep
    A.yaml B.yaml`, `scope-eval regress`): a live, idle worker is handed the next sweep's job over its
    stdin (`job PATH`; it drops its model, and its next cell loads the new one, as in a fresh worker), so
    each lane pays the process start-up (imports) once per command instead of once per sweep. A worker
    whose environment would differ (offline, cpu_threads, its GPU) is ended and a fresh one started.
    Closing ends every worker: stdin closed, then each exits after its (already ended) last cell."""

    def __init__(self) -> None:
        self.lanes: list[_Lane] = []

    def __enter__(self) -> WorkerLanes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def take(self, count: int) -> list[_Lane]:
        """The first `count` lanes (created as needed); any further ones are ended."""
        for lane in self.lanes[count:]:
            lane.end()
        self.lanes = self.lanes[:count] + [_Lane(number) for number in range(len(self.lanes), count)]
        return self.lanes

    def close(self) -> None:
        self.take(0)


def _lane_ended(lane: _Lane, queue: collections.deque, deaths: dict[Path, int], launches: list[Launch], config: SweepConfig, feedback: _Feedback) -> None:
    """A lane's worker exited: put back, or fail, the cell it held."""
    index, started_any, code = lane.assigned, lane.started_any, lane.finish()
    if index is None:
        return
    launch = launches[index]
    if not started_any:  # died before its first cell (import error, bad job): every lane would, so nothing more runs
        reason = f"the sweep worker ended before its first cell (exit code {code}); log: {lane.scratch / WORKER_LOG}"
        for left in [index, *queue]:
            feedback.finished(launches[left].cells[0], _failed_outcome(launches[left].cells[0], reason), None, lane.scratch / WORKER_LOG)
        queue.clear()
        lane.retired = True
        return
    if not lane.was_running(index):  # fed, never started (it stopped after its previous cell): just hand it on
        queue.appendleft(index)
        return
    if not _worker_death(launch, _death_reason(code, lane.scratch), deaths, config, feedback, "a fresh worker takes it again"):
        queue.appendleft(index)


def _worker_death(launch: Launch, reason: str, deaths: dict[Path, int], config: SweepConfig, feedback: _Feedback, retry: str) -> bool:
    """Count a worker's death inside this cell (noted in its log); True when that fails the cell for good."""
    deaths[launch.work_dir] = deaths.get(launch.work_dir, 0) + 1
    _append(launch.work_dir / LOG_FILE, f"\n[scope-eval sweep] {reason} (death {deaths[launch.work_dir]} of this cell)\n")
    if deaths[launch.work_dir] < WORKER_DEATHS_PER_CELL:
        feedback.print(f"[yellow]worker died[/] on {launch.cells[0].name()}: {reason}; {retry}", highlight=False)
        return False
    feedback.print(f"[red]worker died twice on {launch.cells[0].name()}[/]: failing it, the next cells go on", highlight=False)
    outcome = _failed_outcome(launch.cells[0], f"{reason}, twice")
    _record_failures(launch.work_dir, [(launch.cells[0], outcome)], config)
    feedback.finished(launch.cells[0], outcome, None, launch.work_dir / LOG_FILE)
    return True


def _lane_folder(number: int) -> str:
    return WORKER_DIR if number == 0 else f"{WORKER_DIR}-{number}"


def _lane_devices(config: SweepConfig, count: int) -> list[str | None]:
    """The GPU each lane sees as its only one (CUDA_VISIBLE_DEVICES): the i-th of the sweep's own visible
    devices, or GPU i. None (the environment as it is) for a model on the CPU."""
    if str(config.model.model_args.get("device", "cuda")).startswith("cpu"):
        return [None] * count
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = [d.strip() for d in visible.split(",") if d.strip()] if visible is not None else [str(i) for i in range(count)]
    if len(devices) < count:
        raise SweepSetupError(f"parallel: cells with {count} processes needs {count} GPUs, but CUDA_VISIBLE_DEVICES={visible!r} "
                              f"lists {len(devices)}; lower --num-processes or list more devices")  # fmt: skip
    return devices[:count]


class _Lane:
    """One worker of `parallel: cells`: started with every cell of its sweep's job, evaluating those written
    to its stdin, then (WorkerLanes) perhaps the next sweep's. `assigned`: the index of the cell it was last
    given and has not ended."""

    def __init__(self, number: int):
        self.number = number
        self.scratch: Path | None = None
        self.device: str | None = None
        self.env: dict[str, str] | None = None  # what its worker was started with
        self.config: SweepConfig | None = None
        self.launches: list[Launch] = []
        self.provenance: dict = {}
        self.feedback: _Feedback | None = None
        self._command: list[str] = []  # the one its running worker was started with
        self.process: subprocess.Popen | None = None
        self.assigned: int | None = None
        self.started_any = False  # whether the current worker has started any cell
        self.retired = False
        self._watch: _WorkerEvents | None = None
        self._reader: _EventReader | None = None
        self._log = None

    def join(self, scratch: Path, device: str | None, config: SweepConfig, launches: list[Launch], provenance: dict, feedback: _Feedback) -> None:
        """Work for this sweep from now on. A live worker started with the same environment is handed this
        sweep's job; one started otherwise is ended (a fresh one starts with the first cell)."""
        if self.process is not None and self.process.poll() is None and (self.env, self.device) == (child_env(config), device):
            switching = True
        else:
            self.end()
            switching = False
        self.scratch, self.device, self.config, self.launches = scratch, device, config, launches
        self.provenance, self.feedback = provenance, feedback
        self.retired = False
        if switching:
            self._reader.__exit__()
            _fresh_folder(scratch)
            job = self._write_job(worker_log=scratch / WORKER_LOG)
            self._watch_events([*self._command[:-1], str(job)])  # the command that would start a worker on this job
            _record_child(scratch, self.process, self._command)
            self._send(f"job {job}")

    def _watch_events(self, command: list[str]) -> None:
        """Read this sweep's events of the lane's worker from now on (`command`: recorded in each cell's timing)."""
        self._watch = _WorkerEvents(self.config, self.launches, self.provenance, self.feedback, command, lane=self.number)
        self._reader = _EventReader(self.scratch / EVENTS_FILE)

    def _write_job(self, worker_log: Path | None = None) -> Path:
        return write_worker_job(self.launches, self.scratch, Path(self.config.output).resolve() / TASK_INDEX_DIR, feed=True,
                                worker_log=worker_log)  # fmt: skip

    def start(self) -> None:
        _fresh_folder(self.scratch)
        self._command = worker_command(self.config, self._write_job())
        self._watch_events(self._command)
        self._log = (self.scratch / WORKER_LOG).open("w")
        self.env = child_env(self.config)
        self.process = _start_worker(self.config, self.scratch, self._command, self._log, stdin=subprocess.PIPE, device=self.device)
        self.started_any = False

    def feed(self, index: int) -> None:
        launch = self.launches[index]
        _clear_cell_scratch(launch)
        _move_aside_unfinished(self.config, launch)
        self.assigned = index
        self._send(str(index))

    def _send(self, line: str) -> None:
        with contextlib.suppress(OSError):  # a worker that died meanwhile: seen at the next poll
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()

    def close_input(self) -> None:
        """No cell left for it: it ends after the one it is on."""
        if not self.process.stdin.closed:
            with contextlib.suppress(OSError):
                self.process.stdin.close()

    def read_events(self, ends_only: bool = False) -> None:
        self._watch.handle(self._reader.new(), ends_only=ends_only)
        if self._watch.running is not None:
            self.started_any = True
        if self.assigned is not None and self.launches[self.assigned].work_dir in self._watch.ended:
            self.started_any = True
            self.assigned = None

    def was_running(self, index: int) -> bool:
        return self._watch is not None and self._watch.running is not None and self._watch.running[0] is self.launches[index]

    def finish(self) -> int:
        """Close the exited worker's files; its exit code. `assigned` is cleared (the caller decides its fate)."""
        code = self.process.returncode
        with contextlib.suppress(OSError):
            self.close_input()
        self._reader.__exit__()
        self._log.close()
        (self.scratch / CHILD_FILE).unlink(missing_ok=True)
        self.process, self.assigned = None, None
        return code

    def leave(self) -> None:
        """This sweep is done: an idle worker is left running for the next one (WorkerLanes); the record a
        re-run uses to stop a leftover worker goes, so that the next sweep of this folder keeps it."""
        if self.process is not None:
            (self.scratch / CHILD_FILE).unlink(missing_ok=True)

    def end(self) -> None:
        """End an idle worker: its stdin closed, it exits (stopped if it does not within a minute)."""
        if self.process is None:
            return
        self.close_input()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            _stop(self.process)
        self.finish()

    def stop(self) -> None:
        if self.process is None:
            return
        _stop(self.process)
        self.read_events(ends_only=True)
        self.finish()


class _WorkerEvents:
    """The runner's side of the worker's events: feedback as they come, each cell sealed as soon as it ended."""

    def __init__(self, config: SweepConfig, launches: list[Launch], provenance: dict, feedback: _Feedback, command: list[str], lane: int = 0):
        self.config, self.launches, self.provenance, self.feedback, self.command = config, launches, provenance, feedback, command
        self.lane = lane
        self.ended: set[Path] = set()  # scratch folders of the cells ended (finished or failed)
        self.running: tuple[Launch, float] | None = None  # the cell started and not ended, and when it started
        self.loaded_seconds: float | None = None

    def handle(self, events: list[dict], ends_only: bool = False) -> None:
        for event in events:
            kind, index = event.get("event"), event.get("cell")
            launch = self.launches[index] if isinstance(index, int) and 0 <= index < len(self.launches) else None
            if kind == "end" and launch is not None:
                timing = _worker_timing(self.running[1] if self.running else None, event, self.loaded_seconds, self.command)
                outcome = _collect(self.config, launch, self.provenance, timing, event.get("error"))
                self.ended.add(launch.work_dir)
                self.running = None
                self.feedback.finished(launch.cells[0], outcome, float(event["seconds"]), launch.work_dir / LOG_FILE)
            elif ends_only:
                continue
            elif kind == "loaded":
                self.loaded_seconds = float(event["seconds"])
                self.feedback.print(f"model loaded once in {self.loaded_seconds:.1f} s; cells now run on it", highlight=False)
            elif kind == "start" and launch is not None:
                self.running = (launch, float(event["time"]))
                self.feedback.starting(launch.cells[0].name(), launch.work_dir / LOG_FILE, lane=self.lane)
            elif kind == "documents":
                self.feedback.answered(int(event["done"]), int(event["total"]), lane=self.lane)
            elif kind == "restore_failed":
                self.feedback.print(f"[red]restore check failed[/] after {launch.cells[0].name() if launch else '?'}: "
                                    f"{'; '.join(event.get('detail') or [])}; starting a fresh worker")  # fmt: skip


def write_worker_job(
    launches: Sequence[Launch], scratch: Path, task_index_cache: Path | None = None, feed: bool = False, worker_log: Path | None = None
) -> Path:
    """The job file of a worker over `launches` (one cell each): per cell the lmms-eval arguments of its
    process-route command, its scratch folder and its log; events go to EVENTS_FILE beside it. The worker
    keeps lmms-eval's task index in `task_index_cache` (scope_eval.lmms.task_index) when given. `feed`: it
    evaluates only the cells whose index it reads on stdin (`parallel: cells`), else all, in order.
    `worker_log`: where a worker handed this job by a `job PATH` line writes its own output from then on."""
    job = {
        "events": str(scratch / EVENTS_FILE),
        "feed": feed,
        "worker_log": str(worker_log) if worker_log is not None else None,
        "task_index_cache": str(task_index_cache) if task_index_cache is not None else None,
        "cells": [
            {"argv": _lmms_eval_arguments(launch.command), "work_dir": str(launch.work_dir), "log": str(launch.work_dir / LOG_FILE)}
            for launch in launches
        ],
    }
    write_json_atomic(scratch / JOB_FILE, job)
    return scratch / JOB_FILE


def worker_command(config: SweepConfig, job: Path) -> list[str]:
    """`python -m scope_eval.sweeps.worker JOB`; with several processes and `parallel: documents` under
    `accelerate launch`, every rank loading the model once and evaluating its shard of every cell (data
    parallel, see the module docstring); with `parallel: cells` each worker is one such plain process."""
    if config.num_processes > 1 and config.parallel == "documents":
        return [*accelerate_launch(sys.executable, config.num_processes), "-m", "scope_eval.sweeps.worker", str(job)]
    return [sys.executable, "-m", "scope_eval.sweeps.worker", str(job)]


def _lmms_eval_arguments(command: Sequence[str]) -> list[str]:
    """The lmms-eval arguments of a process-route command (what follows `python -m lmms_eval`)."""
    return list(command[list(command).index("--model"):])


def _worker_timing(started: float | None, event: dict, loaded_seconds: float | None, command: list[str]) -> dict:
    finished = float(event["time"])
    return {
        "started": datetime.fromtimestamp(started if started is not None else finished, timezone.utc).isoformat(),
        "finished": datetime.fromtimestamp(finished, timezone.utc).isoformat(),
        "cell_seconds": float(event["seconds"]),  # this cell alone, from its pruning to its restore
        "isolation": "worker",
        "worker_load_seconds": loaded_seconds,  # the one model load of the worker that ran it (shared)
        "worker_command": command,
    }


class _EventReader:
    """Reads the worker's events file as it grows (whole lines only)."""

    def __init__(self, path: Path):
        self.path = path
        self.handle = None
        self.partial = ""

    def __enter__(self) -> _EventReader:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()

    def new(self) -> list[dict]:
        if self.handle is None:
            if not self.path.exists():
                return []
            self.handle = self.path.open()
        text = self.partial + self.handle.read()
        lines = text.split("\n")
        self.partial = lines.pop()
        events = []
        for line in lines:
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
        return events


def _append(path: Path, text: str) -> None:
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            handle.write(text)


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
        "launch_seconds": (finished - started).total_seconds(),  # the whole launch: shared by its tasks
        "launch_tasks": list(launch.tasks),
        "isolation": "process",
        "exit_code": exit_code,
    }
    outcomes = read_task_outcomes(work / "lmms", launch.tasks, exit_code, own_task_dirs(config))
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


def _collect(config: SweepConfig, launch: Launch, provenance: dict, timing: dict, error: str | None) -> TaskOutcome:
    """A worker's cell: judged by its results json as after a process launch, then sealed into place."""
    (cell,) = launch.cells
    try:
        (outcome,) = read_task_outcomes(launch.work_dir / "lmms", launch.tasks, 0, own_task_dirs(config))
        if error is not None:
            outcome = dataclasses.replace(outcome, ok=False, reason=f"evaluation failed: {error}")
        elif not outcome.ok and "wrote no results json" in outcome.reason:
            outcome = dataclasses.replace(outcome, reason="lmms-eval wrote no results json")
        if outcome.ok:
            try:
                _finish_cell(config, launch, cell, outcome, timing, provenance)
            except OSError as store_error:
                outcome = dataclasses.replace(outcome, ok=False, reason=f"could not store the cell: {store_error}")
        if not outcome.ok:
            _record_failures(launch.work_dir, [(cell, outcome)], config)
    except OSError as os_error:
        outcome = _failed_outcome(cell, f"could not read the cell's results: {os_error.strerror or os_error}")
    return outcome


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
            "pretrained": config.as_written(cell.model.pretrained),  # as the config wrote it, not this machine's path
            "method": cell.method.name,
            "method_label": cell.method.label,
            "options": config.as_written(dict(cell.method.options)),
            "budget": cell.budget,
            "table_budget": cell.table_budget,
            "budget_policy": config.budget_policy,
            "task": cell.task,
            "limit": config.limit,
        },
        "fingerprint": fingerprint(config, cell),
        "config": config.as_written(config.to_dict()),
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
    write_json_atomic(staging / CELL_FILE, seal(record, staging))  # results and samples: integrity.SEALED_FILES
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
        console.print(f"[yellow]damaged, run again[/] {cell.name()}: {reason}", highlight=False, soft_wrap=True)
    for cell, reason in summary.failed:
        console.print(f"[red]failed[/] {cell.name()}: {reason}", highlight=False, soft_wrap=True)


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
