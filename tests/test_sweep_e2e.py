"""End to end through the real lmms-eval CLI: `scope-eval sweep configs/smoke_toy.yaml` (the trained toy
LLaVA-1.5, offline), then `scope-eval report` makes the table and the plot from what it left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def child_env(tmp: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(HF_DATASETS_CACHE=str(tmp / "hf_datasets"), OMP_NUM_THREADS="2", TOKENIZERS_PARALLELISM="false")
    return env


def test_smoke_config_sweep_then_report(tmp_path):
    runs = tmp_path / "runs"
    sweep = [sys.executable, "-m", "scope_eval", "sweep", str(REPO / "configs" / "smoke_toy.yaml"), "--output", str(runs)]
    result = subprocess.run(sweep, cwd=tmp_path, env=child_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    records = {p.parent.relative_to(runs).as_posix(): json.loads(p.read_text()) for p in runs.rglob("cell.json")}
    assert sorted(records) == ["toy-llava15_limit8/none/full/scope_toy_pope", "toy-llava15_limit8/scope/b64/scope_toy_pope"]
    unpruned, scope = records["toy-llava15_limit8/none/full/scope_toy_pope"], records["toy-llava15_limit8/scope/b64/scope_toy_pope"]
    assert unpruned["visual_tokens"] == {"min": 576.0, "mean": 576.0, "max": 576.0}  # realised, from the plugin's samples
    assert scope["visual_tokens"] == {"min": 64.0, "mean": 64.0, "max": 64.0}
    assert scope["n_samples"] == 8 and "pope_f1_score,none" in scope["results"]
    assert scope["env"]["HF_HUB_OFFLINE"] == "1" and scope["versions"]["lmms-eval"] == "0.7.3"
    assert "method=scope,budget=64" in scope["command"][scope["command"].index("--model_args") + 1]

    rerun = subprocess.run(sweep, cwd=tmp_path, env=child_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and "2 already finished" in rerun.stdout.replace("\n", " ")

    report = subprocess.run([sys.executable, "-m", "scope_eval", "report", str(runs)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    assert "| scope    |       64 |" in report.stdout
    assert "Limited run (8 documents per task)" in (runs / "report" / "table_toy-llava15_limit8.md").read_text()
    assert (runs / "report" / "plot_toy-llava15_limit8.png").read_bytes()[:4] == b"\x89PNG"
