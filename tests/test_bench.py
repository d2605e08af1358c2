"""`scope-eval bench`: runs on tiny models, reports every field, FLOPs match hand computations.

No speed is asserted: timings are whatever the machine gives; only their presence and sign are checked.
"""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from scope_eval.adapters.vision_probe import encoder_layers
from scope_eval.bench.shapes import SHAPES
from scope_eval.cli import app
from scope_eval.cost.flops import (
    DecoderDims,
    VisionDims,
    kv_cache_bytes,
    language_model_prefill_flops,
    selection_flops,
    vision_tower_flops,
)
from scope_eval.pruning import METHODS
from scope_eval.pruning.cost import SelectionWork
from scope_eval.pruning.plan import PruningPlan

ROW_FIELDS = set(
    "method budget visual_tokens prefill_tokens crops vision_ms selection_ms lm_prefill_ms ttft_ms decode_tokens_per_s "
    "total_ms peak_memory_mb memory_increase_mb kv_cache_mb flops ideal_speedup ideal_lm_speedup measured_speedup "
    "measured_lm_speedup speedup_vs_ideal end_to_end_speedup selection_share_of_unpruned_prefill samples_ms "
    "ttft_cpu_ms total_cpu_ms measured_cpu_time_speedup".split()
)


def run_bench(tmp_path, *options: str) -> dict:
    out = tmp_path / "bench"
    quick = "--repeats 2 --warmup 0 --new-tokens 3 --prompt-tokens 8".split()
    result = CliRunner().invoke(app, ["bench", *quick, "--out", str(out), *options])
    assert result.exit_code == 0, result.output + repr(result.exception)
    for suffix in (".md", ".png"):
        assert out.with_suffix(suffix).stat().st_size > 0
    return json.loads(out.with_suffix(".json").read_text())


def test_bench_llava15_tiny_reports_every_field(tmp_path):
    report = run_bench(
        tmp_path,
        "--shape",
        "tiny-llava-1.5",
        "--methods",
        "none,random,saliency,scope",
        "--budgets",
        "192,64",
        "--device",
        "cpu",
    )
    rows = report["rows"]
    assert [(r["method"], r["budget"]) for r in rows] == [
        ("none", None),
        ("random", 192),
        ("random", 64),
        ("saliency", 192),
        ("saliency", 64),
        ("scope", 192),
        ("scope", 64),
    ]
    for row in rows:
        assert set(row) == ROW_FIELDS
        assert row["visual_tokens"] == (576 if row["budget"] is None else row["budget"])
        assert row["prefill_tokens"] == 1 + row["visual_tokens"] + 8  # BOS, image, prompt
        for key in ("vision_ms", "lm_prefill_ms", "ttft_ms", "total_ms", "decode_tokens_per_s", "peak_memory_mb"):
            assert row[key] > 0, key
        assert row["ttft_ms"] >= row["lm_prefill_ms"]
        assert len(row["samples_ms"]["ttft"]) == 2
        assert row["flops"]["total_prefill"] == sum(v for k, v in row["flops"].items() if k != "total_prefill")
    by_case = {(r["method"], r["budget"]): r for r in rows}
    assert by_case[("none", None)]["selection_ms"] == 0
    assert by_case[("scope", 64)]["selection_ms"] > 0
    for method in ("random", "saliency", "scope"):
        large, small = by_case[(method, 192)], by_case[(method, 64)]
        assert (
            small["flops"]["language_model"]
            < large["flops"]["language_model"]
            < by_case[("none", None)]["flops"]["language_model"]
        )
        assert small["ideal_lm_speedup"] > large["ideal_lm_speedup"] > 1
    assert report["model"]["source"] == "tiny-llava-1.5" and report["hardware"]["torch"] == torch.__version__
    assert report["command"].startswith("scope-eval bench --shape tiny-llava-1.5 --method none,random,saliency,scope")


@pytest.mark.parametrize("policy", ["per_crop", "global"])
def test_bench_llava_next_tiny_realises_the_budget(tmp_path, policy):
    report = run_bench(
        tmp_path,
        "--shape",
        "tiny-llava-next",
        "--methods",
        "scope",
        "--budgets",
        "160",
        "--budget-policy",
        policy,
        "--image-size",
        "672x672",
        "--device",
        "cpu",
        "--repeats",
        "1",  # the last value of an option wins: one pass per case is enough here
    )
    unpruned, pruned = report["rows"]
    assert unpruned["crops"] == pruned["crops"] == 5
    assert unpruned["visual_tokens"] == 5 * 576 + 48  # HF packs the 2x2 grid with one newline token per row
    assert pruned["visual_tokens"] == 160
    assert pruned["flops"]["vision"] == unpruned["flops"]["vision"]
    assert pruned["flops"]["language_model"] < unpruned["flops"]["language_model"]


