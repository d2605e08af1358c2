"""scripts/time_runs.py, the benchmark behind the sweep-time numbers: what it runs and how it sums up."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("time_runs", REPO / "scripts" / "time_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_jobs_run_the_makefile_targets_commands_on_the_chosen_route(tmp_path):
    time_runs = load_script()
    makefile = (REPO / "Makefile").read_text()
    demo = time_runs.job_commands("demo", tmp_path, ["--isolation", "worker", "--num-processes", "2"])
    sweep, report = demo  # `make demo`: one sweep command over the three toy configs, then the report
    assert f"scope-eval {time_runs.step_name(sweep)} --output runs/toy" in makefile and sweep[-4:] == ["--isolation", "worker", "--num-processes", "2"]
    assert time_runs.step_name(sweep).count("configs/toy_") == 3 and report[1] == "report"
    report_alone = time_runs.job_commands("demo", tmp_path, [], ["--num-processes", "1"])[-1]
    assert report_alone[1] == "report" and report_alone[-3:] == [str(tmp_path / "report"), "--num-processes", "1"]
    (regress,) = time_runs.job_commands("regress", tmp_path, [])
    assert f"scope-eval regress {regress[2]}" in makefile
    assert time_runs.route_options("worker:2:cells") == ["--isolation", "worker", "--num-processes", "2", "--parallel", "cells"]
    assert time_runs.route_options("process:1") == ["--isolation", "process", "--num-processes", "1"]
    assert time_runs.step_name(regress) == "regress configs/regression/toy.yaml" and time_runs.step_name(demo[-1]) == "report"


def test_generation_share_and_medians(tmp_path):
    time_runs = load_script()
    samples = tmp_path / "cell" / "samples_task.jsonl"
    samples.parent.mkdir()
    rows = [{"token_counts": [{"cost": {"generate_s": 0.25}}]}, {"token_counts": [{"cost": {"generate_s": 0.5}}]}, {"doc_id": 3}]
    samples.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    assert time_runs.generation_seconds(tmp_path) == 0.75
    runs = [{"job": "smoke", "route": "worker:1", "wall_s": w, "cpu_s": w, "outside_generation": 0.9, "load_1min": 0.5} for w in (30.0, 10.0, 20.0)]
    table = time_runs.summary_table(runs)
    assert "| smoke | worker:1 | 3 | 30.0, 10.0, 20.0 | 20.0 | 20.0 | 90 % |" in table
