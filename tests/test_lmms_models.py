"""The registered wrappers in-process: model_args validation, loud failures, visual-token records, clean()."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lmms_eval.api.instance import GenerationResult, Instance

from scope_eval.lmms.errors import RunAborted, abort_on_error
from scope_eval.lmms.options import split_model_args, wrapper_parameters
from scope_eval.lmms.tracking import VisualTokenCounts, generate_one_by_one, guarded_generate
from scope_eval.pruning import PruningError
from scope_eval.pruning.plan import PruningPlan

HF_ARGS = {"pretrained", "device_map", "dtype", "revision", "device", "batch_size"}


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    from tiny_models import save, tiny_llava

    return save(*tiny_llava(), tmp_path_factory.mktemp("models") / "llava-hf-tiny")


# -- model_args ------------------------------------------------------------------------------------
def test_pruning_args_are_split_from_upstream_args():
    plan, upstream = split_model_args(
        "llava_hf_scope", {"pretrained": "x", "method": "scope", "budget": 64, "alpha": 0.5, "batch_size": "1"}, HF_ARGS
    )
    assert (plan.method.name, plan.budget, plan.budget_policy, plan.options()) == ("scope", 64, "per_crop", {"alpha": 0.5})
    assert plan.describe() == "method=scope, budget=64, budget_policy=per_crop, alpha=0.5"
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
def _request(doc_id: int) -> Instance:
    args = ("ctx", {}, lambda doc: [], doc_id, "task_a", "test")
    return Instance("generate_until", args, idx=0, metadata={"task": "task_a", "doc_id": doc_id, "repeats": 1})


class _Owner:
    """The attributes of a PrunedWrapper that tracking reads, with a handle reporting what ``realised`` holds."""

    model_id = "m"
    sample = None

    def __init__(self):
        self.pruning_plan = PruningPlan.build("scope", 64)
        self.realised: list[int] = []
        self.pruning = type("Handle", (), {
            "take_counts": lambda _: [self.realised.pop()] if self.realised else [],
            "take_degenerate": lambda _: 0,
            "take_layer_counts": lambda _: [],
        })()


def test_each_request_gets_what_its_own_generate_realised():
    owner = _Owner()
    served = []

    def stock_generate(doc_id):
        owner.realised.append(10 + doc_id)
        return f"answer {doc_id}"

    generate = guarded_generate(owner, stock_generate)

    def upstream_generate_until(requests):  # upstream sees one request per call, whatever its own order
        served.append([r.doc_id for r in requests])
        return [GenerationResult(generate(r.doc_id), VisualTokenCounts(output_tokens=3)) for r in requests]

    answers = generate_one_by_one(owner, [_request(i) for i in (2, 0, 1)], upstream_generate_until)
    assert served == [[2], [0], [1]]
    assert [a.text for a in answers] == ["answer 2", "answer 0", "answer 1"]
    assert [a.token_counts.visual_tokens for a in answers] == [[12], [10], [11]]
    assert answers[0].token_counts.to_dict() == {"output_tokens": 3, "visual_tokens": [12]}
    assert owner.sample is None  # nothing left pointing at a finished request


def test_tracking_refuses_two_generate_calls_for_one_request():
    owner = _Owner()
    generate = guarded_generate(owner, lambda: "x")
    with pytest.raises(RunAborted, match="a second generate\\(\\) call for task task_a, doc 4"):
        generate_one_by_one(owner, [_request(4)], lambda requests: [generate(), generate()])


def test_tracking_refuses_answers_without_generate():
    owner = _Owner()
    with pytest.raises(RunAborted, match="task task_a, doc 0 was answered without a generate"):
        generate_one_by_one(owner, [_request(0)], lambda requests: ["x"])


def test_guarded_generate_turns_errors_into_run_aborted_naming_the_request():
    def failing_generate(**kwargs):
        raise RuntimeError("mat1 and mat2 must have the same dtype")

    owner = _Owner()
    generate = guarded_generate(owner, failing_generate)
    with pytest.raises(RuntimeError):  # outside generate_until: untouched
        generate()
    with pytest.raises(RunAborted, match=r"generation failed on task task_a, doc 7 \(method=scope, budget=64.*RuntimeError: mat1"):
        generate_one_by_one(owner, [_request(7)], lambda requests: [generate()])


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
    plan, _ = split_model_args(
        "llava_hf_scope", {"pretrained": str(hf_dir), "method": "fastv", "budget": 64, "layer": 1, "budget_unit": "after_layer"}, HF_ARGS
    )
    assert plan.budget == 64


@pytest.mark.parametrize("name", sorted(__import__("scope_eval.pruning", fromlist=["METHODS"]).METHODS))
def test_every_registered_method_is_accepted_by_the_plugin_model_args(name):
    """The lmms-eval edge builds each method's plan from model_args alone (a new method file included)."""
    from scope_eval.pruning import METHODS

    cls = METHODS[name]
    args = {"pretrained": "x", "method": name}
    if not cls.keeps_all:
        args["budget"] = "64"  # text, as a caller building model_args itself passes it
    if cls.needs_instruction:
        args["text_encoder"] = "openai/clip-vit-large-patch14-336"
    plan, upstream = split_model_args("llava_hf_scope", args, HF_ARGS)
    assert plan.method.name == name and upstream == {"pretrained": "x"}
    assert plan.budget == (None if cls.keeps_all else 64)
    assert plan.describe().startswith(f"method={name}")