@pytest.mark.parametrize(
    "options, message",
    [
        (["--shape", "tiny-llava-1.5", "--model", "x"], "exactly one of --pretrained"),
        (["--shape", "llava-9b"], "unknown --shape"),
        (["--shape", "tiny-llava-1.5", "--image-size", "336"], "HEIGHTxWIDTH"),
        (["--shape", "tiny-llava-1.5", "--budgets", "64,abc"], "whole numbers"),
        (["--shape", "tiny-llava-1.5", "--methods", "scope,nope"], "unknown method"),
        (
            ["--shape", "tiny-llava-1.5", "--methods", "scope", "--budgets", "600", "--repeats", "1", "--warmup", "0"],
            "600",
        ),
        (["--model", "/nonexistent/checkpoint"], "cannot load a model config"),
        (["--shape", "tiny-llava-1.5", "--dtype", "int8"], "--dtype"),
    ],
)
def test_bench_rejects_bad_input_with_a_fix(options, message):
    result = CliRunner().invoke(app, ["bench", "--device", "cpu", *options])
    assert result.exit_code == 2
    assert message in result.output


def test_language_model_flops_by_hand():
    # d=8, 2 heads of 4, 1 kv head (GQA: d_kv=4), d_ff=16, V=10, T=5 tokens, 2 layers.
    dims = DecoderDims(hidden=8, layers=2, heads=2, kv_heads=1, mlp=16, vocab=10)
    q_and_o = 2 * (2 * 5 * 8 * 8)  # 640 each
    k_and_v = 2 * (2 * 5 * 8 * 4)  # 320 each
    mlp = 3 * (2 * 5 * 8 * 16)  # gate, up, down
    attention = 2 * 5 * 5 * 8 + 2 * 5 * 5 * 8  # scores + weighted values, full square
    head = 2 * 8 * 10
    assert q_and_o + k_and_v + mlp + attention == 6560
    assert language_model_prefill_flops(dims, 5) == 2 * 6560 + head == 13280


def test_vision_flops_by_hand():
    # 28 px image, 14 px patches: N=4 patches (+CLS = 5), width 8, MLP 16, one layer.
    dims = VisionDims(hidden=8, layers=1, mlp=16, patch=14, image=28)
    patch_embedding = 2 * 4 * (3 * 14 * 14) * 8
    layer = 2 * 5 * (4 * 8 * 8) + 2 * 5 * (2 * 8 * 16) + 4 * 5 * 5 * 8
    assert vision_tower_flops(dims, crops=3) == 3 * (patch_embedding + layer) == 3 * (37632 + 5920)


def test_flops_match_the_linear_layers_of_the_real_7b_shapes():
    """2 FLOPs per weight per token: the projection terms equal 2*T*(linear weights of one layer)."""
    from transformers import AutoModelForImageTextToText

    for name in ("llava-1.5-7b", "llava-1.5-13b", "llava-next-7b"):
        with torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(SHAPES[name].config())
        text = model.model.language_model
        layer_weights = sum(m.weight.numel() for m in text.layers[0].modules() if isinstance(m, torch.nn.Linear))
        dims = DecoderDims.of(model.config.get_text_config())
        no_attention = language_model_prefill_flops(dims, 1) - 4 * dims.hidden * dims.layers
        assert no_attention == 2 * dims.layers * layer_weights + 2 * model.lm_head.weight.numel()
        vision_layer = encoder_layers(model.model.vision_tower)[0]
        vision_weights = sum(m.weight.numel() for m in vision_layer.modules() if isinstance(m, torch.nn.Linear))
        vision = VisionDims.of(model.config.vision_config)
        assert vision.tokens_per_crop == 576 and vision.layers == 24 and vision.hidden == 1024
        per_layer = (vision_tower_flops(vision, 1) - 2 * 576 * 3 * 14 * 14 * 1024) // 24
        assert per_layer == 2 * 577 * vision_weights + 4 * 577 * 577 * 1024
    assert 7.0e9 < sum(p.numel() for p in model.parameters()) < 7.1e9  # llava-next-7b: 7.06 B


