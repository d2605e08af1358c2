"""The worker route (isolation: worker, the default): one process loads the model once and evaluates every
cell on it. Same per-sample answers, scores and realised token counts as one lmms-eval process per cell
(isolation: process), on both backends, pre-LLM and in-LLM methods, with a cell failing in the middle; a
restore check between cells; a worker that evaluated another model's sweep first (one command, several
configs) gives the same numbers; a worker killed inside a cell is restarted, a cell that kills it twice fails
alone, and the next run redoes only that cell."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from scope_eval.sweeps.cells import CELL_FILE, cell_dir, expand
from scope_eval.sweeps.config import load_sweep, sweep_from_dict, with_overrides
from scope_eval.sweeps.runner import CHILD_FILE, EVENTS_FILE, LOG_FILE, WORKER_DIR, WorkerLanes, run_sweep
from scope_eval.sweeps.worker import pruning_leftovers, restore_problems, restore_state

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "scope_eval" / "toy" / "weights" / "llava15"
CPU = {"device": "cpu", "device_map": "cpu", "dtype": "float32"}
# The in-LLM cell in the middle fails on load in both routes: FastV dropping at layer 1 of the toy's 3 cannot
# average 64 visual tokens over all layers (layer 0 alone averages 192), see configs/toy_llava15.yaml.
UNREACHABLE = {"layer": 1}
METHODS = [
    "none",
    "scope",
    {"name": "fastv", "options": {"layer": 1, "budget_unit": "after_layer"}, "label": "fastv_l1_unreachable"},
    {"name": "fastv", "options": {"layer": 1, "budget_unit": "after_layer"}, "label": "fastv_l1_after"},
]


def config_for(output: Path, backend: str, pretrained: Path, isolation: str, **changes):
    """The sweep config refuses the unreachable schedule before anything runs (the same pre-load check as the
    lmms-eval edge), so it is put into the validated config afterwards: a cell that fails in the middle."""
    config = sweep_from_dict(config_data(output, backend, pretrained, isolation, **changes))
    methods = tuple(
        dataclasses.replace(method, options=dict(UNREACHABLE)) if method.label == "fastv_l1_unreachable" else method
        for method in config.methods
    )
    return dataclasses.replace(config, methods=methods)


def config_data(output: Path, backend: str, pretrained: Path, isolation: str, **changes) -> dict:
    data = {
        "model": {"name": f"toy-{backend}", "backend": backend, "pretrained": str(pretrained), "family": "llava-1.5",
                  "model_args": {**CPU, **({"conv_template": "vicuna_v1"} if backend == "llava_scope" else {})}},
        "methods": METHODS, "budgets": [64], "tasks": ["scope_toy_pope"], "limit": 3, "offline": True, "cpu_threads": 1,
        "isolation": isolation, "output": str(output),
    }  # fmt: skip
    return {**data, **changes}


def recording_console() -> tuple[Console, io.StringIO]:
    text = io.StringIO()
    return Console(file=text, width=80), text


def per_sample(config, cell) -> list[tuple]:
    """(doc_id, answer, per-sample metric record, realised visual tokens) of every logged sample of a cell."""
    folder = cell_dir(config, cell)
    record = json.loads((folder / CELL_FILE).read_text())
    samples = [json.loads(line) for line in (folder / record["files"]["samples"]).read_text().splitlines()]
    return [
        (s["doc_id"], s["filtered_resps"], s.get("pope_f1_score"), [c.get("visual_tokens") for c in s["token_counts"]]
         if isinstance(s["token_counts"], list) else s["token_counts"].get("visual_tokens"))
        for s in samples
    ]  # fmt: skip


def outcome_by_cell(config, summary) -> dict[str, object]:
    failed = {cell.name() for cell, _ in summary.failed}
    return {cell.name(): "failed" if cell.name() in failed else per_sample(config, cell) for cell in expand(config)}


@pytest.fixture(scope="module")
def original_toy(tmp_path_factory) -> Path:
    from scope_eval.toy.convert import export_llava_original

    return export_llava_original(TOY, tmp_path_factory.mktemp("toy_original") / "llava15")


def lane_events(model_root: Path) -> dict[str, list[dict]]:
    """Every worker lane's events so far (whole lines only), by lane folder name."""
    found = {}
    for lane in sorted(model_root.glob(WORKER_DIR + "*")):
        events = []
        for line in (lane / EVENTS_FILE).read_text().splitlines() if (lane / EVENTS_FILE).is_file() else []:
            try:
                events.append(json.loads(line))
            except ValueError:
                pass  # being written
        found[lane.name] = events
    return found


