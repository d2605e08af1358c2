"""Issue 11, harness side: every bad input a clear error naming the fix, every damaged or interrupted run
detected. Fast tests use the fake lmms-eval (tests/fake_lmms_eval.py); the damaged-file tests at the end
work on a real sweep folder of the trained toy model (configs/smoke_toy.yaml)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from lmms_eval.utils import simple_parse_args_string
from typer.testing import CliRunner

from scope_eval.cli import app
from scope_eval.sweeps import runner
from scope_eval.pruning import build_method
from scope_eval.sweeps.cells import CELL_FILE, cell_dir, expand, lmms_eval_command
from scope_eval.sweeps.config import SweepConfigError, load_sweep, sweep_from_dict
from scope_eval.reports.regression import measured
from scope_eval.sweeps.runner import SweepSetupError, describe_plan, run_sweep, stop_stale_child
from test_sweep_runner import FAKE, fake, quiet, snapshot, sweep_data

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "scope_eval" / "toy" / "weights" / "llava15"


def cli(*args: str, cwd: Path = REPO, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scope_eval", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


# --- sweep config shapes and what --dry-run can know ------------------------------------------------------


@pytest.mark.parametrize(
    "change, words",
    [
        ({"budgets": 64}, ["budgets: must be a list, got 64", "budgets: [192, 128, 64]"]),
        ({"tasks": "gqa"}, ["tasks: must be a list, got 'gqa'"]),
        ({"gen_kwargs": ["max_new_tokens"]}, ["gen_kwargs: must be a mapping of name: value", "max_new_tokens: 16"]),
        ({"methods": [{"name": "scope", "options": ["alpha", 1]}]}, ["methods[0]: options: must be a mapping"]),
        ({"model": {"name": "m", "backend": "llava_hf_scope", "pretrained": "org/m", "family": "llava-1.5",
                    "model_args": ["device", "cpu"]}}, ["model: model_args: must be a mapping", "device: cpu"]),
        ({"model": {"name": "m", "backend": "llava_hf_scope", "pretrained": "/ckpt,v2", "family": "llava-1.5"}},
         ["contains ',', where lmms-eval splits", "rename or symlink"]),
        ({"model": {"name": "m", "backend": "llava_hf_scope", "pretrained": "/no/such/checkpoint", "family": "llava-1.5"}},
         ["model.pretrained /no/such/checkpoint is not a folder", "hub id"]),
        ({"model": {"name": "m", "backend": "llava_hf_scope", "pretrained": "org/m", "family": "llava-1.5",
                    "model_args": {"device_map": "cpu"}}}, ["device_map is cpu but device is not set", "add device: cpu"]),
        ({"model": {"name": "m", "backend": "llava_hf_scope", "pretrained": str(TOY), "family": "llava-next"}, "budgets": [640]},
         ["gives 576 visual tokens per image, but family llava-next has 2880", "set model.family"]),
        ({"methods": [{"name": "visionzip", "options": {"contextual": 100}}], "budgets": [64]},
         ["method visionzip_contextual100 at budget 64", "contextual=100 exceeds the budget 64"]),
    ],
)  # fmt: skip
def test_bad_sweep_config_names_file_field_and_fix(tmp_path, change, words):
    path = write_yaml(tmp_path / "sweep.yaml", sweep_data(tmp_path / "runs", **change))
    with pytest.raises(SweepConfigError) as error:
        load_sweep(path)
    assert str(error.value).startswith(str(path)), error.value
    for word in words:
        assert word in str(error.value)
    result = CliRunner().invoke(app, ["sweep", str(path), "--dry-run"])
    assert result.exit_code == 2 and words[0] in " ".join(result.output.split()), result.output


def test_checkpoint_written_with_a_slash_or_through_a_symlink_is_the_same_model(tmp_path):
    link = tmp_path / "toy_link"
    link.symlink_to(TOY)
    model = {"name": "toy", "backend": "llava_hf_scope", "pretrained": str(TOY), "family": "llava-1.5"}
    config = sweep_from_dict(sweep_data(tmp_path / "runs", model=model, methods=["none"], tasks=["gqa"]))
    assert run_sweep(config, fake(), quiet()).ok
    before = snapshot(tmp_path / "runs")
    for spelling in (str(TOY) + "/", str(link), str(link) + "/"):
        same = sweep_from_dict(sweep_data(tmp_path / "runs", model={**model, "pretrained": spelling}, methods=["none"], tasks=["gqa"]))
        assert same.model.pretrained == str(TOY.resolve())
        summary = run_sweep(same, fake(), quiet())
        assert summary.ok and len(summary.skipped) == 1 and not summary.failed, summary.failed
    assert snapshot(tmp_path / "runs") == before


# --- output folder and evaluator ----------------------------------------------------------------------------


def test_output_under_a_regular_file_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    config = sweep_from_dict(sweep_data(tmp_path / "file" / "runs"))
    for attempt in (lambda: run_sweep(config, fake(), quiet()), lambda: describe_plan(config, fake())):
        with pytest.raises(SweepSetupError, match=r"file is a file, not a folder; pass another --output"):
            attempt()
    path = write_yaml(tmp_path / "sweep.yaml", sweep_data(tmp_path / "file" / "runs"))
    result = cli("sweep", str(path), "--evaluator", f"{sys.executable} {FAKE}")
    assert result.returncode == 2 and "not a folder; pass another --output" in " ".join(result.stderr.split())


def test_read_only_output_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "ro").mkdir()
    real_access = os.access
    # the tests may run as root, which ignores permission bits: a read-only mount is simulated instead
    monkeypatch.setattr(runner.os, "access", lambda path, mode: False if Path(path) == tmp_path / "ro" else real_access(path, mode))
    config = sweep_from_dict(sweep_data(tmp_path / "ro" / "runs"))
    with pytest.raises(SweepSetupError, match=r"ro is not writable; pass a writable --output"):
        run_sweep(config, fake(), quiet())


def test_missing_evaluator_program_is_a_clear_error(tmp_path):
    path = write_yaml(tmp_path / "sweep.yaml", sweep_data(tmp_path / "runs"))
    for extra in ([], ["--dry-run"]):
        result = cli("sweep", str(path), "--evaluator", "/no/such/python -m lmms_eval", *extra)
        text = " ".join(result.stderr.split())
        assert result.returncode == 2 and "evaluator program '/no/such/python' not found" in text and "-m lmms_eval" in text
        assert "Traceback" not in result.stdout + result.stderr
    assert not list((tmp_path / "runs").rglob(CELL_FILE))


# --- lost or repeated work -----------------------------------------------------------------------------------


def test_cell_folder_without_cell_json_is_moved_aside_and_recomputed(tmp_path):
    config = sweep_from_dict(sweep_data(tmp_path, methods=["none"], tasks=["gqa"]))
    folder = cell_dir(config, expand(config)[0])
    folder.mkdir(parents=True)
    (folder / "leftover.txt").write_text("half a copy")
    for _ in range(2):  # the second run finds it finished
        summary = run_sweep(config, fake(), quiet())
        assert summary.ok, summary.failed
    assert (folder / CELL_FILE).is_file()
    kept = list(folder.parent.glob(".damaged-gqa-*/leftover.txt"))
    assert len(kept) == 1 and kept[0].read_text() == "half a copy"


def test_write_error_fails_that_cell_and_the_sweep_goes_on(tmp_path, monkeypatch):
    original = runner.write_json_atomic

    def full_disk_for_gqa(path: Path, data: dict) -> None:
        if path.name == CELL_FILE and data["cell"]["task"] == "gqa":
            raise OSError(errno.ENOSPC, "No space left on device")
        original(path, data)

    monkeypatch.setattr(runner, "write_json_atomic", full_disk_for_gqa)
    config = sweep_from_dict(sweep_data(tmp_path))
    summary = run_sweep(config, fake(), quiet())
    assert sorted(c.task for c in summary.finished) == ["mme", "mme"]
    assert [c.task for c, _ in summary.failed] == ["gqa", "gqa"]
    assert "could not store the cell: [Errno 28] No space left on device" in summary.failed[0][1]


TRUNCATING_EVALUATOR = """
import runpy, sys
from pathlib import Path
sys.argv = [sys.argv[1]] + sys.argv[2:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit:
    pass
for results in Path(sys.argv[sys.argv.index("--output_path") + 1]).rglob("*_results.json"):
    if "gqa" in sys.argv[sys.argv.index("--tasks") + 1]:
        results.write_text(results.read_text()[:40])  # the disk filled up mid-write
"""


def test_truncated_results_json_fails_the_cell_and_the_sweep_goes_on(tmp_path):
    script = tmp_path / "truncating.py"
    script.write_text(TRUNCATING_EVALUATOR)
    config = sweep_from_dict(sweep_data(tmp_path / "runs"))
    summary = run_sweep(config, [sys.executable, str(script), str(FAKE)], quiet())
    assert sorted(c.task for c in summary.finished) == ["mme", "mme"]
    assert [c.task for c, _ in summary.failed] == ["gqa", "gqa"]
    assert "is unreadable or truncated (full disk?)" in summary.failed[0][1]
    failure = json.loads(next((tmp_path / "runs").rglob(runner.FAILURE_FILE)).read_text())
    assert failure["failures"][0]["cell"]["task"] == "gqa" and "truncated" in failure["failures"][0]["reason"]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigkill_of_the_sweep_also_ends_its_lmms_eval_child(tmp_path):
    path = write_yaml(tmp_path / "sweep.yaml", sweep_data(tmp_path / "runs", methods=["none"], tasks=["gqa"]))
    command = [sys.executable, "-m", "scope_eval", "sweep", str(path), "--evaluator", f"{sys.executable} {FAKE} --sleep 60"]
    sweep = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not list((tmp_path / "runs").rglob(".tmp-*/" + runner.CHILD_FILE)):
            assert sweep.poll() is None and time.monotonic() < deadline, "the sweep never started its child"
            time.sleep(0.05)
        child = json.loads(next((tmp_path / "runs").rglob(".tmp-*/" + runner.CHILD_FILE)).read_text())["pgid"]
        assert _alive(child)
    finally:
        sweep.send_signal(signal.SIGKILL)  # the sweep alone: no chance to stop its child itself
        sweep.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the lmms-eval child outlived the killed sweep"


def test_rerun_stops_a_child_left_running_by_a_killed_sweep(tmp_path):
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    leftover = subprocess.Popen(sleeper, start_new_session=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "other"], start_new_session=True)
    try:
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / runner.CHILD_FILE).write_text(json.dumps({"pgid": leftover.pid, "command": sleeper}))
        (tmp_path / "reused").mkdir()  # its id was reused by another program: left alone
        (tmp_path / "reused" / runner.CHILD_FILE).write_text(json.dumps({"pgid": other.pid, "command": sleeper}))
        stop_stale_child(tmp_path / "mine")
        stop_stale_child(tmp_path / "reused")
        assert leftover.wait(timeout=10) == -signal.SIGKILL
        assert other.poll() is None
    finally:
        for process in (leftover, other):
            process.kill()
            process.wait()


# --- report ---------------------------------------------------------------------------------------------------


def test_report_names_failed_and_missing_cells_and_rejects_unknown_filters(tmp_path):
    runs = tmp_path / "runs"
    config = sweep_from_dict(sweep_data(runs, methods=["none", "scope", "random"]))
    run_sweep(config, fake("--broken", "mme"), quiet())  # every mme cell fails
    shutil.rmtree(runs / "tiny" / "random" / "b64" / ".tmp-mme")  # one failed cell leaves no trace: "not run"
    result = cli("report", str(runs), "--output", str(tmp_path / "report"))
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "3 cell(s) not in this table" in text
    assert "none 576 mme: failed (metric(s) mme_perception_score,none" in text
    assert "scope 64 mme: failed" in text and "random 64 mme: not run" in text
    assert "3 cell(s) missing, failed or damaged" in result.stderr
    assert "random 64 mme: not run" in (tmp_path / "report" / "table_tiny.md").read_text()

    bogus = cli("report", str(runs), "--method", "bogus")
    assert bogus.returncode == 2 and "--method bogus is in none of the cells; known: none, random, scope" in bogus.stderr
    assert "| method" not in bogus.stdout
    bogus_budget = cli("report", str(runs), "--budget", "65")
    assert bogus_budget.returncode == 2 and "--budget 65 is in none of the cells; known: 64, 576" in bogus_budget.stderr
    (tmp_path / "a_file").write_text("x")
    as_file = cli("report", str(runs), "--output", str(tmp_path / "a_file"))
    assert as_file.returncode == 2 and "--output" in as_file.stderr and "is a file; pass a folder" in as_file.stderr


# --- regress ---------------------------------------------------------------------------------------------------


def regression_files(tmp_path: Path, **changes) -> Path:
    write_yaml(tmp_path / "sweep.yaml", sweep_data(tmp_path / "unused", methods=["none", "scope"], budgets=[64, 128]))
    regression = {"sweeps": ["sweep.yaml"], "baseline": "baseline.json", "tolerance": 3.0, **changes}
    return write_yaml(tmp_path / "regression.yaml", regression)


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"tasks": ["gqa_typo"]}, "tasks gqa_typo are in none of its sweeps; they have: gqa, mme"),
        ({"budgets": [46]}, "budgets 46 are in none of its sweeps; they have: 64, 128"),
        ({}, "baseline.json' does not exist; create it with `scope-eval regress CONFIG --update-baseline`"),
    ],
)
def test_regress_fails_before_running_anything(tmp_path, changes, words):
    config = regression_files(tmp_path, **changes)
    if changes:
        metric = {"model": "tiny", "method_label": "none", "budget": 576, "task": "gqa", "benchmark": "GQA", "value": 80.0}
        (tmp_path / "baseline.json").write_text(json.dumps({"limit": None, "metrics": [metric]}))
    result = cli("regress", str(config), "--runs", str(tmp_path / "runs"))
    assert result.returncode == 2 and words in " ".join(result.stderr.split()), result.stdout + result.stderr
    assert not (tmp_path / "runs").exists(), "nothing may run before the config and the baseline are checked"


@pytest.mark.parametrize("content", ['{"metrics": [{"model": "toy", "val', '{"limit": null}', "[1, 2]"])
def test_corrupt_regress_baseline_is_a_clear_error(tmp_path, content):
    config = regression_files(tmp_path)
    (tmp_path / "baseline.json").write_text(content)
    result = cli("regress", str(config), "--runs", str(tmp_path / "runs"))
    text = " ".join(result.stderr.split())
    assert result.returncode == 2 and "baseline.json" in text and "--update-baseline" in text, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_regress_compares_only_the_runs_at_its_limit(tmp_path):
    """The same model at another --limit in the same runs folder must not stand in for the checked run."""
    runs = tmp_path / "runs"
    for limit in (4, 8):
        assert run_sweep(sweep_from_dict(sweep_data(runs, limit=limit)), fake(), quiet()).ok
    for limit in (4, 8):
        table = measured(runs, limit)
        assert len(table) == 4 and table.duplicated(["model", "method_label", "budget", "task", "benchmark"]).sum() == 0
    assert measured(runs, None).empty


# --- bench ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, words",
    [
        (["--threads", "0"], "--threads must be at least 1, got 0"),
        (["--attention", "bogus"], "unknown --attention 'bogus'; choose one of: sdpa, eager"),
        (["--device", "foo"], "unknown --device 'foo'; use cpu, cuda or cuda:N"),
    ],
)
def test_bench_bad_arguments_are_clear_errors(args, words):
    result = CliRunner().invoke(app, ["bench", "--shape", "tiny-llava-1.5", "--methods", "scope", "--budgets", "8", *args])
    assert result.exit_code == 2 and words in result.output, result.output
    assert not isinstance(result.exception, (RuntimeError, ValueError))


# --- damaged cells of a real sweep of the trained toy model -----------------------------------------------------


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory) -> Path:
    """configs/smoke_toy.yaml run for real (the toy LLaVA-1.5 through lmms-eval): none and scope@64."""
    runs = tmp_path_factory.mktemp("toy") / "runs"
    result = cli("sweep", str(REPO / "configs" / "smoke_toy.yaml"), "--output", str(runs), timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return runs


def damage(runs: Path) -> dict[str, Path]:
    """Three kinds of damage, one per cell folder: a truncated results json, zeroed numbers in cell.json,
    a truncated cell.json (a third cell made by copying the scope one under another budget)."""
    run = runs / "toy-llava15_limit8"
    truncated_results = next((run / "scope" / "b64" / "scope_toy_pope" / "lmms").rglob("*_results.json"))
    truncated_results.write_text(truncated_results.read_text()[:100])
    zeroed = run / "none" / "full" / "scope_toy_pope" / CELL_FILE
    record = json.loads(zeroed.read_text())
    record["results"] = {key: 0.0 if isinstance(value, float) else value for key, value in record["results"].items()}
    zeroed.write_text(json.dumps(record, indent=2))
    shutil.copytree(run / "scope" / "b64", run / "scope" / "b32")
    cut = run / "scope" / "b32" / "scope_toy_pope" / CELL_FILE
    cut.write_text(cut.read_text()[:300])
    return {"results": truncated_results, "zeroed": zeroed, "cut": cut}


@pytest.mark.slow
def test_report_excludes_and_names_damaged_cells_of_a_real_sweep(toy_runs, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(toy_runs, runs)
    intact = cli("report", str(runs))
    assert intact.returncode == 0 and "not in this table" not in intact.stdout, intact.stdout
    damaged = damage(runs)
    result = cli("report", str(runs))
    text = " ".join(result.stdout.split()) + " ".join(result.stderr.split())
    assert result.returncode == 2 and "no finished cells" in text  # all three damaged: nothing to count
    assert f"{damaged['results']} was changed or truncated after the cell finished" in text
    assert f"{damaged['zeroed']} was changed after it was written" in text
    assert f"{damaged['cut']} is not valid JSON (truncated?)" in text
    assert "0.0" not in result.stdout


@pytest.mark.slow
def test_sweep_reruns_a_damaged_cell_of_a_real_sweep_and_keeps_the_intact_one(toy_runs, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(toy_runs, runs)
    run = runs / "toy-llava15_limit8"
    intact = snapshot(run / "none")
    truncated = next((run / "scope" / "b64" / "scope_toy_pope" / "lmms").rglob("*_results.json"))
    original = truncated.read_text()
    truncated.write_text(original[:100])
    sweep = ["sweep", str(REPO / "configs" / "smoke_toy.yaml"), "--output", str(runs)]
    plan = cli(*sweep, "--dry-run")
    assert plan.returncode == 0 and "1 finished, 0 in conflict, 1 to run" in plan.stdout
    assert f"# damaged, will be moved aside and run again: {truncated} was changed or truncated" in plan.stdout
    result = cli(*sweep, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "damaged" in result.stdout and "1 already finished" in " ".join(result.stdout.split())
    assert snapshot(run / "none") == intact
    redone = json.loads((run / "scope" / "b64" / "scope_toy_pope" / CELL_FILE).read_text())
    assert redone["results"] == json.loads(original)["results"]["scope_toy_pope"]  # deterministic: same numbers
    assert len(list((run / "scope" / "b64").glob(".damaged-scope_toy_pope-*/lmms"))) == 1
    report = cli("report", str(runs))
    assert report.returncode == 0 and "not in this table" not in report.stdout


# --- issue 22: new surfaces (plugins, bench options, sweep pre-load checks, report rows, the seal) -------------

BROKEN_PLUGINS = [  # (what is wrong, the module's source, its entry point)
    ("raises on import", "raise RuntimeError('the plugin is broken')\n", "broken = broken_plugin"),
    ("re-registers scope", "from dataclasses import dataclass\nfrom scope_eval.pruning import PruningMethod, register\n"
     "@register\n@dataclass\nclass Again(PruningMethod):\n    name = 'scope'\n", "broken = broken_plugin"),
    ("has no name", "from dataclasses import dataclass\nfrom scope_eval.pruning import PruningMethod, register\n"
     "@register\n@dataclass\nclass Nameless(PruningMethod):\n    pass\n", "broken = broken_plugin"),
    ("names a missing attribute", "x = 1\n", "broken = broken_plugin:missing"),
]  # fmt: skip


def install_broken_plugin(site: Path, source: str, entry_point: str) -> dict[str, str]:
    """The module and dist-info metadata `pip install` of package broken-plugin would leave; the environment
    of a child that sees it."""
    from scope_eval.pruning.methods import ENTRY_POINT_GROUP

    (site / "broken_plugin.py").write_text(source)
    info = site / "broken_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry_point}\n")
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO)]))


PLUGIN_PROBE = """
import json
from scope_eval.pruning import METHODS, PruningError, build_method
build_method("scope", alpha=0.5)  # unused by the broken plugin: works
try:
    build_method("broken")
    asked = "accepted"
except PruningError as error:
    asked = str(error)
print(json.dumps({"asked": asked, "scope": METHODS["scope"].__module__}))
"""


@pytest.mark.parametrize("source, entry_point", [p[1:] for p in BROKEN_PLUGINS], ids=[p[0] for p in BROKEN_PLUGINS])
def test_a_broken_plugin_warns_once_and_fails_only_when_asked_for(tmp_path, source, entry_point):
    env = install_broken_plugin(tmp_path, source, entry_point)
    result = subprocess.run([sys.executable, "-c", PLUGIN_PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    warned = [line for line in result.stderr.splitlines() if "pruning method plugin 'broken'" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: "), result.stderr[-3000:]  # once, though asked for twice
    assert "from broken-plugin failed to import" in warned[0] and "fix or uninstall that package" in warned[0]
    assert outcome["asked"].startswith("method 'broken' is unavailable: pruning method plugin 'broken'")
    assert "fix or uninstall that package" in outcome["asked"]
    assert outcome["scope"] == "scope_eval.pruning.methods.scope"  # the built-in, not the plugin's


def test_a_broken_plugin_leaves_sweeps_that_do_not_use_it_running(tmp_path):
    env = install_broken_plugin(tmp_path, BROKEN_PLUGINS[0][1], BROKEN_PLUGINS[0][2])
    unused = write_yaml(tmp_path / "unused.yaml", sweep_data(tmp_path / "runs"))
    used = write_yaml(tmp_path / "used.yaml", sweep_data(tmp_path / "runs", methods=["none", "broken"]))
    dry = [sys.executable, "-m", "scope_eval", "sweep", "--dry-run"]
    fine = subprocess.run([*dry, str(unused)], capture_output=True, text=True, env=env, timeout=300)
    assert fine.returncode == 0 and "plugin 'broken'" in fine.stderr and "Traceback" not in fine.stderr, fine.stderr[-3000:]
    refused = subprocess.run([*dry, str(used)], capture_output=True, text=True, env=env, timeout=300)
    text = " ".join((refused.stdout + refused.stderr).split())  # errors go to stderr
    assert refused.returncode == 2 and "method 'broken' is unavailable" in text and "from broken-plugin failed to import" in text
    assert "Traceback" not in refused.stdout + refused.stderr


def test_a_broken_plugin_fails_an_lmms_eval_run_that_asks_for_it_naming_the_package(tmp_path):
    env = install_broken_plugin(tmp_path, BROKEN_PLUGINS[0][1], BROKEN_PLUGINS[0][2])
    model_args = f"pretrained={TOY},method=broken,budget=64,device_map=cpu,device=cpu,dtype=float32"
    command = [sys.executable, "-m", "lmms_eval", "--model", "llava_hf_scope", "--model_args", model_args, "--tasks", "scope_toy_pope",
               "--include_path", str(REPO / "scope_eval" / "lmms" / "tasks"), "--limit", "1", "--output_path", str(tmp_path / "out")]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert result.returncode != 0 and "method 'broken' is unavailable" in result.stderr and "broken-plugin" in result.stderr
    assert not list((tmp_path / "out").rglob("*_results.json"))


@pytest.mark.parametrize(
    "args, words",
    [
        (["--method-option", "SCOPE.alpha=0"], "--method-option 'SCOPE.alpha=0' names no method 'SCOPE'; choose from: "),
        (["--method-option", "scoop.alpha=0"], "names no method 'scoop'; choose from: "),
        (["--method-option", "fastv.layer=1"], "is for fastv, which is not in --methods (scope); add fastv to --methods or drop the option"),
    ],
    ids=["case", "misspelt", "not-benchmarked"],
)
def test_bench_method_option_for_no_benchmarked_method_is_refused(args, words):
    result = CliRunner().invoke(app, ["bench", "--shape", "tiny-llava-1.5", "--methods", "scope", "--budgets", "8", *args])
    assert result.exit_code == 2 and words in " ".join(result.output.split()), result.output


def test_bench_selection_bad_device_is_a_clear_error():
    result = CliRunner().invoke(app, ["bench-selection", "--device", "foo"])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "unknown --device 'foo'; use cpu, cuda or cuda:N" in text, result.output
    assert not isinstance(result.exception, RuntimeError)


TOY_MODEL = {"name": "toy", "backend": "llava_hf_scope", "pretrained": str(TOY), "family": "llava-1.5"}


@pytest.mark.parametrize(
    "change, words",
    [
        ({"model": TOY_MODEL, "methods": [{"name": "fastv", "options": {"layer": 3}}], "budgets": [400]},
         ["(", "3 decoder layers): layer 3 is beyond this language model's 3 decoder layers (0..2); pass layer <= 2"]),
        ({"model": TOY_MODEL, "methods": ["fastv"], "budgets": [64]},
         ["method fastv at budget 64", "raise the budget to >= 385, drop at an earlier layer, or pass budget_unit=after_layer"]),
        ({"model": TOY_MODEL, "methods": [{"name": "cdpruner", "options": {"text_encoder": str(TOY)}, "label": "cdp"}]},
         ["is a llava checkpoint (config.json model_type), not a CLIP model", "openai/clip-vit-large-patch14-336"]),
        ({"model": TOY_MODEL, "methods": [{"name": "cdpruner", "options": {"text_encoder": "/no/such/clip"}, "label": "cdp"}]},
         ["text_encoder='/no/such/clip' is not a folder"]),
        ({"model": {**TOY_MODEL, "backend": "llava_scope"}, "methods": [{"name": "cdpruner", "options": {"text_encoder": str(TOY.parent / "clip_text")}, "label": "cdp"}]},
         ["original-LLaVA adapter cannot decode", "run it on the transformers backend (model llava_hf_scope"]),
        ({"methods": [{"name": "cdpruner", "options": {"text_encoder": "/models/clip"}}]},
         ["add `label: <name>` to this entry, e.g. label: cdpruner"]),
        ({"model": {**TOY_MODEL, "pretrained": str(TOY.parent / "llava_next"), "family": "llava-next"}, "budget_policy": "global", "budgets": [640],
          "methods": [{"name": "visionzip", "options": {"crop_split": "official"}}]},
         ["budget_policy=global selects over all crops at once; drop crop_split or use per_crop"]),
    ],
    ids=["drop-layer-beyond-depth", "layer-average-budget-too-low", "llava-folder-as-text-encoder", "missing-text-encoder",
         "cdpruner-on-original-backend", "cdpruner-without-label", "visionzip-crop-split-under-global"],
)  # fmt: skip
def test_dry_run_runs_the_checks_the_lmms_eval_edge_runs_before_loading(tmp_path, change, words):
    path = write_yaml(tmp_path / "sweep.yaml", sweep_data(tmp_path / "runs", **change))
    with pytest.raises(SweepConfigError) as error:
        load_sweep(path)
    for word in words:
        assert word in str(error.value), error.value
    result = CliRunner().invoke(app, ["sweep", str(path), "--dry-run"])
    assert result.exit_code == 2 and words[-1] in " ".join(result.output.split()), result.output


def test_dry_run_refuses_a_clip_text_encoder_without_the_weights_it_needs(tmp_path):
    from safetensors.torch import load_file, save_file

    clip = tmp_path / "clip"
    shutil.copytree(TOY.parent / "clip_text", clip)
    weights = load_file(clip / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("visual_projection.")}, clip / "model.safetensors")
    methods = [{"name": "cdpruner", "options": {"text_encoder": str(clip)}, "label": "cdp"}]
    path = write_yaml(tmp_path / "sweep.yaml", sweep_data(tmp_path / "runs", model=TOY_MODEL, methods=methods))
    result = CliRunner().invoke(app, ["sweep", str(path), "--dry-run"])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "holds no visual_projection weights, which transformers would fill with random values" in text, text
    intact = write_yaml(tmp_path / "intact.yaml", sweep_data(tmp_path / "runs", model=TOY_MODEL, methods=[
        {"name": "cdpruner", "options": {"text_encoder": str(TOY.parent / "clip_text")}, "label": "cdp"}]))
    assert CliRunner().invoke(app, ["sweep", str(intact), "--dry-run"]).exit_code == 0


def test_pdrop_layers_as_a_list_in_a_sweep_config_run_as_the_api_takes_them(tmp_path):
    config = sweep_from_dict(sweep_data(tmp_path, methods=[{"name": "pdrop", "options": {"layers": [1, 2]}}]))
    method = config.methods[0]
    assert method.label == "pdrop_layers1-2" and method.options == {"layers": "1-2"}
    command = lmms_eval_command(config, method, 64, ["gqa"], tmp_path / "work")
    model_args = simple_parse_args_string(command[command.index("--model_args") + 1])  # as lmms-eval reads them
    assert build_method("pdrop", layers=model_args["layers"]).layers == build_method("pdrop", layers=[1, 2]).layers == (1, 2)


def test_checkpoint_path_with_an_equals_sign_reaches_lmms_eval_intact(tmp_path):
    link = tmp_path / "ckpt=v2"
    link.symlink_to(TOY)
    model = {**TOY_MODEL, "pretrained": str(link)}
    config = sweep_from_dict(sweep_data(tmp_path / "runs", model=model, methods=["none"]))
    command = lmms_eval_command(config, config.methods[0], None, ["gqa"], tmp_path / "work")
    assert simple_parse_args_string(command[command.index("--model_args") + 1])["pretrained"] == str(TOY.resolve())
    unresolved = sweep_from_dict(sweep_data(tmp_path / "runs", model={**TOY_MODEL, "pretrained": "org/model=v2"}, methods=["none"]))
    command = lmms_eval_command(unresolved, unresolved.methods[0], None, ["gqa"], tmp_path / "work")
    assert simple_parse_args_string(command[command.index("--model_args") + 1])["pretrained"] == "org/model=v2"


def test_two_processes_are_launched_as_two_processes(tmp_path):
    config = sweep_from_dict(sweep_data(tmp_path, num_processes=2, methods=["none"]))
    command = lmms_eval_command(config, config.methods[0], None, ["gqa"], tmp_path / "work")
    # accelerate runs one process on a machine with fewer than two GPUs unless its multi-process launcher is
    # asked for; tests/test_plugin_cli.py runs it on the CPU and finds the one-process numbers
    assert command[1:6] == ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]


# report rows: one setting and one checkpoint each
def test_report_refuses_a_row_that_would_mix_options(tmp_path):
    runs = tmp_path / "runs"
    assert run_sweep(sweep_from_dict(sweep_data(runs, methods=["none", "scope"], budgets=[64, 128])), fake(), quiet()).ok
    same = sweep_from_dict(sweep_data(runs, methods=[{"name": "scope", "options": {"alpha": 1.0}, "label": "scope"}], budgets=[192]))
    assert run_sweep(same, fake(), quiet()).ok  # alpha written out at its default: the same setting
    assert cli("report", str(runs)).returncode == 0
    other = sweep_from_dict(sweep_data(runs, methods=[{"name": "scope", "options": {"alpha": 0.0}, "label": "scope"}], budgets=[32]))
    assert run_sweep(other, fake(), quiet()).ok
    result = cli("report", str(runs))
    text = " ".join(result.stderr.split())
    assert result.returncode == 2 and "row scope of run tiny would mix cells made with other settings" in text, result.stderr
    assert "alpha=0.0" in text and "alpha=1.0" in text and "give each variant its own label" in text
    assert "| scope" not in result.stdout


def test_report_refuses_a_table_of_two_checkpoints_and_names_the_checkpoint(tmp_path):
    runs = tmp_path / "runs"
    assert run_sweep(sweep_from_dict(sweep_data(runs, methods=["none", "scope"])), fake(), quiet()).ok
    result = cli("report", str(runs))
    assert result.returncode == 0 and "Checkpoint: org/tiny (backend llava_hf_scope)" in result.stdout
    assert "Checkpoint: org/tiny (backend llava_hf_scope)" in (runs / "report" / "table_tiny.md").read_text()
    other = {"name": "tiny", "backend": "llava_hf_scope", "pretrained": "org/other", "family": "llava-1.5"}
    assert run_sweep(sweep_from_dict(sweep_data(runs, model=other, methods=["scope"], budgets=[32])), fake(), quiet()).ok
    result = cli("report", str(runs))
    text = " ".join(result.stderr.split())
    assert result.returncode == 2 and "run tiny holds cells of 2 checkpoints: org/tiny" in text and "org/other" in text
    assert "give each checkpoint its own model.name" in text


# the seal covers every file a later command reads
def _one_cell(tmp_path: Path) -> tuple[Path, object]:
    config = sweep_from_dict(sweep_data(tmp_path / "runs", methods=["none"], tasks=["gqa"]))
    assert run_sweep(config, fake(), quiet()).ok
    return cell_dir(config, expand(config)[0]), config


def _edit_a_sample(folder: Path) -> str:
    samples = folder / json.loads((folder / CELL_FILE).read_text())["files"]["samples"]
    lines = samples.read_text().splitlines()
    sample = json.loads(lines[0])
    sample["resps"] = [["a hand-edited answer"]]
    samples.write_text("\n".join([json.dumps(sample), *lines[1:]]) + "\n")
    return f"{samples} was changed or truncated after the cell finished"


def _drop_the_seal(folder: Path) -> str:
    record = json.loads((folder / CELL_FILE).read_text())
    del record["integrity"]
    (folder / CELL_FILE).write_text(json.dumps(record))
    return f"{folder / CELL_FILE} has no seal"


@pytest.mark.parametrize("damage_cell", [_edit_a_sample, _drop_the_seal], ids=["edited-sample-line", "seal-deleted"])
def test_edited_samples_or_a_missing_seal_is_damage_reported_and_rerun(tmp_path, damage_cell):
    folder, config = _one_cell(tmp_path)
    reason = damage_cell(folder)
    report = cli("report", str(tmp_path / "runs"))
    assert report.returncode == 2 and reason in " ".join((report.stdout + report.stderr).split())
    summary = run_sweep(config, fake(), quiet())
    assert summary.ok and len(summary.finished) == 1 and reason in summary.damaged[0][1]
    assert len(list(folder.parent.glob(".damaged-gqa-*"))) == 1
    assert cli("report", str(tmp_path / "runs")).returncode == 0


# regression baselines record the environment
def test_regress_says_when_the_baseline_environment_differs_and_still_compares(tmp_path, monkeypatch):
    from scope_eval.reports import regression

    config = regression_files(tmp_path)
    metric = {"model": "tiny", "method_label": "none", "budget": 576, "task": "gqa", "benchmark": "GQA", "value": 80.0}
    current = pd.DataFrame([{**metric, "items": None}])
    regression.write_baseline(tmp_path / "baseline.json", current, regression.load_regression(config))
    recorded = json.loads((tmp_path / "baseline.json").read_text())["environment"]
    assert recorded == regression.recorded_environment() and recorded["versions"]["transformers"]
    monkeypatch.setattr(regression, "run_subset", lambda *args, **overrides: True)
    monkeypatch.setattr(regression, "measured", lambda *args: current)
    same = CliRunner().invoke(app, ["regress", str(config)])
    assert same.exit_code == 0 and "environment differs" not in same.output, same.output
    recorded["versions"]["transformers"] = "4.0.0"
    text = (tmp_path / "baseline.json").read_text()
    (tmp_path / "baseline.json").write_text(text.replace(json.dumps(regression.recorded_environment()["versions"]["transformers"]), '"4.0.0"', 1))
    differs = CliRunner().invoke(app, ["regress", str(config)])
    output = " ".join(differs.output.split())
    assert differs.exit_code == 0 and "ok: 1 metrics checked" in output, differs.output
    assert f"warning: environment differs from the baseline's: transformers 4.0.0 in the baseline, {regression.recorded_environment()['versions']['transformers']} now; compared anyway" in output


@pytest.mark.slow
def test_a_two_process_sweep_runs_two_cpu_processes_with_the_one_process_numbers(toy_runs, tmp_path):
    runs = tmp_path / "runs"
    # data parallel (the config itself spreads whole cells, each then in one process: tests/test_sweep_worker.py)
    result = cli("sweep", str(REPO / "configs" / "smoke_toy.yaml"), "--output", str(runs), "--num-processes", "2",
                 "--parallel", "documents", timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for one in sorted(toy_runs.rglob(CELL_FILE)):
        two = runs / one.relative_to(toy_runs)
        assert "Running on rank 1" in (two.parent / "lmms_eval.log").read_text()  # a second process, on the CPU
        first, second = json.loads(one.read_text()), json.loads(two.read_text())
        assert second["results"] == first["results"] and second["visual_tokens"] == first["visual_tokens"]
        assert second["n_samples"] == first["n_samples"] == 8