def _split(budget, crops, policy="per_crop", method="scope", **options):
    selection = PruningPlan.build(method, budget, policy, **options).crop_selection(crops, 576)
    return selection.groups, selection.tokens, selection.budget


def test_the_plan_splits_the_budget_for_the_bench_as_for_the_adapters():
    assert _split(64, 1) == (1, 576, 64)
    assert _split(160, 5) == (5, 576, 32)
    assert _split(160, 5, "global") == (1, 2880, 160)
    # VisionZip's official split is the method's own (for_crops): 5 crops x (31 patches + CLS + 1 contextual)
    assert _split(160, 5, method="visionzip", crop_split="official") == (5, 576, 33)


def test_selection_estimates_are_the_method_classes_own():
    work = SelectionWork(groups=2, tokens=10, keep=3, vision_width=4, text_width=8)
    assert METHODS["scope"]().selection_flops(work) == 2 * (2 * 100 * 4 + 3 * 3 * 100)
    assert METHODS["saliency"]().selection_flops(work) == 0
    # VisionZip prices its own split, the contextual option included: R = N - dominant, C contextual
    assert METHODS["visionzip"](contextual=2).selection_flops(work) == 2 * 2 * (10 - 1) * 2 * 4
    vision = VisionDims(hidden=4, layers=1, mlp=8, patch=14, image=14 * 10 ** 0)
    assert selection_flops(PruningPlan.build("none"), 1, vision, 8) == 0


def gives_estimate(cls) -> bool:
    """Whether a method class defines its own FLOP model (the base classes' default returns None: no estimate)."""
    from scope_eval.pruning import PruningMethod
    from scope_eval.pruning.llm_stage import LlmStageMethod

    if cls.stage == "llm":
        return cls.scoring_flops is not LlmStageMethod.scoring_flops
    return cls.selection_flops is not PruningMethod.selection_flops


def method_estimate(method) -> int | None:
    if method.stage == "llm":
        from scope_eval.pruning.cost import DropWork

        return method.scoring_flops(DropWork(tokens=600, visual=576, kept=64, hidden=32, kv_width=32))
    return method.selection_flops(SelectionWork(1, 576, 64, 1024, 4096))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_registered_method_is_costed_by_the_bench(name):
    """A method file dropped into pruning/methods is costed: a number (0 for a draw or top-k) when its class
    defines a FLOP model, None ("n/a" in the bench) when it does not; a FLOP model is optional."""
    method = METHODS[name]()  if name != "cdpruner" else METHODS[name](text_encoder="clip")
    estimate = method_estimate(method)
    if gives_estimate(type(method)):
        assert isinstance(estimate, int) and estimate >= 0 and (estimate > 0 or method.stage != "llm")
    else:
        assert estimate is None


PLAIN_METHOD = '''
from dataclasses import dataclass

import torch

from scope_eval.pruning import KeptTokens, PruningMethod, register


@register
@dataclass
class PlainLastMethod(PruningMethod):
    name = "plain_last"  # a researcher's first method: no display name, no rank, no FLOP model

    def _select(self, tokens, budget):
        start = tokens.num_tokens - budget
        return KeptTokens(indices=torch.arange(start, tokens.num_tokens).expand(tokens.batch, budget))
'''


