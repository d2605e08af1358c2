"""End to end through the real lmms-eval CLI: `scope-eval sweep` on a tiny offline config, then
`scope-eval report` makes the table and the plot from what it left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def child_env(tmp: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(HF_DATASETS_CACHE=str(tmp / "hf_datasets"), OMP_NUM_THREADS="2", TOKENIZERS_PARALLELISM="false")
    return env


def test_tiny_sweep_then_report(tmp_path):
    from tiny_models import save, tiny_llava

    save(*tiny_llava(), tmp_path / "tiny-llava")
    config = {
        "model": {"name": "tiny", "backend": "llava_hf_scope", "pretrained": "./tiny-llava", "family": "llava-1.5",
                  "model_args": {"device": "cpu", "device_map": "cpu", "dtype": "float32"}},
        "methods": ["none", "scope"],
        "budgets": [64],
        "tasks": ["scope_toy_pope", "scope_toy_gqa"],
        "limit": 4,
        "group_tasks": True,
        "offline": True,
        "output": "./runs",
    }  # fmt: skip
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(config))
    sweep = [sys.executable, "-m", "scope_eval", "sweep", "sweep.yaml"]
    result = subprocess.run(sweep, cwd=tmp_path, env=child_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    runs = tmp_path / "runs"
    records = {p.parent.relative_to(runs).as_posix(): json.loads(p.read_text()) for p in runs.rglob("cell.json")}
    assert sorted(records) == [
        "tiny_limit4/none/full/scope_toy_gqa",
        "tiny_limit4/none/full/scope_toy_pope",
        "tiny_limit4/scope/b64/scope_toy_gqa",
        "tiny_limit4/scope/b64/scope_toy_pope",
    ]
    scope_pope = records["tiny_limit4/scope/b64/scope_toy_pope"]
    assert scope_pope["visual_tokens"] == {"min": 64.0, "mean": 64.0, "max": 64.0}  # realised, from the plugin's samples
    assert records["tiny_limit4/none/full/scope_toy_pope"]["visual_tokens"]["mean"] == 576.0
    assert scope_pope["n_samples"] == 4 and "pope_f1_score,none" in scope_pope["results"]
    assert scope_pope["env"]["HF_HUB_OFFLINE"] == "1"
    assert scope_pope["versions"]["lmms-eval"] == "0.7.3"

    rerun = subprocess.run(sweep, cwd=tmp_path, env=child_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and "4 already finished" in rerun.stdout.replace("\n", " ")

    report = subprocess.run([sys.executable, "-m", "scope_eval", "report", "runs"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    assert "| scope    |       64 |" in report.stdout
    assert (runs / "report" / "table_tiny_limit4.md").is_file()
    assert (runs / "report" / "plot_tiny_limit4.png").read_bytes()[:4] == b"\x89PNG"
