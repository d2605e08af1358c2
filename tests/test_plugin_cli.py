"""The real lmms-eval CLI in subprocesses, offline, on tiny models of both backends.

One process per configuration list (lmms-eval's --config runs its entries in one process), so the
import and task indexing are paid once per backend.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import lmms_fixtures
from scope_eval.lmms.local_data import write_tasks_dir

pytestmark = pytest.mark.slow
TASK = "scope_test_shapes"


def child_env(tmp: Path, threads: int = 2) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("OPENAI_API_KEY", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_CACHE=str(tmp / "hf_datasets"),
               OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")  # fmt: skip
    return env


def run(command: list[str], tmp: Path, threads: int = 2) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=tmp, env=child_env(tmp, threads), capture_output=True, text=True, timeout=420)


def lmms_eval(*args: str) -> list[str]:
    return [sys.executable, "-m", "lmms_eval", *args]


def run_config(entries: list[dict], tmp: Path) -> subprocess.CompletedProcess:
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump(entries))
    return run(lmms_eval("--config", str(config)), tmp)


def entry(model: str, model_args: str, include: Path, output: Path, tasks: str = TASK, **more) -> dict:
    return dict(model=model, model_args=model_args, tasks=tasks, include_path=str(include), output_path=str(output),
                log_samples=True, **more)  # fmt: skip


def outputs(output: Path) -> tuple[dict, dict[str, list[dict]]]:
    """(results.json, samples per task sorted by doc_id) of one run folder."""
    (results_file,) = [p for p in output.rglob("*_results.json") if "submissions" not in p.parts]
    samples = {}
    for path in output.rglob("*_samples_*.jsonl"):
        task = path.stem.split("_samples_", 1)[1]
        samples[task] = sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda s: s["doc_id"])
    return json.loads(results_file.read_text()), samples


def answers(samples: list[dict]) -> list[str]:
    return [s["filtered_resps"] for s in samples]


def visual_tokens(samples: list[dict]) -> list[list[int]]:
    return [s["token_counts"][0]["visual_tokens"] for s in samples]


def failure(process: subprocess.CompletedProcess) -> str:
    return f"exit {process.returncode}\n{process.stdout[-3000:]}\n{process.stderr[-6000:]}"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("plugin")


@pytest.fixture(scope="module")
def shapes(work) -> Path:
    return lmms_fixtures.write_tiny_task(work / "shapes")


@pytest.fixture(scope="module")
def next_dir(work) -> Path:
    from tiny_models import save, tiny_llava_next

    return save(*tiny_llava_next(), work / "llava-next-hf-tiny")


@pytest.fixture(scope="module")
def original_dir(work) -> Path:
    from tiny_models import tiny_llava_original

    directory = work / "llava-v1.5-tiny"  # the original builder needs 'llava' in the folder name
    model, tokenizer, _ = tiny_llava_original(directory)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def local_tasks(work) -> Path:
    """Stand-in copies of the paper's benchmarks and the include directory that reads them."""
    write_tasks_dir(lmms_fixtures.write_standins(work / "data"), work / "local_tasks")
    return work / "local_tasks"


@pytest.fixture(scope="module")
def hf15_dir(work) -> Path:
    from tiny_models import save, tiny_llava

    return save(*tiny_llava(), work / "llava-hf-tiny")


PAPER_METRICS = {
    "scope_gqa": "exact_match", "scope_mmbench_en_dev": "gpt_eval_score", "scope_mme": "mme_total_score",
    "scope_pope": "pope_f1_score", "scope_scienceqa_img": "exact_match", "scope_textvqa_val": "exact_match",
    "scope_seedbench": "seed_all", "scope_mmmu_val": "mmmu_acc", "scope_vqav2_val": "exact_match",
}  # fmt: skip


@pytest.fixture(scope="module")
def runs(work, shapes, next_dir, original_dir, hf15_dir, local_tasks) -> Path:
    """Every one-process run, as one lmms-eval --config list (one process pays the imports once):
    lmms-eval's llava_hf and llava next to llava_hf_scope / llava_scope with method=none and pruned,
    and the paper's benchmarks on local copies."""
    out = work / "runs"
    hf = f"pretrained={next_dir},device_map=cpu,dtype=float32"
    auto = f"pretrained={original_dir},device_map=auto"  # lmms-eval's llava runs on CPU only with device_map=auto
    process = run_config(
        [
            entry("llava_hf", hf, shapes, out / "hf_stock", device="cpu"),
            entry("llava_hf_scope", hf + ",method=none", shapes, out / "hf_none", device="cpu"),
            entry("llava_hf_scope", hf + ",method=scope,budget=64", shapes, out / "hf_scope", device="cpu"),
            entry("llava", auto, shapes, out / "original_stock", device="cpu"),
            entry("llava_scope", auto + ",method=none", shapes, out / "original_none", device="cpu"),
            entry("llava_scope", f"pretrained={original_dir},device_map=cpu,method=scope,budget=16", shapes, out / "original_scope"),
            entry("llava_hf_scope", f"pretrained={hf15_dir},device_map=cpu,dtype=float32,method=scope,budget=16", local_tasks,
                  out / "paper_local", tasks=",".join(PAPER_METRICS), device="cpu", gen_kwargs="max_new_tokens=4"),
        ],
        work,
    )
    assert process.returncode == 0, failure(process)
    return out