def worker_running(model_root: Path, index: int) -> int | None:
    """The process group of the worker lane now inside cell `index` of the job (started, not ended)."""
    for lane, events in lane_events(model_root).items():
        starts = [e["cell"] for e in events if e.get("event") == "start"]
        ended = {e["cell"] for e in events if e.get("event") == "end"}
        if starts and starts[-1] == index and index not in ended:
            try:
                return json.loads((model_root / lane / CHILD_FILE).read_text())["pgid"]
            except (OSError, ValueError, KeyError):
                return None
    return None


# worker: one process, cells in turn; cells: whole cells spread over 2 one-process workers (parallel: cells);
# cells_after_qwen: the same, on the 2 workers a toy Qwen2-VL sweep of the same command has just used
WORKER_ROUTES = {"worker": {}, "cells": {"num_processes": 2, "parallel": "cells"}, "cells_after_qwen": {"num_processes": 2, "parallel": "cells"}}


def sweep_after_another_model(config, console):
    """`config` run on the workers (WorkerLanes) a toy Qwen2-VL sweep has just used, as `scope-eval sweep
    configs/toy_qwen2_vl.yaml CONFIG` does; checks that the same two processes went on."""
    qwen = with_overrides(load_sweep(REPO / "configs" / "toy_qwen2_vl.yaml"), methods=["scope"], tasks=["scope_toy_pope"], limit=2,
                          output=config.output, num_processes=2, parallel="cells")  # fmt: skip
    with WorkerLanes() as lanes:
        assert run_sweep(qwen, console=recording_console()[0], lanes=lanes).ok
        workers = [lane.process.pid for lane in lanes.lanes]
        summary = run_sweep(config, console=console, lanes=lanes)
        assert [lane.process.pid if lane.process else None for lane in lanes.lanes] == workers, "the Qwen sweep's workers went on"
    return summary


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["llava_hf_scope", "llava_scope"])
def test_worker_route_equals_one_process_per_cell(backend, tmp_path, request):
    pretrained = TOY if backend == "llava_hf_scope" else request.getfixturevalue("original_toy")
    routes = {}
    for route in ("process", *WORKER_ROUTES):
        isolation = "process" if route == "process" else "worker"
        config = config_for(tmp_path / route, backend, pretrained, isolation, **WORKER_ROUTES.get(route, {}))
        console, text = recording_console()
        summary = sweep_after_another_model(config, console) if route == "cells_after_qwen" else run_sweep(config, console=console)
        routes[route] = (config, summary, text.getvalue())
    process_config, process_summary, _ = routes["process"]
    assert [cell.name() for cell, _ in process_summary.failed] == ["fastv_l1_unreachable b64 scope_toy_pope"]
    process_outcomes = outcome_by_cell(process_config, process_summary)
    for route in WORKER_ROUTES:
        worker_config, worker_summary, _ = routes[route]
        assert [cell.name() for cell, _ in worker_summary.failed] == ["fastv_l1_unreachable b64 scope_toy_pope"], route
        assert "budget_unit=after_layer" in worker_summary.failed[0][1], "the cell's own error, from its log"
        assert len(worker_summary.finished) == 3
        worker_outcomes = outcome_by_cell(worker_config, worker_summary)
        assert worker_outcomes == process_outcomes, route
        assert {len(samples) for samples in worker_outcomes.values() if samples != "failed"} == {3}
        for cell in expand(worker_config):
            if cell.method.label == "fastv_l1_unreachable":
                continue
            process_record = json.loads((cell_dir(process_config, cell) / CELL_FILE).read_text())
            worker_record = json.loads((cell_dir(worker_config, cell) / CELL_FILE).read_text())
            assert worker_record["results"] == process_record["results"]
            assert worker_record["visual_tokens"] == process_record["visual_tokens"]
            assert worker_record["fingerprint"] == process_record["fingerprint"]
            assert worker_record["timing"]["isolation"] == "worker" and worker_record["timing"]["cell_seconds"] > 0
    after_config, _, _ = routes["cells_after_qwen"]
    reused = lane_events(Path(after_config.output) / f"toy-{backend}_limit3")
    assert sorted(e["cell"] for events in reused.values() for e in events if e["event"] == "start") == [0, 1, 2, 3]
    assert all(any(e["event"] == "loaded" for e in events) for events in reused.values() if events), "each worker loaded this model afresh"
    cells_config, _, cells_shown = routes["cells"]
    lanes = lane_events(Path(cells_config.output) / f"toy-{backend}_limit3")
    started = {lane: sorted(e["cell"] for e in events if e["event"] == "start") for lane, events in lanes.items()}
    assert set(started) == {WORKER_DIR, WORKER_DIR + "-1"} and all(started.values()), started
    assert sorted(sum(started.values(), [])) == [0, 1, 2, 3], "each cell evaluated once, by one of the two workers"
    assert "in 2 worker processes sharing the cells" in cells_shown
    worker_config, _, shown = routes["worker"]
    # feedback: each cell's log when it starts, on one line even at 80 columns; its own time when it ends
    scope_log = cell_dir(worker_config, expand(worker_config)[1]).parent / ".tmp-scope_toy_pope" / LOG_FILE
    assert f"start  scope b64 scope_toy_pope  log: {scope_log}" in shown.splitlines()
    assert "model loaded once in" in shown and "done   scope b64 scope_toy_pope  " in shown


