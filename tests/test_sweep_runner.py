"""The sweep runner against a fake lmms-eval (tests/fake_lmms_eval.py): success is judged by the results
file, finished cells are never redone or overwritten, an interrupted sweep resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from scope_eval.sweeps.cells import CELL_FILE, cell_dir, expand, samples_file
from scope_eval.sweeps.config import SweepConfigError, load_sweep, sweep_from_dict, with_overrides
from scope_eval.sweeps.runner import SweepSetupError, describe_plan, run_sweep

FAKE = Path(__file__).resolve().parent / "fake_lmms_eval.py"
REPO = Path(__file__).resolve().parents[1]


def sweep_data(output: Path, **changes) -> dict:
    data = {
        "model": {"name": "tiny", "backend": "llava_hf_scope", "pretrained": "org/tiny", "family": "llava-1.5"},
        "methods": ["none", "scope"],
        "budgets": [64],
        "tasks": ["gqa", "mme"],
        "output": str(output),
    }
    return {**data, **changes}


def fake(*options: str) -> list[str]:
    return [sys.executable, str(FAKE), *options]


def quiet() -> Console:
    return Console(file=open(os.devnull, "w"))


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()}


def test_sweep_runs_every_cell_and_records_it(tmp_path):
    config = sweep_from_dict(sweep_data(tmp_path, limit=4))
    summary = run_sweep(config, fake(), quiet())
    assert summary.ok and len(summary.finished) == 4 and not summary.skipped
    record = json.loads((cell_dir(config, expand(config)[3]) / CELL_FILE).read_text())
    assert record["cell"]["method"] == "scope" and record["cell"]["budget"] == 64 and record["cell"]["task"] == "mme"
    assert record["results"]["mme_perception_score,none"] > 0
    assert record["n_samples"] == 4
    assert record["visual_tokens"] == {"min": 63.0, "mean": 63.5, "max": 64.0}  # from the samples' token_counts
    assert record["command"][:2] == [sys.executable, str(FAKE)]
    assert record["config"]["model"]["pretrained"] == "org/tiny"
    assert record["versions"]["scope-eval"] and "commit" in record["git"]
    assert record["timing"]["launch_seconds"] > 0
    assert (cell_dir(config, expand(config)[3]) / record["files"]["samples"]).is_file()
    assert not list(tmp_path.rglob(".tmp-*")), "scratch folders are removed after success"


def test_second_run_skips_finished_cells_without_touching_them(tmp_path):
    config = sweep_from_dict(sweep_data(tmp_path))
    run_sweep(config, fake(), quiet())
    before = snapshot(tmp_path / "tiny")
    summary = run_sweep(config, fake(), quiet())
    assert len(summary.skipped) == 4 and not summary.finished and summary.ok
    assert snapshot(tmp_path / "tiny") == before
    assert describe_plan(config, fake())[0].startswith("# 4 cells: 4 finished, 0 in conflict, 0 to run")


def test_exit_code_zero_without_results_is_a_failure(tmp_path):
    config = sweep_from_dict(sweep_data(tmp_path, methods=["none"]))
    summary = run_sweep(config, fake("--no-results"), quiet())
    assert not summary.ok and len(summary.failed) == 2
    assert "wrote no results json (exit code 0)" in summary.failed[0][1]
    assert not list(tmp_path.rglob(CELL_FILE))
    assert (tmp_path / "tiny/none/full/.tmp-gqa/lmms_eval.log").is_file(), "the log stays for diagnosis"


def test_missing_metric_fails_only_that_task_in_a_grouped_launch(tmp_path):
    config = sweep_from_dict(sweep_data(tmp_path, methods=["none"], group_tasks=True))
    summary = run_sweep(config, fake("--broken", "mme"), quiet())
    assert [c.task for c in summary.finished] == ["gqa"]
    assert [c.task for c, _ in summary.failed] == ["mme"]
    assert "mme_perception_score,none" in summary.failed[0][1]
    gqa = json.loads((tmp_path / "tiny/none/full/gqa" / CELL_FILE).read_text())
    assert gqa["timing"]["launch_tasks"] == ["gqa", "mme"]
    assert tmp_path / "tiny/none/full/gqa" / gqa["files"]["samples"] == samples_file(tmp_path / "tiny/none/full/gqa", "gqa")
    assert samples_file(tmp_path / "tiny/none/full/gqa", "gqa").is_file()  # the one predictable place
    # the rerun only launches the missing task
    summary = run_sweep(config, fake(), quiet())
    assert [c.task for c in summary.finished] == ["mme"] and [c.task for c in summary.skipped] == ["gqa"]


def test_changed_settings_conflict_instead_of_overwriting(tmp_path):
    config = sweep_from_dict(sweep_data(tmp_path, methods=["none"], tasks=["gqa"]))
    run_sweep(config, fake(), quiet())
    before = snapshot(tmp_path)
    summary = run_sweep(with_overrides(config, pretrained="org/other"), fake(), quiet())
    assert not summary.ok and "different model_args" in summary.failed[0][1]
    assert snapshot(tmp_path) == before


def test_dry_run_prints_commands_and_writes_nothing(tmp_path):
    for isolation, header in (("process", "4 to run in 4 lmms-eval launch(es)"), ("worker", "4 to run in one worker process (one model load)")):
        config = sweep_from_dict(sweep_data(tmp_path / "runs", offline=True, isolation=isolation))
        lines = describe_plan(config)
        assert lines[0].startswith(f"# 4 cells: 0 finished, 0 in conflict, {header}")
        assert ("-m scope_eval.sweeps.worker" in lines[1]) == (isolation == "worker")
        commands = [line for line in lines if not line.startswith("#")]
        assert len(commands) == 4, "the worker evaluates each cell as its lmms-eval command would: shown per cell"
        assert all(line.startswith("HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1") and " -m lmms_eval " in line for line in commands)
    assert not (tmp_path / "runs").exists()


def _found(folder, pattern: str) -> list:
    """rglob while a sweep runs: a scratch folder removed during the walk means "look again", not an error."""
    try:
        return list(folder.rglob(pattern))
    except FileNotFoundError:
        return []


def test_killed_sweep_resumes_keeping_finished_cells(tmp_path):
    """Kill a sweep (and its child) in the middle, re-run: finished cells untouched, the interrupted one redone."""
    config_file = tmp_path / "sweep.yaml"
    config_file.write_text(yaml.safe_dump(sweep_data(tmp_path / "runs", methods=["none", "scope", "random"])))
    command = [sys.executable, "-m", "scope_eval", "sweep", str(config_file), "--evaluator", f"{sys.executable} {FAKE} --sleep 1.5"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    runs = tmp_path / "runs"
    try:
        deadline = time.monotonic() + 120
        while len(_found(runs, CELL_FILE)) < 2 or not _found(runs, ".tmp-*/lmms/*/partial.txt"):
            assert process.poll() is None, "the sweep ended before it could be interrupted"
            assert time.monotonic() < deadline, "the sweep made no progress"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the sweep and its lmms-eval child, no chance to clean up
        process.wait()
    finished = sorted(p.parent for p in runs.rglob(CELL_FILE))
    interrupted = [p.parent for p in runs.rglob(".tmp-*/lmms")]
    assert len(finished) >= 2 and len(interrupted) == 1
    before = {folder: snapshot(folder) for folder in finished}

    rerun = subprocess.run(command[:-2] + ["--evaluator", f"{sys.executable} {FAKE}"], cwd=REPO, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert {folder: snapshot(folder) for folder in finished} == before
    assert len(list(runs.rglob(CELL_FILE))) == 6
    assert not list(runs.rglob(".tmp-*")), "the interrupted scratch folder was redone and cleared"
    redone = interrupted[0].parent / interrupted[0].name.removeprefix(".tmp-")
    assert (redone / CELL_FILE).is_file()
    assert f"{len(finished)} already finished" in rerun.stdout.replace("\n", " ")


def test_cli_exits_non_zero_when_a_cell_fails(tmp_path):
    config_file = tmp_path / "sweep.yaml"
    config_file.write_text(yaml.safe_dump(sweep_data(tmp_path / "runs", methods=["none"], tasks=["gqa"])))
    command = [sys.executable, "-m", "scope_eval", "sweep", str(config_file), "--evaluator", f"{sys.executable} {FAKE} --no-results"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1
    assert "failed" in result.stdout


def test_cli_reports_config_errors_with_exit_code_2(tmp_path):
    config_file = tmp_path / "sweep.yaml"
    config_file.write_text(yaml.safe_dump(sweep_data(tmp_path / "runs", budgets=[0])))
    result = subprocess.run([sys.executable, "-m", "scope_eval", "sweep", str(config_file)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert "budget must be at least 1 visual token" in " ".join(result.stderr.split())


def test_data_dir_points_the_plugin_tasks_at_local_copies(tmp_path):
    data = tmp_path / "data"
    (data / "MME" / "data").mkdir(parents=True)
    (data / "MME" / "data" / "test-00000-of-00001.parquet").write_bytes(b"")  # only its path is used here
    config = sweep_from_dict(sweep_data(tmp_path / "runs", methods=["none"], tasks=["scope_mme"], data_dir=str(data)))
    summary = run_sweep(config, fake(), quiet())
    assert summary.ok
    record = json.loads((cell_dir(config, expand(config)[0]) / CELL_FILE).read_text())
    include = Path(record["command"][record["command"].index("--include_path") + 1])
    assert include.parent == (tmp_path / "runs" / ".include").resolve()
    assert "test-00000-of-00001.parquet" in (include / "scope_mme.yaml").read_text()
    assert "data_dir" not in record["fingerprint"]["model_args"]


def test_data_dir_without_a_needed_copy_stops_before_any_launch(tmp_path):
    (tmp_path / "data").mkdir()
    config = sweep_from_dict(sweep_data(tmp_path / "runs", methods=["none"], tasks=["scope_pope"], data_dir=str(tmp_path / "data")))
    with pytest.raises(SweepSetupError, match="scope_pope: missing: expected POPE/"):
        run_sweep(config, fake(), quiet())
    assert not list((tmp_path / "runs").rglob(".tmp-*"))


def test_data_dir_needs_the_plugin_tasks(tmp_path):
    with pytest.raises(SweepConfigError, match="built-in tasks, which always read the hub"):
        sweep_from_dict(sweep_data(tmp_path / "runs", tasks=["gqa"], data_dir=str(tmp_path)))
    with pytest.raises(SweepConfigError, match="is not a folder"):
        sweep_from_dict(sweep_data(tmp_path / "runs", tasks=["scope_gqa"], data_dir=str(tmp_path / "nope")))


def test_records_paths_as_the_config_wrote_them(tmp_path):
    """A path written relative to the config runs resolved but is recorded as written: no machine's absolute path."""
    (tmp_path / "weights" / "clip").mkdir(parents=True)
    (tmp_path / "configs").mkdir()
    methods = ["none", {"name": "cdpruner", "options": {"text_encoder": "../weights/clip"}, "label": "cdpruner"}]
    (tmp_path / "configs" / "sweep.yaml").write_text(yaml.safe_dump(sweep_data(tmp_path / "runs", methods=methods, tasks=["gqa"], limit=2)))
    config = load_sweep(tmp_path / "configs" / "sweep.yaml")
    summary = run_sweep(config, fake(), quiet())
    assert summary.ok
    cell = next(c for c in expand(config) if c.method.name == "cdpruner")
    text = (cell_dir(config, cell) / CELL_FILE).read_text()
    record = json.loads(text)
    assert record["cell"]["options"] == {"text_encoder": "../weights/clip"}
    assert record["config"]["methods"][1]["options"] == {"text_encoder": "../weights/clip"}
    assert str((tmp_path / "weights").resolve()) in " ".join(record["command"])  # the run itself used the resolved folder