def crops_of(size: tuple[int, int], model_dir: Path) -> int:
    from transformers import AutoConfig
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    config = AutoConfig.from_pretrained(model_dir)
    width, height = size
    return image_size_to_num_patches((height, width), config.image_grid_pinpoints, config.vision_config.image_size)


def stock_image_tokens(index: int, model_dir: Path) -> int:
    """Image placeholders the unpruned model's processor emits for stand-in picture ``index`` (with
    LLaVA-NeXT's unpadding and row-end tokens)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    ids = processor(images=lmms_fixtures.picture(index), text="<image>", return_tensors="pt")["input_ids"]
    return int((ids == processor.tokenizer.convert_tokens_to_ids("<image>")).sum())


def test_llava_hf_scope_none_equals_llava_hf_and_records_tokens(runs, next_dir):
    stock, none = outputs(runs / "hf_stock")[1][TASK], outputs(runs / "hf_none")[1][TASK]
    assert len(stock) == 6 and answers(none) == answers(stock)
    assert visual_tokens(none) == [[stock_image_tokens(i, next_dir)] for i in range(6)]


def test_llava_hf_scope_budget_shows_in_samples_and_results(runs, next_dir):
    results, samples = outputs(runs / "hf_scope")
    sizes = [lmms_fixtures.SIZES[i % len(lmms_fixtures.SIZES)] for i in range(6)]
    expected = [crops_of(size, next_dir) * (64 // crops_of(size, next_dir)) for size in sizes]  # per_crop: n * floor(64/n)
    assert visual_tokens(samples[TASK]) == [[count] for count in expected]
    assert "exact_match,none" in results["results"][TASK]
    assert "method=scope,budget=64" in results["config"]["model_args"]


def test_llava_scope_none_equals_llava_and_budget_shows(runs):
    stock, none = outputs(runs / "original_stock")[1][TASK], outputs(runs / "original_none")[1][TASK]
    assert answers(none) == answers(stock) and visual_tokens(none) == [[576]] * 6
    results, samples = outputs(runs / "original_scope")
    assert visual_tokens(samples[TASK]) == [[16]] * 6
    assert results["config"]["model_backend"].endswith("LlavaScope (simple)")


def test_two_processes_torchrun_equal_one_process(work, shapes, next_dir, runs):
    out = work / "hf_torchrun"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29581",
               "-m", "lmms_eval", "--model", "llava_hf_scope", "--device", "cpu",
               "--model_args", f"pretrained={next_dir},device_map=cpu,dtype=float32,method=scope,budget=64",
               "--tasks", TASK, "--include_path", str(shapes), "--output_path", str(out), "--log_samples"]  # fmt: skip
    process = run(command, work, threads=1)
    assert process.returncode == 0, failure(process)
    (one_results, one_samples), (two_results, two_samples) = outputs(runs / "hf_scope"), outputs(out)
    assert [s["doc_id"] for s in two_samples[TASK]] == list(range(6))
    assert answers(two_samples[TASK]) == answers(one_samples[TASK])
    assert visual_tokens(two_samples[TASK]) == visual_tokens(one_samples[TASK])
    assert two_results["results"] == one_results["results"]


def test_two_processes_accelerate_equal_one_process(work, shapes, original_dir, runs):
    out = work / "original_accelerate"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", "29582",
               "-m", "lmms_eval", "--model", "llava_scope", "--model_args", f"pretrained={original_dir},device_map=cpu,method=scope,budget=16",
               "--tasks", TASK, "--include_path", str(shapes), "--output_path", str(out), "--log_samples"]  # fmt: skip
    process = run(command, work, threads=1)
    assert process.returncode == 0, failure(process)
    assert "Running on rank 1" in process.stdout + process.stderr
    (one_results, one_samples), (two_results, two_samples) = outputs(runs / "original_scope"), outputs(out)
    assert answers(two_samples[TASK]) == answers(one_samples[TASK])
    assert visual_tokens(two_samples[TASK]) == visual_tokens(one_samples[TASK])
    assert two_results["results"] == one_results["results"]


def test_generation_error_exits_nonzero(work, shapes, next_dir):
    # budget 2 split over 3 or more crops (per_crop) leaves 0 tokens per crop: the adapter raises inside generate()
    out = work / "broken"
    process = run(lmms_eval("--model", "llava_hf_scope", "--device", "cpu", "--model_args",
                            f"pretrained={next_dir},device_map=cpu,dtype=float32,method=scope,budget=2",
                            "--tasks", TASK, "--include_path", str(shapes), "--output_path", str(out)), work)  # fmt: skip
    assert process.returncode != 0, failure(process)
    assert "RunAborted: llava_hf_scope: generation failed on task scope_test_shapes, doc 0" in process.stderr
    assert "leaves 0 tokens per crop" in process.stderr
    assert not list(out.rglob("*_results.json"))


def test_paper_benchmarks_run_offline_from_local_copies(runs):
    results, samples = outputs(runs / "paper_local")
    for task, metric in PAPER_METRICS.items():
        assert f"{metric},none" in results["results"][task], task
        assert visual_tokens(samples[task]) == [[16]] * len(samples[task]), task  # one image per question here
        assert not results["configs"][task]["dataset_path"].startswith("lmms-lab"), task
    assert {"mme_perception_score,none", "mme_cognition_score,none"} <= set(results["results"]["scope_mme"])
    assert "Reference OCR token: stop, sign" in samples["scope_textvqa_val"][0]["input"]
    assert visual_tokens(samples["scope_seedbench"])[-1] == [16]  # the two-frame video question: first frame only