@pytest.mark.slow
def test_a_cell_that_kills_its_worker_twice_fails_alone_and_resume_redoes_only_it(tmp_path):
    config = config_for(tmp_path / "runs", "llava_hf_scope", TOY, "worker", methods=["none", "scope", "random"], limit=6)
    victim = expand(config)[1]
    victim_log = cell_dir(config, victim).parent / f".tmp-{victim.task}" / LOG_FILE
    worker_child = Path(config.output) / "toy-llava_hf_scope_limit6" / WORKER_DIR / CHILD_FILE
    kills: list[int] = []  # polled every 10 ms: a cell of 6 documents lasts a few tenths of a second

    def kill_worker_in_victim_cell() -> None:
        deadline = time.monotonic() + 600
        seen: float | None = None
        while len(kills) < 2 and time.monotonic() < deadline:
            try:
                started = victim_log.stat().st_ctime
                pgid = json.loads(worker_child.read_text())["pgid"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.01)
                continue
            # the restarted worker may not have written its child.json yet: never count the killed one twice
            if pgid not in kills and started != seen and "run in the sweep worker" in victim_log.read_text():
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                seen = started
                kills.append(pgid)
            time.sleep(0.01)

    killer = threading.Thread(target=kill_worker_in_victim_cell, daemon=True)
    killer.start()
    console, _ = recording_console()
    summary = run_sweep(config, console=console)
    killer.join(timeout=5)
    assert len(kills) == 2 and kills[0] != kills[1], "two workers, each killed inside the victim cell"
    assert [cell.name() for cell, _ in summary.failed] == [victim.name()]
    assert "killed by signal 9" in summary.failed[0][1] and "twice" in summary.failed[0][1]
    assert {cell.name() for cell in summary.finished} == {expand(config)[0].name(), expand(config)[2].name()}
    assert "killed by signal 9 during this cell (worker log" in victim_log.read_text()
    finished = {cell.name(): (cell_dir(config, cell) / CELL_FILE).read_bytes() for cell in summary.finished}

    summary = run_sweep(config, console=console)  # resume: only the failed cell runs
    assert [cell.name() for cell in summary.finished] == [victim.name()] and len(summary.skipped) == 2 and summary.ok
    assert {cell.name(): (cell_dir(config, cell) / CELL_FILE).read_bytes() for cell in summary.skipped} == finished


def test_restore_check_passes_after_removal_and_names_what_a_leaked_pruning_left(hf_llava):
    from scope_eval import prune

    model, processor = hf_llava
    loaded = restore_state(model, processor)
    handle = prune(model, "scope", 16, processor=processor)
    assert pruning_leftovers(model, processor), "a pruned model carries this package's patches"
    leaked = restore_state(model, processor)
    handle.remove()
    assert restore_problems(loaded, loaded, restore_state(model, processor), pruning_leftovers(model, processor)) == []
    assert restore_problems(loaded, loaded, leaked, []) != []
    with torch_no_grad():  # an in-place write, even of zero, is a change the check must see
        next(model.parameters()).add_(0.0)
    problems = restore_problems(loaded, None, restore_state(model, processor), [])
    assert problems and problems[0].startswith("parameter ")


def torch_no_grad():
    import torch

    return torch.no_grad()


