"""The accuracy-regression check: the comparison itself, and end to end that a broken selection fails it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from scope_eval.sweeps.regression import KEY_COLUMNS, compare

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "scope_eval" / "toy" / "weights" / "llava15"


def frame(values: dict[str, float]) -> pd.DataFrame:
    rows = []
    for task, value in values.items():
        rows.append(dict(zip(KEY_COLUMNS, ["toy", "scope", 64, task, task]), value=value))
    return pd.DataFrame(rows)


def test_compare_names_each_drop_beyond_tolerance():
    baseline = frame({"a": 80.0, "b": 70.0, "c": 60.0})
    current = frame({"a": 77.5, "b": 64.0, "c": 65.0})
    verdict = compare(current, baseline, tolerance=2.5)
    assert verdict.checked == 3
    assert [d.key["task"] for d in verdict.drops] == ["b"]  # a: exactly at the tolerance; c: improved
    assert "64.00 < baseline 70.00 (-6.00)" in verdict.drops[0].describe()


def test_compare_fails_on_missing_metrics():
    verdict = compare(frame({"a": 80.0}), frame({"a": 80.0, "b": 70.0}), tolerance=1.0)
    assert not verdict.ok
    assert "missing" in verdict.drops[0].describe()


BROKEN_SELECTION = '''
# Test-only: loaded at interpreter start-up (sitecustomize) in every process of the run, so the lmms-eval
# children use it too. It keeps the LEAST salient tokens: the kind of sign slip a refactor can introduce.
import scope_eval.pruning.methods.scope as scope_method


def least_salient(features, saliency, k, alpha=1.0, combine="multi", **kwargs):
    return (-saliency).topk(k, dim=1).indices.sort(dim=1).values


scope_method.scope_select = least_salient
'''


@pytest.mark.slow
@pytest.mark.skipif(not TOY.is_dir(), reason="the trained toy checkpoint is not present")
def test_broken_selection_fails_the_regression_check(tmp_path):
    sweep = {
        "model": {"name": "toy-llava15", "backend": "llava_hf_scope", "pretrained": str(TOY), "family": "llava-1.5",
                  "model_args": {"device": "cpu", "device_map": "cpu", "dtype": "float32"}},
        "methods": ["scope"], "budgets": [64], "tasks": ["scope_toy_pope"], "limit": 60,
        "group_tasks": True, "offline": True,
    }  # fmt: skip
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    regression = {"sweeps": ["sweep.yaml"], "baseline": "baseline.json", "tolerance": 2.0}
    (tmp_path / "regression.yaml").write_text(yaml.safe_dump(regression))
    command = [sys.executable, "-m", "scope_eval", "regress", str(tmp_path / "regression.yaml")]

    def run(*extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([*command, *extra], capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)

    made = run("--update-baseline", "--runs", str(tmp_path / "good"))
    assert made.returncode == 0, made.stdout + made.stderr
    assert run("--runs", str(tmp_path / "good")).returncode == 0

    broken_dir = tmp_path / "broken_site"
    broken_dir.mkdir()
    (broken_dir / "sitecustomize.py").write_text(BROKEN_SELECTION)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(broken_dir), os.environ.get("PYTHONPATH", "")])}
    broken = run("--runs", str(tmp_path / "broken"), env=env)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "REGRESSION" in broken.stdout and "method_label=scope" in broken.stdout and "scope_toy_pope" in broken.stdout
