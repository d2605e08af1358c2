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


MY_TASK_YAML = """\
# A benchmark of one's own: one YAML outside the package, the template's functions reused by module path.
task: my_shapes
dataset_path: parquet
dataset_kwargs: {data_files: {test: my_shapes.parquet}}
test_split: test
output_type: generate_until
doc_to_visual: !function scope_eval.lmms.tasks._template.utils.doc_to_visual
doc_to_text: !function scope_eval.lmms.tasks._template.utils.doc_to_text
doc_to_target: answer
generation_kwargs: {max_new_tokens: 8, temperature: 0, do_sample: false}
process_results: !function scope_eval.lmms.tasks._template.utils.process_results
metric_list:
  - {metric: exact_match, aggregation: mean, higher_is_better: true}
lmms_eval_specific_kwargs:
  default: {pre_prompt: "", post_prompt: "\\nAnswer the question using a single word or phrase."}
metadata: {version: 0.0, display_name: My-Shapes, scale: 100, chance: 50}
"""


def write_questions(folder: Path) -> Path:
    """Four yes/no questions on two pictures of the toy's own kind (scope_eval.toy.scene)."""
    from scope_eval.toy import scene

    (folder / "photos").mkdir(parents=True)
    scene([("red", "circle", "left"), ("blue", "square", "right")]).save(folder / "photos" / "a.png")
    scene([("green", "triangle", "center")]).save(folder / "photos" / "b.png")
    questions = [
        {"image": "a.png", "question": "Is there a red circle in the image?", "answer": "yes"},
        {"image": "a.png", "question": "Is there a green triangle in the image?", "answer": "no"},
        {"image": "b.png", "question": "Is there a green triangle in the image?", "answer": "yes"},
        {"image": "b.png", "question": "Is there a blue square in the image?", "answer": "no"},
    ]
    path = folder / "questions.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in questions))
    return path


def test_a_benchmark_of_ones_own_in_four_steps_outside_the_package(tmp_path):
    """1 make the parquet, 2 write the task YAML, 3 sweep with --include-path, 4 report: no file in the package."""
    questions = write_questions(tmp_path)
    tasks = tmp_path / "my_tasks"
    env = child_env(tmp_path)

    def scope_eval(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "scope_eval", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)

    step1 = scope_eval("make-task-data", str(questions), "--images", str(tmp_path / "photos"), "--output", str(tasks / "my_shapes.parquet"))
    assert step1.returncode == 0 and "4 questions" in step1.stdout, step1.stderr
    (tasks / "my_shapes.yaml").write_text(MY_TASK_YAML)  # step 2
    checked = scope_eval("validate-tasks", "--include-path", str(tasks))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    runs = tmp_path / "runs"
    plan = scope_eval("sweep", str(REPO / "configs" / "smoke_toy.yaml"), "--include-path", str(tasks), "--task", "my_shapes",
                      "--output", str(runs), "--dry-run")  # fmt: skip
    assert plan.returncode == 0 and "--tasks my_shapes" in plan.stdout, plan.stderr
    step3 = scope_eval("sweep", str(REPO / "configs" / "smoke_toy.yaml"), "--include-path", str(tasks), "--task", "my_shapes",
                       "--output", str(runs), "--limit", "4")  # fmt: skip
    assert step3.returncode == 0, step3.stdout[-3000:] + step3.stderr[-3000:]
    cell = runs / "toy-llava15_limit4" / "scope" / "b64" / "my_shapes"
    record = json.loads((cell / "cell.json").read_text())
    assert record["n_samples"] == 4 and record["config"]["include_path"] == str(tasks.resolve())
    assert len((cell / "samples_my_shapes.jsonl").read_text().splitlines()) == 4
    step4 = scope_eval("report", str(runs), timeout=300)
    assert step4.returncode == 0, step4.stderr
    assert "My-Shapes" in step4.stdout  # the YAML's display name, in percent with an interval
    table = (runs / "report" / "table_toy-llava15_limit4.csv").read_text()
    assert "My-Shapes" in table
    assert not any(Path(p).is_relative_to(REPO / "scope_eval") for p in (tasks, questions))