@pytest.mark.slow
def test_two_worker_processes_equal_one(tmp_path):
    """Data parallel (num_processes > 1): every rank loads the model once and evaluates its shard of each
    cell; rank 0 gathers and writes the same results as one process. On CPU, torchrun starts the ranks
    (accelerate launch needs GPUs for more than one process), running the job the runner writes."""
    import subprocess
    import sys

    from scope_eval.sweeps.cells import plan_launches
    from scope_eval.sweeps.outputs import read_task_outcomes
    from scope_eval.sweeps.runner import EVENTS_FILE, one_cell_per_launch, write_worker_job

    config = config_for(tmp_path / "one", "llava_hf_scope", TOY, "worker", methods=["none", "scope"], limit=3)
    assert run_sweep(config, console=recording_console()[0]).ok
    two = config_for(tmp_path / "two", "llava_hf_scope", TOY, "worker", methods=["none", "scope"], limit=3)
    launches = plan_launches(one_cell_per_launch(two), expand(two))
    scratch = tmp_path / "two_worker"
    scratch.mkdir()
    job = write_worker_job(launches, scratch)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29591",
               "-m", "scope_eval.sweeps.worker", str(job)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    process = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    events = [json.loads(line) for line in (scratch / EVENTS_FILE).read_text().splitlines()]
    assert [e["cell"] for e in events if e["event"] == "start"] == [0, 1], "rank 0 alone reports"
    for launch in launches:
        (cell,) = launch.cells
        (outcome,) = read_task_outcomes(launch.work_dir / "lmms", launch.tasks, 0)
        assert outcome.ok, outcome.reason
        two_samples = sorted((json.loads(line) for line in outcome.samples_file.read_text().splitlines()), key=lambda s: s["doc_id"])
        one_record = json.loads((cell_dir(config, cell) / CELL_FILE).read_text())
        one_lines = (cell_dir(config, cell) / one_record["files"]["samples"]).read_text().splitlines()
        one_samples = sorted((json.loads(line) for line in one_lines), key=lambda s: s["doc_id"])
        assert [s["doc_id"] for s in two_samples] == [0, 1, 2], "every document once, from both shards"
        for key in ("filtered_resps", "pope_f1_score"):
            assert [s[key] for s in two_samples] == [s[key] for s in one_samples]
        assert [[c["visual_tokens"] for c in s["token_counts"]] for s in two_samples] == [
            [c["visual_tokens"] for c in s["token_counts"]] for s in one_samples
        ]
        assert outcome.results == one_record["results"]


@pytest.mark.slow
def test_interrupted_worker_sweep_stops_its_worker_and_resumes_without_redoing_finished_cells(tmp_path):
    import subprocess
    import sys

    import yaml

    data = config_data(tmp_path / "runs", "llava_hf_scope", TOY, "worker", methods=["none", "scope", "random"], limit=6)
    config, config_file = sweep_from_dict(data), tmp_path / "sweep.yaml"
    config_file.write_text(yaml.safe_dump(data))
    second = expand(config)[1]
    second_log = cell_dir(config, second).parent / f".tmp-{second.task}" / LOG_FILE
    worker_child = Path(config.output) / "toy-llava_hf_scope_limit6" / WORKER_DIR / CHILD_FILE
    command = [sys.executable, "-m", "scope_eval", "sweep", str(config_file)]
    # Ctrl-C's default disposition in the sweep even where pytest itself was started with SIGINT ignored
    # (a background job of a non-interactive shell): Python then ignores it too, and nothing is interrupted.
    sweep = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.monotonic() + 600
    first = cell_dir(config, expand(config)[0]) / CELL_FILE

    def wait_for(condition) -> None:
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)

    # The interrupt must land inside the second cell, which takes well under a second: the worker is frozen
    # (SIGSTOP) as soon as that cell starts, the parent seals the first cell meanwhile, the sweep is
    # interrupted, and the worker resumes only once the sweep's SIGTERM waits for it.
    wait_for(lambda: second_log.is_file() and "run in the sweep worker" in second_log.read_text())
    worker = json.loads(worker_child.read_text())["pgid"]
    os.killpg(worker, signal.SIGSTOP)
    wait_for(first.is_file)
    sweep.send_signal(signal.SIGINT)
    wait_for(lambda: sweep.poll() is not None or _pending(worker, signal.SIGTERM))
    os.killpg(worker, signal.SIGCONT)
    output, _ = sweep.communicate(timeout=120)
    assert sweep.returncode == 130 and "interrupted" in output, output
    time.sleep(0.5)
    assert not Path(f"/proc/{worker}").exists(), "the worker stopped with the sweep"
    before = first.read_bytes()
    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "1 already finished, 2 to run" in rerun.stdout
    assert first.read_bytes() == before and len(list(Path(config.output).rglob(CELL_FILE))) == 3


