"""The SCOPE README scripts: bash run_scope_llava_7b.sh BUDGET / run_scope_llava_next_7b.sh BUDGET."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FAKE = Path(__file__).resolve().parent / "fake_lmms_eval.py"


def run_script(name: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # `python` = this venv
    return subprocess.run(["bash", str(REPO / name), *args], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.mark.parametrize(
    "budget, message",
    [("0", "budget must be at least 1 visual token"), ("-64", "usage: bash run_scope_llava_7b.sh BUDGET"),
     ("6.4", "Invalid value for '--budget'"), ("sixty", "Invalid value for '--budget'"), ("", "Invalid value for '--budget'")],
)
def test_budget_must_be_a_positive_integer(budget, message, tmp_path):
    """The scripts leave the budget to the sweep's one validation (the cell's PruningPlan)."""
    result = run_script("run_scope_llava_7b.sh", budget, "--dry-run", "--output", str(tmp_path / "runs"))
    assert result.returncode == 2
    assert message in " ".join((result.stdout + result.stderr).split())


def test_missing_budget_prints_usage():
    result = run_script("run_scope_llava_next_7b.sh")
    assert result.returncode == 2 and "usage: bash run_scope_llava_next_7b.sh BUDGET" in result.stderr


def test_dry_run_prints_scope_and_unpruned_commands(tmp_path):
    checkpoint = tmp_path / "llava-v1.5-7b"  # a local copy must exist; --dry-run checks what it can
    checkpoint.mkdir()
    result = run_script("run_scope_llava_7b.sh", "64", "--dry-run", "--output", str(tmp_path / "runs"), "--pretrained", str(checkpoint))
    assert result.returncode == 0, result.stderr
    commands = [line for line in result.stdout.splitlines() if not line.startswith("#")]
    assert len(commands) == 2 * 8  # unpruned + SCOPE@64 on the 8 tasks of Table 1
    assert all(f"pretrained={checkpoint}," in line and "--model llava_scope" in line for line in commands)
    assert sum("method=scope,budget=64," in line for line in commands) == 8
    assert not (tmp_path / "runs").exists()


def test_next_budget_above_the_token_count_is_refused():
    result = run_script("run_scope_llava_next_7b.sh", "3000", "--dry-run")
    assert result.returncode == 2 and "larger than the 2880 visual tokens available" in " ".join(result.stderr.split())


def test_script_runs_and_prints_the_row_beside_the_papers(tmp_path):
    evaluator = f"{sys.executable} {FAKE}"
    result = run_script(
        "run_scope_llava_7b.sh", "64", "--output", str(tmp_path / "runs"), "--task", "scope_gqa", "--task", "scope_pope",
        "--evaluator", evaluator, "--num-processes", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reproduced / paper (difference)" in result.stdout
    assert "/ 83.9 (" in result.stdout and "/ 58.3 (" in result.stdout  # SCOPE at 64: POPE and GQA in Table 1
