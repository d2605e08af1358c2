"""`scope-eval` reads like one tool: --version, `methods`, one spelling per option (old ones noted),
standard placeholders, errors on stderr, paths never wrapped, and --help without the heavy imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scope_eval import __version__
from scope_eval.cli import COMMANDS, DEPRECATED, app, deprecation_notes, load_command

ROOT = Path(__file__).resolve().parents[1]


def scope_eval_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    code = "import sys; from scope_eval.cli import main; sys.argv = ['scope-eval', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"scope-eval {__version__}"


def test_help_lists_every_command_without_importing_torch_pandas_or_lmms_eval():
    code = (
        "import sys; from scope_eval.cli import main; sys.argv = ['scope-eval', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('LOADED', sorted(m for m in ('torch', 'pandas', 'lmms_eval', 'matplotlib', 'transformers') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "LOADED []" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
    for name in COMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_uses_standard_placeholders(name):
    result = CliRunner().invoke(app, [name, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for typer_style in ("<list[", "<int", "<str>", "<bool>", "<float>", "int range"):
        assert typer_style not in result.output, f"{name}: {typer_style}"
    command = load_command(name)
    long_names = {opt for param in command.params for opt in getattr(param, "opts", ())}
    assert not {"--out", "--out-dir", "--methods", "--budgets"} & {o for o in long_names if o not in DEPRECATED.get(name, {})}
    if name in ("sweep", "report", "regress", "bench", "bench-selection", "tasks-dir", "make-task-data", "toy-data", "toy-export"):
        assert "--output" in long_names, name


def test_methods_lists_every_registered_method_with_stage_and_option_defaults():
    from scope_eval.pruning import METHODS
    from scope_eval.pruning.registry import method_options

    result = CliRunner().invoke(app, ["methods", "--json"])
    assert result.exit_code == 0, result.output
    listed = {entry["name"]: entry for entry in json.loads(result.output)}
    assert set(listed) == set(METHODS)
    for name, entry in listed.items():
        assert entry["stage"] == METHODS[name].stage
        assert {o["name"]: o["default"] for o in entry["options"]} == {
            key: (list(value) if isinstance(value, tuple) else value) for key, value in method_options(name).items()
        }
    scope_options = {o["name"]: o["help"] for o in listed["scope"]["options"]}
    assert scope_options["alpha"] and scope_options["combine"]  # one line each, from the field's comment
    text = CliRunner().invoke(app, ["methods"]).output
    assert "alpha=1.0" in text and "pre-LLM" in text and "in-LLM" in text


def test_methods_and_budgets_are_given_the_same_way_everywhere(tmp_path):
    """Repeated or comma-separated, in sweep (dry run) and report alike."""
    from scope_eval.sweeps.cli_values import split_values, whole_numbers

    assert split_values(["scope,dart", "none"]) == ["scope", "dart", "none"] and split_values(None) is None
    assert whole_numbers(["192,128", "64"], "--budget") == [192, 128, 64]
    config = ROOT / "configs" / "smoke_toy.yaml"
    both = [
        CliRunner().invoke(app, ["sweep", str(config), "--dry-run", "--output", str(tmp_path), *args])
        for args in (["--method", "scope,none", "--budget", "64"], ["--method", "scope", "--method", "none", "--budget", "64"])
    ]
    assert both[0].exit_code == 0, both[0].output
    assert both[0].output == both[1].output and "method=scope" in both[0].output


def test_old_spellings_still_work_with_a_deprecation_note(tmp_path):
    assert deprecation_notes(["bench", "--out=x", "--methods", "scope"]) == [
        "scope-eval bench: --out is deprecated, use --output",
        "scope-eval bench: --methods is deprecated, use --method",
    ]
    assert deprecation_notes(["sweep", "--output", "x"]) == []
    result = scope_eval_cli("toy-data", "--out-dir", str(tmp_path), "--check")
    assert "--out-dir is deprecated, use --output" in result.stderr
    assert "stale or missing toy data" in result.stderr and result.returncode == 1  # the old option still worked


def test_errors_go_to_stderr_with_a_non_zero_exit_and_paths_are_not_wrapped(tmp_path):
    missing = tmp_path / ("a_rather_long_folder_name_" * 4) / "sweep.yaml"
    result = scope_eval_cli("sweep", str(missing))
    assert result.returncode == 2 and result.stdout == ""
    assert str(missing) in result.stderr  # whole on one line, although stderr is no terminal (80 columns)
    report = scope_eval_cli("report", str(tmp_path / "nothing"))
    assert report.returncode == 2 and report.stdout == "" and "error:" in report.stderr


def test_isolation_is_chosen_on_the_command_line_as_in_the_config(tmp_path):
    """--isolation process: one lmms-eval launch per cell group; worker (the default): one model load."""
    config = ROOT / "configs" / "smoke_toy.yaml"

    def dry_run(*args: str) -> str:
        result = CliRunner().invoke(app, ["sweep", str(config), "--dry-run", "--output", str(tmp_path), *args])
        assert result.exit_code == 0, result.output
        return result.output

    assert "in one worker process (one model load)" in dry_run() and "scope_eval.sweeps.worker" in dry_run("--isolation", "worker")
    assert "scope_eval.sweeps.worker" not in dry_run("--isolation", "process")
    refused = CliRunner().invoke(app, ["sweep", str(config), "--dry-run", "--isolation", "threads"])
    assert refused.exit_code == 2 and "isolation must be one of worker, process" in refused.output


def test_parallel_cells_spreads_whole_cells_over_workers_and_names_its_limits(tmp_path):
    """--parallel cells with --num-processes 2: two one-process workers share the cells; documents (the
    default): one accelerate launch whose ranks split every cell. Bad combinations name the fix."""
    config = ROOT / "configs" / "toy_llava15.yaml"

    def invoke(*args: str):
        return CliRunner().invoke(app, ["sweep", str(config), "--dry-run", "--output", str(tmp_path), "--method", "none", *args])

    cells = invoke("--num-processes", "2", "--parallel", "cells")
    assert cells.exit_code == 0, cells.output
    assert "in 2 worker processes sharing the cells" in cells.output and "accelerate" not in cells.output
    documents = invoke("--num-processes", "2", "--parallel", "documents")
    assert "in one worker process" in documents.output and "accelerate.commands.launch" in documents.output
    refused = invoke("--parallel", "threads")
    assert refused.exit_code == 2 and "parallel must be one of documents, cells" in refused.output
    refused = invoke("--parallel", "cells", "--isolation", "process")
    assert refused.exit_code == 2 and "parallel: cells needs isolation: worker" in refused.output
    # a config that says cells, run with --isolation process: each lmms-eval launch is data parallel
    process = invoke("--num-processes", "2", "--isolation", "process")
    assert process.exit_code == 0 and "accelerate.commands.launch" in process.output, process.output


@pytest.mark.slow
def test_several_configs_in_one_sweep_command_share_their_two_workers(tmp_path):
    """`scope-eval sweep A.yaml B.yaml` (what `make demo` runs): every config checked before anything runs,
    then each sweep in turn, with --parallel cells on the same two worker processes (each loading the next
    model itself); each sweep's own score table."""
    llava, qwen = ROOT / "configs" / "smoke_toy.yaml", ROOT / "configs" / "toy_qwen2_vl.yaml"
    common = ["--output", str(tmp_path / "runs"), "--method", "none,scope", "--task", "scope_toy_pope", "--limit", "2"]
    bad = scope_eval_cli("sweep", str(llava), str(tmp_path / "missing.yaml"), *common)
    assert bad.returncode == 2 and "missing.yaml" in bad.stderr and not (tmp_path / "runs").exists(), bad.stderr
    plan = scope_eval_cli("sweep", str(llava), str(qwen), *common, "--num-processes", "2", "--dry-run")
    assert plan.returncode == 0 and "toy-llava15" in plan.stdout and "toy-qwen2-vl" in plan.stdout, plan.stderr
    result = scope_eval_cli("sweep", str(llava), str(qwen), *common, "--num-processes", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("scores: ") == 2 and result.stdout.count("model loaded once") == 4
    workers = {}
    for model in ("toy-llava15_limit2", "toy-qwen2-vl_limit2"):
        assert len(list((tmp_path / "runs" / model).rglob("cell.json"))) == (2 if "llava" in model else 3)
        for events in (tmp_path / "runs" / model).glob(".worker*/events.jsonl"):
            loads = [json.loads(line) for line in events.read_text().splitlines() if '"loaded"' in line]
            workers.setdefault(model, set()).update(load["pid"] for load in loads)
    assert len(workers["toy-llava15_limit2"]) == 2 and workers["toy-qwen2-vl_limit2"] == workers["toy-llava15_limit2"], workers