@pytest.mark.slow
def test_cells_spread_over_workers_a_crash_fails_only_its_cell_and_resume_redoes_only_it(tmp_path):
    """parallel: cells: the worker inside the victim cell is SIGKILLed twice (each time in a fresh worker);
    the victim fails alone, the other worker's cells and the rest of the queue finish, a re-run redoes only it."""
    config = config_for(tmp_path / "runs", "llava_hf_scope", TOY, "worker", methods=["none", "scope", "random", "saliency"],
                        limit=6, num_processes=2, parallel="cells")  # fmt: skip
    model_root = Path(config.output) / "toy-llava_hf_scope_limit6"
    victim = expand(config)[1]
    kills: list[int] = []

    def kill_the_worker_in_the_victim_cell() -> None:
        deadline = time.monotonic() + 600
        while len(kills) < 2 and time.monotonic() < deadline:
            pgid = worker_running(model_root, 1)  # the job lists every cell: the victim is always cell 1
            if pgid is not None and pgid not in kills:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                    kills.append(pgid)
            time.sleep(0.01)

    killer = threading.Thread(target=kill_the_worker_in_the_victim_cell, daemon=True)
    killer.start()
    console, text = recording_console()
    summary = run_sweep(config, console=console)
    killer.join(timeout=5)
    assert len(kills) == 2, "two workers, each killed inside the victim cell"
    assert [cell.name() for cell, _ in summary.failed] == [victim.name()], text.getvalue()
    assert "killed by signal 9" in summary.failed[0][1] and "twice" in summary.failed[0][1]
    assert {cell.name() for cell in summary.finished} == {cell.name() for cell in expand(config)} - {victim.name()}
    assert "a fresh worker takes it again" in text.getvalue()
    finished = {cell.name(): (cell_dir(config, cell) / CELL_FILE).read_bytes() for cell in summary.finished}

    summary = run_sweep(config, console=console)  # resume: only the failed cell runs
    assert [cell.name() for cell in summary.finished] == [victim.name()] and len(summary.skipped) == 3 and summary.ok
    assert {cell.name(): (cell_dir(config, cell) / CELL_FILE).read_bytes() for cell in summary.skipped} == finished


@pytest.mark.slow
def test_interrupted_cells_sweep_stops_every_worker_and_resumes_without_redoing_finished_cells(tmp_path):
    import subprocess
    import sys

    import yaml

    data = config_data(tmp_path / "runs", "llava_hf_scope", TOY, "worker", methods=["none", "scope", "random"], limit=6,
                       num_processes=2, parallel="cells")  # fmt: skip
    config, config_file = sweep_from_dict(data), tmp_path / "sweep.yaml"
    config_file.write_text(yaml.safe_dump(data))
    model_root = Path(config.output) / "toy-llava_hf_scope_limit6"
    command = [sys.executable, "-m", "scope_eval", "sweep", str(config_file)]
    sweep = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.monotonic() + 600

    def wait_for(condition):
        while not (found := condition()) and time.monotonic() < deadline:
            time.sleep(0.01)
        return found

    # The worker on cell 1 is frozen inside it, so the interrupt always finds a cell running; the other
    # worker seals cell 0 (and maybe cell 2) meanwhile.
    frozen = wait_for(lambda: worker_running(model_root, 1))
    os.killpg(frozen, signal.SIGSTOP)
    wait_for((cell_dir(config, expand(config)[0]) / CELL_FILE).is_file)
    workers = [json.loads((lane / CHILD_FILE).read_text())["pgid"] for lane in model_root.glob(WORKER_DIR + "*") if (lane / CHILD_FILE).is_file()]
    sweep.send_signal(signal.SIGINT)
    wait_for(lambda: sweep.poll() is not None or _pending(frozen, signal.SIGTERM))
    os.killpg(frozen, signal.SIGCONT)
    output, _ = sweep.communicate(timeout=120)
    assert sweep.returncode == 130 and "interrupted" in output, output
    time.sleep(0.5)
    assert workers and not any(Path(f"/proc/{pgid}").exists() for pgid in workers), "every worker stopped with the sweep"
    sealed = {path: path.read_bytes() for path in Path(config.output).rglob(CELL_FILE)}
    assert 1 <= len(sealed) <= 2 and not (cell_dir(config, expand(config)[1]) / CELL_FILE).exists()
    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{len(sealed)} already finished, {3 - len(sealed)} to run" in rerun.stdout
    assert {path: path.read_bytes() for path in sealed} == sealed and len(list(Path(config.output).rglob(CELL_FILE))) == 3


def _pending(pid: int, signum: int) -> bool:
    """Whether `signum` is pending for process `pid` (delivered once a stopped process continues)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True  # gone
    masks = [int(line.split()[1], 16) for line in status.splitlines() if line.startswith(("SigPnd:", "ShdPnd:"))]
    return any(mask >> (signum - 1) & 1 for mask in masks)
