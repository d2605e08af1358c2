"""The shipped include directory, local copies of the benchmarks, and `scope-eval validate-tasks`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import lmms_fixtures
from scope_eval.lmms.benchmarks import BENCHMARKS, DataSource, benchmark
from scope_eval.lmms.errors import RunAborted
from scope_eval.lmms.local_data import find_copies, find_copy, write_tasks_dir
from scope_eval.lmms.tasks import TASKS_DIR
from scope_eval.sweeps.metrics import averaged
from scope_eval.sweeps.tasks import yaml_metrics
from scope_eval.sweeps.validate_tasks import validate_directory


@pytest.fixture(scope="module")
def standins(tmp_path_factory) -> Path:
    return lmms_fixtures.write_standins(tmp_path_factory.mktemp("data"))


def test_every_shipped_task_yaml_is_valid():
    checks = validate_directory(TASKS_DIR)
    assert {b.task for b in BENCHMARKS} <= {c.name for c in checks}
    assert [(c.name, c.problems) for c in checks if not c.ok] == []
    hub = {c.name: c.data for c in checks if c.name.startswith("scope_") and c.name != "scope_template_example"}
    assert hub["scope_mme"] == "hub lmms-lab-encoder/MME (not checked offline)"


def test_paper_tasks_differ_from_builtins_where_the_paper_does():
    def read(name: str) -> dict:
        from scope_eval.lmms.local_data import _IgnoreFunctions

        return yaml.load(benchmark(name).yaml_path.read_text(), Loader=_IgnoreFunctions)

    assert read("textvqa_val")["lmms_eval_specific_kwargs"]["default"]["ocr"] is True
    assert "mme_total_score" in [m["metric"] for m in read("mme")["metric_list"]]
    assert read("seedbench")["lmms_eval_specific_kwargs"]["default"]["video_frames"] == "first"
    assert read("mmvet")["generation_kwargs"]["temperature"] == 0
    for bench in BENCHMARKS:
        config = read(bench.name)
        assert "token" not in (config.get("dataset_kwargs") or {}), bench.name
        # visual tokens reach the logged samples through the model wrapper alone (scope_eval.lmms.tracking)
        assert not any(m["metric"].startswith("visual_tokens") for m in config["metric_list"]), bench.name
        assert "process_docs" not in config or "visual_tokens" not in str(config["process_docs"]), bench.name


def test_local_copies_are_found_in_both_layouts(standins):
    found = {copy.benchmark.name: copy for copy in find_copies(standins)}
    assert all(copy.complete for copy in found.values()), {n: c.describe() for n, c in found.items() if not c.complete}
    assert found["pope"].data.saved_dir == (standins / "POPE").resolve()
    assert found["mmbench_en_dev"].data.parquet_files == ((standins / "MMBench/en/dev-00000-of-00001.parquet").resolve(),)
    assert found["gqa"].images.parquet_files[0].parent.name == "testdev_balanced_images"


def test_split_names_do_not_match_longer_ones(tmp_path):
    (tmp_path / "X" / "data").mkdir(parents=True)
    (tmp_path / "X" / "data" / "testdev-00000-of-00001.parquet").write_bytes(b"")
    assert find_copy(tmp_path, DataSource("org/X", None, "test")) is None
    assert find_copy(tmp_path, DataSource("org/X", None, "testdev")) is not None


def test_tasks_dir_points_the_same_task_names_at_local_copies(standins, tmp_path):
    output = tmp_path / "tasks"
    (output).mkdir()
    (output / "mine.yaml").write_text("task: my_own\n")  # not ours: must survive regeneration
    write_tasks_dir(standins, output)
    mme = yaml.safe_load((output / "scope_mme.yaml").read_text())
    assert mme["include"] == str(benchmark("mme").yaml_path) and mme["task"] == "scope_mme"
    assert mme["dataset_path"] == "parquet" and mme["dataset_name"] is None
    assert mme["dataset_kwargs"]["data_files"]["test"] == [str((standins / "MME/data/test-00000-of-00001.parquet").resolve())]
    gqa = yaml.safe_load((output / "scope_gqa.yaml").read_text())
    assert gqa["lmms_eval_specific_kwargs"]["default"]["gqa_images"]["parquet"][0].endswith("testdev-00000-of-00001.parquet")
    assert gqa["lmms_eval_specific_kwargs"]["default"]["post_prompt"].endswith("single word or phrase.")
    write_tasks_dir(standins, output)
    assert (output / "mine.yaml").exists()
    checks = validate_directory(output)
    assert [(c.name, c.problems) for c in checks if not c.ok and c.name != "my_own"] == []
    assert {c.name: c.data for c in checks}["scope_pope"] == f"save_to_disk {(standins / 'POPE').resolve()}"


def test_tasks_dir_command_reports_missing_benchmarks(tmp_path):
    from scope_eval.cli import app

    lmms_fixtures.mme(tmp_path / "data")
    result = CliRunner().invoke(app, ["tasks-dir", "--data-dir", str(tmp_path / "data"), "--output", str(tmp_path / "tasks")])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str((tmp_path / "tasks").resolve())
    assert "left out" in result.output and "GQA/" in result.output
    assert sorted(p.name for p in (tmp_path / "tasks").glob("scope_*.yaml") if "__" not in p.name) == ["scope_mme.yaml"]
    empty = CliRunner().invoke(app, ["tasks-dir", "--data-dir", str(tmp_path / "tasks"), "--output", str(tmp_path / "t2")])
    assert empty.exit_code == 1 and "no benchmark found" in empty.output


def test_validate_tasks_reports_each_problem_and_exits_nonzero(tmp_path):
    from scope_eval.cli import app

    good = "dataset_path: parquet\ndataset_kwargs: {data_files: {test: %s}}\ntest_split: test\ndoc_to_text: q\nmetric_list: [{metric: exact_match}]\n"
    (tmp_path / "bad_function.yaml").write_text("task: t_fn\ndoc_to_visual: !function nowhere.fn\n" + good % "x.parquet")
    (tmp_path / "bad_key.yaml").write_text("task: t_key\nmodel_specific_prompt_kwargs: {}\n" + good % "x.parquet")
    (tmp_path / "no_data.yaml").write_text("task: t_data\n" + good % "missing.parquet")
    (tmp_path / "builtin.yaml").write_text("task: mme\n" + good % "x.parquet")
    (tmp_path / "x.parquet").write_bytes(b"")
    problems = {c.name: " ".join(c.problems) for c in validate_directory(tmp_path)}
    assert "!function target not importable" in problems["t_fn"] and "nowhere" in problems["t_fn"]
    assert "model_specific_prompt_kwargs" in problems["t_key"]
    assert "missing.parquet" in problems["t_data"]
    assert "built-in lmms-eval task" in problems["mme"]
    result = CliRunner().invoke(app, ["validate-tasks", str(tmp_path)])
    assert result.exit_code == 1


def test_mmvet_refuses_to_start_without_the_judge_key(monkeypatch):
    from datasets import Dataset

    from scope_eval.lmms.tasks.paper import mmvet

    monkeypatch.delenv("API_TYPE", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(RunAborted, match="OPENAI_API_KEY is not set"):
        mmvet.process_docs(Dataset.from_dict({"question": ["q"]}))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert mmvet.process_docs(Dataset.from_dict({"question": ["q"]})).column_names == ["question"]  # unchanged: the key column is gone (one channel)


def test_mmvet_runs_in_the_papers_setting_with_the_judge_as_a_recorded_option():
    from scope_eval.lmms.local_data import _IgnoreFunctions
    from scope_eval.lmms.tasks.paper import mmvet

    config = yaml.load(benchmark("mmvet").yaml_path.read_text(), Loader=_IgnoreFunctions)
    assert config["lmms_eval_specific_kwargs"]["default"]["pre_prompt"] == (
        "Please think step by step and try to provide best answer to the following question: \n\n"
    )
    assert config["generation_kwargs"]["max_new_tokens"] == 32768
    assert config["metadata"]["judge_model"] == "gpt-4-0613" == mmvet.judge_model()


def test_mmvet_asks_the_judge_named_in_the_task(monkeypatch):
    from scope_eval.lmms.tasks.paper import mmvet

    asked = []

    class Upstream:  # stands in for lmms-eval's mmvet utils, which need an API key to import
        @staticmethod
        def get_chat_response(prompt, model="gpt-4o-2024-11-20", temperature=0.0):
            asked.append(model)
            return "1.0", model

        def mmvet_process_results(self, doc, results):
            content, model = self.get_chat_response("prompt")  # a module-global lookup upstream
            return {"gpt_eval_score": {"score": float(content), "eval_model": model}}

    upstream = Upstream()
    monkeypatch.setattr(mmvet, "_upstream", lambda: upstream)
    stock = upstream.get_chat_response
    scored = mmvet.process_results({"question_id": "v1"}, ["square"])
    assert asked == ["gpt-4-0613"] and scored["gpt_eval_score"]["eval_model"] == "gpt-4-0613"
    assert upstream.get_chat_response is stock  # put back after the call


def test_mmvet_asks_and_records_the_judge_of_the_task_config_in_use(monkeypatch):
    """lmms-eval scores through its task object: a config in use whose metadata names another judge than the shipped
    YAML gets that judge, and each sample records the judge asked beside the model that answered."""
    from types import SimpleNamespace

    from lmms_eval.api.task import ConfigurableTask

    from scope_eval.lmms.tasks.paper import mmvet

    asked = []

    class Upstream:
        @staticmethod
        def get_chat_response(prompt, model="gpt-4o-2024-11-20", temperature=0.0):
            asked.append(model)
            return "0.5", model + "-served"

        def mmvet_process_results(self, doc, results):
            content, model = self.get_chat_response("prompt")
            return {"gpt_eval_score": {"score": float(content), "eval_model": model}}

    monkeypatch.setattr(mmvet, "_upstream", lambda: Upstream())

    def task_with(metadata):
        config = SimpleNamespace(process_results=mmvet.process_results, metadata=metadata, task="my_mmvet")
        return SimpleNamespace(OUTPUT_TYPE="generate_until", config=config)

    scored = ConfigurableTask.process_results(task_with({"version": 0.0, "judge_model": "gpt-4o-2024-08-06"}), {"question_id": "v1"}, ["square"])
    assert asked == ["gpt-4o-2024-08-06"] != [mmvet.judge_model()]
    assert scored["gpt_eval_score"]["judge_model"] == "gpt-4o-2024-08-06"
    assert scored["gpt_eval_score"]["eval_model"] == "gpt-4o-2024-08-06-served"
    with pytest.raises(RunAborted, match="sets no metadata.judge_model"):
        ConfigurableTask.process_results(task_with({"version": 0.0}), {"question_id": "v1"}, ["square"])  # stops the run: not retried


def test_mmmu_prompts_do_not_depend_on_the_chat_path_running_first():
    from lmms_eval.tasks.mmmu import utils as upstream

    from scope_eval.lmms.local_data import _IgnoreFunctions
    from scope_eval.lmms.tasks.paper import mmmu

    kwargs = yaml.load(benchmark("mmmu_val").yaml_path.read_text(), Loader=_IgnoreFunctions)["lmms_eval_specific_kwargs"]["default"]
    doc = dict(question="<image 1> Which shape is shown?", options="['square', 'circle']", question_type="multiple-choice",
               image_1=random_picture(), **{f"image_{i}": None for i in range(2, 8)})  # fmt: skip
    before = mmmu.doc_to_text(doc, kwargs)
    messages = mmmu.doc_to_messages(doc, kwargs)  # the chat path, in the same process
    after = mmmu.doc_to_text(doc, kwargs)
    assert "<image 1>" in before and before == after
    assert any(part.get("type") == "image" for part in messages[0]["content"])
    assert upstream.config["metadata"]["interleaved_format"] is False
    upstream.mmmu_doc_to_messages(doc, kwargs)  # upstream alone leaves its flag on ...
    try:
        assert "<image 1>" not in upstream.mmmu_doc_to_text(doc, kwargs)  # ... and its simple path changes
        assert mmmu.doc_to_text(doc, kwargs) == before  # ours does not
    finally:
        upstream.config["metadata"]["interleaved_format"] = False


def random_picture():
    from conftest import random_image

    return random_image(32, 32)


def test_table9_ocr_tasks_score_like_lmms_eval():
    from scope_eval.lmms.tasks.paper import scored

    assert {"docvqa_val", "chartqa", "ocrbench"} <= {b.name for b in BENCHMARKS}
    assert scored.docvqa_val({"answers": ["Square"]}, ["square"])["anls"] == 1.0
    assert scored.chartqa({"type": "human_test", "answer": "100"}, ["103"])["relaxed_overall"] == 1.0
    right = scored.ocrbench({"answer": ["square"], "dataset": "IIIT5K", "question_type": "Regular Text Recognition"}, ["a Square"])
    wrong = scored.ocrbench({"answer": ["circle"], "dataset": "IIIT5K", "question_type": "Regular Text Recognition"}, ["square"])
    results = [right["ocrbench_accuracy"], wrong["ocrbench_accuracy"]]
    assert scored.ocrbench_accuracy(results) == 0.5 == scored.ocrbench_accuracy(results)  # no tally carried over


def test_docvqa_fork_metric_is_the_share_of_answers_any_reference_accepts():
    """The paper's fork scores each reference alone and counts a question 1.0 if any scored above zero (lmms-eval
    issue 363): beside true ANLS, never below it."""
    from scope_eval.lmms.tasks.paper import scored

    both = scored.docvqa_val({"answers": ["12/10/98", "December 10, 1998"]}, ["12/10/1998"])
    assert both["anls"] == pytest.approx(0.8) and both["anls_fork"] == 1.0  # 2 edits over 10 characters
    near = scored.docvqa_val({"answers": ["abcdefghij"]}, ["abcdefwxyz"])  # 4 edits over 10: 0.6
    assert near["anls"] == pytest.approx(0.6) and near["anls_fork"] == 1.0
    far = scored.docvqa_val({"answers": ["abcdefghij"]}, ["abcdtuvwxyz"])  # 7 edits over 11: below 0.5, both 0
    assert far["anls"] == 0.0 == far["anls_fork"]
    wrong = scored.docvqa_val({"answers": ["square", "box"]}, ["circle"])
    assert wrong["anls"] == 0.0 == wrong["anls_fork"]
    assert {"anls", "anls_fork"} <= set(yaml_metrics("scope_docvqa_val"))


def test_ocrbench_fork_metric_lower_cases_before_the_handwritten_maths_check():
    from scope_eval.lmms.tasks.paper import scored

    def scores(answer: str, prediction: str, dataset: str = "HME100k") -> tuple[int, int]:
        doc = {"answer": [answer], "dataset": dataset, "question_type": "Handwritten Mathematical Expression Recognition"}
        both = scored.ocrbench(doc, [prediction])
        return both["ocrbench_accuracy"]["score"], both["ocrbench_accuracy_fork"]["score"]

    assert scores("\\frac{A}{B}", "\\frac{A}{B}") == (1, 0)  # the fork's lowered prediction no longer contains A, B
    assert scores("x^{2}", "X^{2}") == (0, 1)  # 0.7.3 compares case-sensitively
    assert scores("ABC", "\uff21\uff22\uff23", dataset="IIIT5K") == (1, 0)  # full-width letters: folded by 0.7.3 only
    assert scores("square", "a Square", dataset="IIIT5K") == (1, 1)
    assert {"ocrbench_accuracy", "ocrbench_accuracy_fork"} <= set(yaml_metrics("scope_ocrbench"))


def test_paper_ocr_columns_are_compared_with_the_fork_scores():
    from scope_eval.reports.reference import reference_long

    table9 = set(reference_long().query("model == 'llava-1.5-7b' and method == 'scope' and budget == 64")["benchmark"])
    assert {"DocVQA-fork", "OCRBench-fork", "ChartQA"} <= table9 and not {"DocVQA", "OCRBench"} & table9
    assert averaged(["DocVQA", "DocVQA-fork", "ChartQA", "OCRBench", "OCRBench-fork"]) == ["DocVQA", "ChartQA", "OCRBench"]
