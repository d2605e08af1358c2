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


# -- run_scope_qwen2_vl_7b.sh PERCENT (Table 8: keep ratios) ---------------------------------------
def test_qwen_dry_run_prints_unpruned_scope_and_divprune_at_the_keep_ratio(tmp_path):
    result = run_script("run_scope_qwen2_vl_7b.sh", "25", "--dry-run", "--output", str(tmp_path / "runs"))
    assert result.returncode == 0, result.stderr
    commands = [line for line in result.stdout.splitlines() if not line.startswith("#")]
    assert len(commands) == 3 * 4  # unpruned, SCOPE and DivPrune on GQA, MMBench, MME, POPE
    assert all("--model qwen2_vl_scope" in line and "pretrained=Qwen/Qwen2-VL-7B-Instruct," in line for line in commands)
    assert all("max_pixels=602112,min_pixels=3136" in line for line in commands)
    for method in ("scope", "divprune"):
        assert sum(f"method={method},keep_ratio=0.25," in line for line in commands) == 4
    assert sum("method=none," in line and "keep_ratio" not in line for line in commands) == 4
    assert {line.split("--tasks ")[1].split()[0] for line in commands} == {"scope_gqa", "scope_mmbench_en_dev", "scope_mme", "scope_pope"}
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("percent", ["0", "250", "ten"])
def test_qwen_percent_outside_0_100_is_refused(percent):
    result = run_script("run_scope_qwen2_vl_7b.sh", percent, "--dry-run")
    assert result.returncode != 0 and f"PERCENT must be in (0, 100], e.g. 25 (the share of visual tokens kept), got '{percent}'" in result.stderr


def test_qwen_script_runs_and_prints_the_rows_beside_table_8(tmp_path):
    evaluator = f"{sys.executable} {FAKE}"
    result = run_script(
        "run_scope_qwen2_vl_7b.sh", "10", "--output", str(tmp_path / "runs"), "--task", "scope_pope", "--evaluator", evaluator,
        "--num-processes", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reproduced / paper (difference)" in result.stdout
    assert "/ 84.3 (" in result.stdout and "/ 80.8 (" in result.stdout  # SCOPE and DivPrune at 10 %: POPE in Table 8
