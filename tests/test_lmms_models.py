"""The registered wrappers in-process: model_args validation, loud failures, visual-token records, clean()."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lmms_eval.api.instance import GenerationResult, Instance

from scope_eval.lmms.errors import RunAborted, abort_on_error
from scope_eval.lmms.options import split_model_args, wrapper_parameters
from scope_eval.lmms.tracking import RequestTracker
from scope_eval.lmms.visual_tokens import METRICS, RECORDED, VisualTokenCounts, keyed_docs, maximum, mean, minimum, with_visual_tokens
from scope_eval.pruning import PruningError

HF_ARGS = {"pretrained", "device_map", "dtype", "revision", "device", "batch_size"}


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    from tiny_models import save, tiny_llava

    return save(*tiny_llava(), tmp_path_factory.mktemp("models") / "llava-hf-tiny")


# -- model_args ------------------------------------------------------------------------------------
def test_pruning_args_are_split_from_upstream_args():
    spec, upstream = split_model_args(
        "llava_hf_scope", {"pretrained": "x", "method": "scope", "budget": 64, "alpha": 0.5, "batch_size": "1"}, HF_ARGS
    )
    assert (spec.method, spec.budget, spec.budget_policy, spec.options) == ("scope", 64, "per_crop", {"alpha": 0.5})
    assert upstream == {"pretrained": "x", "batch_size": "1"}


@pytest.mark.parametrize(
    "args, message",
    [
        ({"pretrained": "x"}, "needs method=<name>"),
        ({"method": "fastvv", "budget": 64}, "unknown pruning method 'fastvv'"),
        ({"method": "scope", "budget": 64, "temprature": 0}, "unknown model_args temprature"),
        ({"method": "scope", "budget": 64, "seed": 3}, "method 'scope' has no option(s) seed; its options are: alpha=1.0"),
        ({"method": "none", "budget": 64}, "takes no budget"),
        ({"method": "random"}, "needs a budget"),
        ({"method": "scope", "budget": 0.25}, "whole number"),
        ({"method": "scope", "budget": 64, "budget_policy": "each"}, "budget_policy must be one of per_crop, global"),
        ({"method": "none", "pretrained": "/no/such/checkpoint"}, "pretrained=/no/such/checkpoint is not a folder; give the folder"),
    ],
)
def test_bad_model_args_fail_with_the_valid_choices(args, message):
    with pytest.raises(PruningError, match=message.replace("(", r"\(").replace(")", r"\)")):
        split_model_args("llava_scope", args, HF_ARGS)


def test_unknown_model_arg_message_lists_valid_keys():
    with pytest.raises(PruningError) as error:
        split_model_args("llava_hf_scope", {"method": "scope", "budget": 64, "bogus": 1}, HF_ARGS)
    assert "alpha=1.0, combine='multi'" in str(error.value) and "pretrained" in str(error.value)


def test_upstream_wrapper_parameters_are_read_from_its_signature():
    from lmms_eval.models.chat.llava_hf import LlavaHf
    from lmms_eval.models.simple.llava import Llava

    assert {"pretrained", "device_map", "dtype", "attn_implementation"} <= wrapper_parameters(LlavaHf)
    assert {"pretrained", "conv_template", "device_map", "model_name"} <= wrapper_parameters(Llava)


# -- construction: failures end the run (RunAborted is not an Exception) ---------------------------
def test_run_aborted_escapes_except_exception():
    assert not issubclass(RunAborted, Exception)
    with pytest.raises(RunAborted, match="loading x failed: ValueError: boom"):
        try:
            with abort_on_error("loading x"):
                raise ValueError("boom")
        except Exception:  # what lmms-eval's CLI does
            pytest.fail("RunAborted was caught by `except Exception`")


def test_budget_above_available_tokens_fails_at_construction(hf_dir):
    from scope_eval.lmms.models.llava_hf_scope import LlavaHfScope

    with pytest.raises(RunAborted, match="budget 1000 is larger than the 576 visual tokens"):
        LlavaHfScope(pretrained=str(hf_dir), device_map="cpu", dtype="float32", device="cpu", method="scope", budget=1000)


def test_batch_size_above_one_is_refused(hf_dir):
    from scope_eval.lmms.models.llava_hf_scope import LlavaHfScope

    with pytest.raises(RunAborted, match="batch_size=1"):
        LlavaHfScope(pretrained=str(hf_dir), device_map="cpu", method="scope", budget=64, batch_size="4")


def test_model_survives_clean_and_unprune_restores_it(hf_dir):
    from scope_eval import handle_of
    from scope_eval.lmms.models.llava_hf_scope import LlavaHfScope

    wrapper = LlavaHfScope(pretrained=str(hf_dir), device_map="cpu", dtype="float32", device="cpu", method="scope", budget=64)
    model = wrapper.model
    assert handle_of(model) is wrapper.pruning and "generate" in vars(model)
    wrapper.clean()
    assert wrapper.model is model and wrapper.pruning.active
    wrapper.unprune()
    assert handle_of(model) is None and "generate" not in vars(model)


# -- request tracking ------------------------------------------------------------------------------
def _request(doc_id: int, doc_fn) -> Instance:
    args = ("ctx", {}, doc_fn, doc_id, "task_a", "test")
    return Instance("generate_until", args, idx=0, metadata={"task": "task_a", "doc_id": doc_id, "repeats": 1})


def test_tracker_attributes_counts_to_requests_in_any_generation_order():
    requests = [_request(i, lambda doc: [doc]) for i in range(3)]
    tracker = RequestTracker("m", requests, doc_fn_index=2)
    tagged = tracker.tagged_requests()
    for index in (2, 0, 1):  # upstream may generate in its own order
        tagged[index].args[2]({"scope_doc_key": f"k{index}"})
        assert tracker.start_generate() == index
        tracker.finish_generate(index, [10 + index])
    results = tracker.with_counts(["a", GenerationResult("b", VisualTokenCounts(output_tokens=3)), "c"])
    assert [r.token_counts.visual_tokens for r in results] == [[10], [11], [12]]
    assert results[1].token_counts.to_dict() == {"output_tokens": 3, "visual_tokens": [11]}
    assert RECORDED["k2"] == [12]


def test_tracker_refuses_two_requests_in_one_generate_call():
    tracker = RequestTracker("m", [_request(i, lambda doc: []) for i in range(2)], doc_fn_index=2)
    tagged = tracker.tagged_requests()
    tagged[0].args[2]({})
    with pytest.raises(RunAborted, match="batch_size=1"):
        tagged[1].args[2]({})


def test_tracker_refuses_answers_without_generate():
    tracker = RequestTracker("m", [_request(0, lambda doc: [])], doc_fn_index=2)
    with pytest.raises(RunAborted, match="generate\\(\\) was called for no known request"):
        tracker.start_generate()
    with pytest.raises(RunAborted, match="answered without a generate"):
        tracker.with_counts(["x"])


# -- per-task summary ------------------------------------------------------------------------------
def test_keyed_docs_and_visual_token_metrics():
    from datasets import Dataset

    docs = keyed_docs(Dataset.from_dict({"q": ["a", "b"]}))
    again = keyed_docs(Dataset.from_dict({"q": ["a", "b"]}))
    assert docs[0]["scope_doc_key"] != again[0]["scope_doc_key"]  # two loads never share keys
    RECORDED[docs[0]["scope_doc_key"]] = [64, 60]
    process = with_visual_tokens(lambda doc, results: {"exact_match": 1.0})
    assert process(docs[0], ["x"]) == {"exact_match": 1.0, **{name: 124 for name in METRICS}}
    assert process(docs[1], ["x"]) == {"exact_match": 1.0}  # nothing recorded: no visual-token metrics
    assert (minimum([3, 1, 2]), mean([3, 1, 2]), maximum([3, 1, 2])) == (1, 2.0, 3)


def test_guarded_generate_turns_errors_into_run_aborted_naming_the_request():
    from types import SimpleNamespace

    from scope_eval.lmms.options import PruningSpec
    from scope_eval.lmms.tracking import guarded_generate

    def failing_generate(**kwargs):
        raise RuntimeError("mat1 and mat2 must have the same dtype")

    owner = SimpleNamespace(tracker=None, pruning=SimpleNamespace(take_counts=list, take_degenerate=int, take_layer_counts=list), pruning_spec=PruningSpec("scope", 64))
    generate = guarded_generate(owner, failing_generate)
    with pytest.raises(RuntimeError):  # outside generate_until: untouched
        generate()
    owner.tracker = RequestTracker("llava_scope", [_request(7, lambda doc: [])], doc_fn_index=2)
    owner.tracker.tagged_requests()[0].args[2]({})
    with pytest.raises(RunAborted, match=r"generation failed on task task_a, doc 7 \(method=scope, budget=64.*RuntimeError: mat1"):
        generate()


@pytest.mark.parametrize(
    "args, message",
    [
        ({"method": "fastv", "budget": 64, "layer": 5}, "layer 5 is beyond this language model's 2 decoder layers"),
        ({"method": "fastv", "budget": 64, "layer": 1}, "budget 64 (budget_unit=layer_average) is below what layers 0..0 already use"),
        ({"method": "pdrop", "budget": 64, "layers": "1-3"}, "layers 3 is beyond this language model's 2 decoder layers"),
    ],
)
def test_in_llm_schedules_are_checked_from_the_config_before_loading(hf_dir, args, message):
    """The tiny checkpoint has 2 decoder layers and 576 visual tokens per crop; only config.json is read."""
    with pytest.raises(PruningError, match=re.escape(message)) as error:
        split_model_args("llava_hf_scope", {"pretrained": str(hf_dir), **args}, HF_ARGS)
    assert "2 decoder layers" in str(error.value)
    spec, _ = split_model_args(
        "llava_hf_scope", {"pretrained": str(hf_dir), "method": "fastv", "budget": 64, "layer": 1, "budget_unit": "after_layer"}, HF_ARGS
    )
    assert spec.budget == 64