def test_cli_shows_each_log_path_unwrapped_and_ends_with_scores_and_the_report_command(tmp_path):
    runs = tmp_path / ("a_folder_name_long_enough_that_an_80_column_console_would_wrap_it" * 2) / "runs"
    config_file = tmp_path / "sweep.yaml"
    config_file.write_text(yaml.safe_dump(sweep_data(runs, limit=4)))
    command = [sys.executable, "-m", "scope_eval", "sweep", str(config_file), "--evaluator", f"{sys.executable} {FAKE}"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)  # stdout is a pipe, not a terminal
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    config = sweep_from_dict(sweep_data(runs, limit=4))
    for cell in expand(config):
        log = cell_dir(config, cell).parent / f".tmp-{cell.task}" / "lmms_eval.log"
        assert f"start  {cell.method.label} {cell.budget_folder} ({cell.task})  log: {log}" in lines
        assert any(line.startswith(f"done   {cell.name()}  ") and line.endswith(" s") for line in lines)
    assert f"full report (intervals, averages, paper references, plots): scope-eval report {runs} --output {runs / 'report'}" in lines
    table = lines[lines.index(next(line for line in lines if "scores: tiny, limit 4" in line)):]
    header = next(line for line in table if "method" in line)
    assert "GQA" in header and "MME" in header
    gqa = json.loads((cell_dir(config, expand(config)[2]) / CELL_FILE).read_text())["results"]["exact_match,none"]
    assert any(line.split("│")[1:4] and "scope" in line and f"{100 * gqa:.1f}" in line for line in table), table


def test_cell_workers_get_one_gpu_each_and_leave_a_cpu_model_alone(tmp_path, monkeypatch):
    """parallel: cells: worker i sees the i-th visible GPU as its only one; a CPU model keeps the environment
    (even CUDA_VISIBLE_DEVICES="" , which hides every GPU); too few GPUs is refused, naming the fix."""
    from scope_eval.sweeps.runner import _lane_devices

    data = sweep_data(tmp_path, num_processes=2, parallel="cells")
    gpu = sweep_from_dict({**data, "model": {**data["model"], "model_args": {"device": "cuda"}}})
    cpu = sweep_from_dict({**data, "model": {**data["model"], "model_args": {"device": "cpu"}}})
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert _lane_devices(gpu, 2) == ["0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 5,6")
    assert _lane_devices(gpu, 2) == ["3", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert _lane_devices(cpu, 2) == [None, None]
    with pytest.raises(SweepSetupError, match="needs 2 GPUs.*lower --num-processes"):
        _lane_devices(gpu, 2)