@pytest.fixture
def plain_method(tmp_path):
    """A method file without selection_flops, registered for one test and removed after it."""
    import importlib.util

    path = tmp_path / "plain_last.py"
    path.write_text(PLAIN_METHOD)
    spec = importlib.util.spec_from_file_location("plain_last", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    try:
        yield "plain_last"
    finally:
        METHODS.pop("plain_last", None)


def test_a_method_without_a_flop_model_is_benched_as_n_a(tmp_path, plain_method):
    assert not gives_estimate(METHODS[plain_method]) and method_estimate(METHODS[plain_method]()) is None
    test_every_registered_method_is_costed_by_the_bench(plain_method)  # the matrix accepts it
    report = run_bench(tmp_path, "--shape", "tiny-llava-1.5", "--method", plain_method, "--budget", "64")
    row = next(row for row in report["rows"] if row["method"] == plain_method)
    assert row["flops"]["selection"] is None and row["selection_ms"] >= 0
    # the prefill total still counts everything that has a model: vision, projector, language model
    assert row["flops"]["total_prefill"] == row["flops"]["vision"] + row["flops"]["projector"] + row["flops"]["language_model"]
    lines = [line for line in (tmp_path / "bench.md").read_text().splitlines() if line.startswith(f"| {plain_method} ")]
    header = next(line for line in (tmp_path / "bench.md").read_text().splitlines() if "select GFLOPs" in line)
    column = [cell.strip() for cell in header.split("|")].index("select GFLOPs")
    assert [cell.strip() for cell in lines[-1].split("|")][column] == "n/a"  # the table against unpruned


def test_kv_cache_by_hand():
    dims = DecoderDims(hidden=8, layers=2, heads=2, kv_heads=1, mlp=16, vocab=10)
    assert kv_cache_bytes(dims, tokens=5, bytes_per_element=2) == 2 * 2 * 5 * 4 * 2


def test_timer_hooks_and_select_shadow_are_removed():
    from scope_eval import prune
    from scope_eval.bench.loading import build_inputs, load_bench_model
    from scope_eval.cost.timing import Clock, PassTimer

    bench_model = load_bench_model("tiny-llava-1.5", torch.device("cpu"), torch.float32)
    model = bench_model.model
    inputs = build_inputs(bench_model, (336, 336), prompt_tokens=4)
    with prune(model, "saliency", 64) as handle, torch.inference_mode():
        method = handle.plan.method
        timer = PassTimer(model, method, Clock(torch.device("cpu")))
        timing = timer.run(lambda: model.generate(**inputs, max_new_tokens=2, min_new_tokens=2, do_sample=False))
        timer.close()
        assert "run" not in vars(method)
    assert timing.prefill_tokens == 1 + 64 + 4 and timing.selection > 0 and timing.first_token <= timing.total
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_in_llm_scoring_time_is_split_out_of_the_language_model_prefill():
    """For fastv the timed selection is its choose() inside the prefill: positive, and part of that span."""
    from scope_eval import prune
    from scope_eval.bench.loading import build_inputs, load_bench_model
    from scope_eval.cost.timing import Clock, PassTimer

    bench_model = load_bench_model("tiny-llava-1.5", torch.device("cpu"), torch.float32)
    model = bench_model.model
    inputs = build_inputs(bench_model, (336, 336), prompt_tokens=4)
    with prune(model, "fastv", 64, layer=1, budget_unit="after_layer") as handle, torch.inference_mode():
        method = handle.plan.method
        timer = PassTimer(model, method, Clock(torch.device("cpu")))
        timing = timer.run(lambda: model.generate(**inputs, max_new_tokens=2, min_new_tokens=2, do_sample=False))
        timer.close()
        assert "choose" not in vars(method) and "run" not in vars(method)
    assert 0 < timing.selection < timing.language_model_prefill


def test_a_per_crop_copy_of_the_method_is_timed_too():
    """VisionZip's official NeXT split selects with a per-image copy of itself (for_crops): still timed."""
    from scope_eval import prune
    from scope_eval.bench.loading import build_inputs, load_bench_model
    from scope_eval.cost.timing import Clock, PassTimer

    bench_model = load_bench_model("tiny-llava-next", torch.device("cpu"), torch.float32)
    model = bench_model.model
    inputs = build_inputs(bench_model, (672, 672), prompt_tokens=4)
    with prune(model, "visionzip", 160, crop_split="official") as handle, torch.inference_mode():
        method = handle.plan.method
        timer = PassTimer(model, method, Clock(torch.device("cpu")))
        timing = timer.run(lambda: model.generate(**inputs, max_new_tokens=1, do_sample=False))
        timer.close()
        assert handle.take_counts() == [165] and not {"run", "for_crops"} & set(vars(method))
    assert timing.selection > 0


def test_readme_flop_figures_are_the_formula_outputs():
    """scope_eval/bench/README.md quotes these totals (32 prompt tokens + BOS)."""
    from scope_eval.cost.flops import prefill_flops

    def total(name, crops, visual, method, budget):
        config = SHAPES[name].config()
        projected = crops * 576 if budget is None else visual
        return prefill_flops(
            config, PruningPlan.build(method, budget), crops=crops, projected_tokens=projected, prefill_tokens=1 + visual + 32,
        ).total / 1e12

    assert round(total("llava-1.5-7b", 1, 576, "none", None), 2) == 8.49
    assert round(total("llava-1.5-7b", 1, 64, "scope", 64), 2) == 1.65
    assert round(total("llava-next-7b", 5, 2928, "none", None), 1) == 45.0
    assert round(total("llava-next-7b", 5, 160, "scope", 160), 2) == 4.44


def test_bench_loads_a_saved_llava_hf_checkpoint(tmp_path):
    """The --model path (a local llava-hf directory, as for real checkpoints) works offline."""
    from scope_eval.bench.loading import load_bench_model

    built = load_bench_model("tiny-llava-1.5", torch.device("cpu"), torch.float32)
    checkpoint = tmp_path / "checkpoint"
    built.model.save_pretrained(checkpoint)
    built.processor.save_pretrained(checkpoint)
    report = run_bench(tmp_path, "--model", str(checkpoint), "--methods", "scope", "--budgets", "64", "--device", "cpu")
    assert report["model"]["source"] == str(checkpoint) and report["model"]["family"] == "llava-1.5"
    assert [row["visual_tokens"] for row in report["rows"]] == [576, 64]


@pytest.mark.parametrize("name", ["llava-1.5-7b", "llava-1.5-13b", "llava-next-7b"])
def test_real_shapes_are_built_directly_on_the_target_device(name):
    """Built under the target device (meta here: no memory), never first as an fp32 copy on the host."""
    from scope_eval.bench.loading import load_bench_model

    bench_model = load_bench_model(name, torch.device("meta"), torch.bfloat16)
    parameters = list(bench_model.model.parameters())
    assert all(p.device.type == "meta" and p.dtype == torch.bfloat16 for p in parameters)
    assert all(b.device.type == "meta" for b in bench_model.model.buffers())
    expected = {"llava-1.5-7b": 7.06e9, "llava-1.5-13b": 13.35e9, "llava-next-7b": 7.06e9}[name]
    assert abs(sum(p.numel() for p in parameters) - expected) < 0.01e9


def test_bench_costs_every_method_of_both_stages_with_their_options(tmp_path):
    """`--methods all` on the tiny shape: every registered method runs, in-LLM ones with a drop layer the
    2-layer model has, cdpruner with a CLIP checkpoint of the tiny tower; each row has its selection time and
    FLOPs (in-LLM: the scoring at the drop), and the command line records the options."""
    from transformers import CLIPConfig, CLIPModel

    from scope_eval.bench.loading import load_bench_model
    from tiny_models import tiny_tokenizer

    tower = load_bench_model("tiny-llava-1.5", torch.device("cpu"), torch.float32).model.model.vision_tower
    clip = CLIPModel(CLIPConfig(vision_config=tower.config.to_dict(), text_config={"vocab_size": 64, "hidden_size": 16,
                                "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}))
    clip.save_pretrained(tmp_path / "clip")
    tiny_tokenizer().save_pretrained(tmp_path / "clip")
    out = tmp_path / "bench"
    result = CliRunner().invoke(app, [
        "bench", "--shape", "tiny-llava-1.5", "--methods", "all", "--budgets", "64", "--repeats", "1", "--warmup", "0",
        "--new-tokens", "1", "--method-option", f"cdpruner.text_encoder={tmp_path / 'clip'}",
        *[arg for method in ("fastv", "dart") for arg in ("--method-option", f"{method}.layer=1")],
        *[arg for method in ("pdrop", "sparsevlm") for arg in ("--method-option", f"{method}.layers=1")],
        *[arg for method in ("fastv", "pdrop", "dart", "sparsevlm") for arg in ("--method-option", f"{method}.budget_unit=after_layer")],
        "--out", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.with_suffix(".json").read_text())
    rows = {row["method"]: row for row in report["rows"]}
    assert set(rows) == set(METHODS)
    for name, row in rows.items():
        if name in ("none",):
            continue
        assert row["flops"]["selection"] is not None or not gives_estimate(METHODS[name]), name
        assert row["selection_ms"] >= 0, name
    for name in ("fastv", "pdrop", "dart", "sparsevlm", "scope", "cdpruner"):
        assert rows[name]["selection_ms"] > 0 and rows[name]["flops"]["selection"] > 0, name
    assert "--method-option cdpruner.text_encoder=" in report["command"]
