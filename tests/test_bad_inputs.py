"""Bad inputs to the library (Python API, lmms-eval model_args, methods): a clear error naming the fix,
or the correct result; never a silently wrong selection. One table row per input (issue 11)."""

from __future__ import annotations

import copy
import pickle
import re
import warnings
from types import SimpleNamespace

import pytest
import torch
from conftest import random_image

from scope_eval import PruningError, handle_of, prune, restore
from scope_eval.lmms.options import split_model_args
from scope_eval.pruning import VisualTokens, build_method

MODEL_ARGS = {"pretrained", "device_map", "dtype", "device", "batch_size"}
PRUNING_METHODS = ["random", "saliency", "coverage", "scope", "divprune", "visionzip"]


def one_image(processor, size=(336, 336)):
    return processor(images=[random_image(*size)], text=["<image>\nwhat is in the image ?"], return_tensors="pt")


def placeholders(processor, model) -> int:
    return int((one_image(processor)["input_ids"] == model.config.image_token_id).sum())


# -- budgets and options: lmms-eval model_args --------------------------------------------------------
# (model_args as lmms-eval hands them over: it parses "True" to True and "64.0" to 64.0, expected message)
BAD_MODEL_ARGS = [
    ({"method": "scope", "budget": True}, "True/False are not budgets"),
    ({"method": "scope", "budget": False}, "True/False are not budgets"),
    ({"method": "scope", "budget": "true"}, "pass an integer such as 64"),
    ({"method": "scope", "budget": "sixty"}, "pass an integer such as 64"),
    ({"method": "scope", "budget": 64.5}, "pass an integer such as 64"),
    ({"method": "scope", "budget": "64.5"}, "pass an integer such as 64"),
    ({"method": "scope", "budget": float("nan")}, "pass an integer such as 64"),
    ({"method": "scope", "budget": 0.0}, "at least 1"),
    ({"method": "visionzip", "budget": 64, "contextual": 100}, "contextual=100 exceeds the budget 64; lower contextual"),
    ({"method": "visionzip", "budget": "64.0", "contextual": 65}, "contextual=65 exceeds the budget 64"),
    ({"method": "scope", "budget": 64, "keep_ratio": 0.25}, "pass exactly one of budget"),
    ({"method": "scope", "keep_ratio": "1.5"}, "keep_ratio must be in (0, 1]"),
    ({"method": "scope", "keep_ratio": "a quarter"}, "keep_ratio must be a number"),
    ({"method": "none", "keep_ratio": 0.5}, "takes no keep_ratio"),
]


@pytest.mark.parametrize("args, message", BAD_MODEL_ARGS, ids=[repr(a) for a, _ in BAD_MODEL_ARGS])
def test_bad_model_args_fail_before_loading(args, message):
    with pytest.raises(PruningError, match=re.escape(message)):
        split_model_args("llava_hf_scope", {"pretrained": "x", **args}, MODEL_ARGS)


@pytest.mark.parametrize("budget", [64, 64.0, "64", "64.0", " 64 "])
def test_whole_number_model_arg_budget_becomes_that_int(budget):
    plan, _ = split_model_args("llava_hf_scope", {"method": "scope", "budget": budget}, MODEL_ARGS)
    assert plan.budget == 64 and type(plan.budget) is int


@pytest.mark.parametrize("ratio", [0.25, "0.25", " 0.25 "])
def test_model_arg_keep_ratio_becomes_a_ratio_plan(ratio):
    plan, _ = split_model_args("qwen2_vl_scope", {"method": "scope", "keep_ratio": ratio}, MODEL_ARGS)
    assert plan.keep_ratio == 0.25 and plan.budget is None and plan.ratio_budget(345) == 86


# -- budgets and options: the Python API -------------------------------------------------------------
BAD_PRUNE_CALLS = [
    (dict(method="scope", budget=True), PruningError, "True/False are not budgets"),
    (dict(method="random", budget=False), PruningError, "True/False are not budgets"),
    (dict(method="scope", budget="64"), PruningError, "pass an integer such as 64"),
    (dict(method="visionzip", budget=64, contextual=100), PruningError, "contextual=100 exceeds the budget 64"),
    (dict(method="scope", budget=577.0), PruningError, "larger than the 576 visual tokens"),
]


@pytest.mark.parametrize("kwargs, error, message", BAD_PRUNE_CALLS, ids=[repr(k) for k, _, _ in BAD_PRUNE_CALLS])
def test_bad_prune_call_is_refused_and_leaves_the_model_untouched(hf_llava, kwargs, error, message):
    model, processor = hf_llava
    with pytest.raises(error, match=re.escape(message)):
        prune(model, processor=processor, **kwargs)
    assert handle_of(model) is None and "get_image_features" not in vars(model.model)
    assert "replace_image_token" not in vars(processor)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: restore(None), "restore() takes the model that prune() or scope() was given, got NoneType"),
        (lambda: handle_of("model"), "handle_of() takes the model that prune() or scope() was given, got str"),
        (lambda: prune(None, "scope", 64), "cannot prune a NoneType: supported are"),
    ],
    ids=["restore(None)", "handle_of(str)", "prune(None)"],
)
def test_a_non_model_is_refused_clearly(call, message):
    with pytest.raises(PruningError, match=re.escape(message)):
        call()


def test_whole_number_float_budget_generates_with_that_int(hf_llava):
    model, processor = hf_llava
    with prune(model, "scope", 64.0, processor=processor) as handle, torch.no_grad():
        assert handle.plan.budget == 64 and type(handle.plan.budget) is int
        inputs = one_image(processor)
        assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 64
        model.generate(**inputs, max_new_tokens=2, do_sample=False)
        assert handle.take_counts() == [64]


# -- methods: meaningless inputs are refused, empty batches give the empty selection ------------------
def tokens(batch=2, n=24, d=8, *, features=None, saliency=None):
    generator = torch.Generator().manual_seed(batch * 1000 + n)
    features = torch.randn(batch, n, d, generator=generator) if features is None else features
    saliency = torch.rand(batch, n, generator=generator) if saliency is None else saliency
    return VisualTokens(features=features, saliency=saliency, keys=features.clone(), project=lambda x: x * 2 + 1)


NAN = float("nan")
MEANINGLESS_INPUTS = [
    ("scope", lambda: tokens(features=torch.full((2, 24, 8), NAN)), "visual features contain NaN or inf"),
    ("divprune", lambda: tokens(features=torch.full((2, 24, 8), NAN)), "visual features contain NaN or inf"),
    ("saliency", lambda: tokens(saliency=torch.full((2, 24), NAN)), "CLS saliency contains NaN or inf"),
    ("scope", lambda: tokens(saliency=-torch.ones(2, 24)), "saliency must be non-negative"),
]


@pytest.mark.parametrize("method, make, message", MEANINGLESS_INPUTS, ids=[f"{m}-{msg}" for m, _, msg in MEANINGLESS_INPUTS])
def test_meaningless_input_is_refused(method, make, message):
    with pytest.raises(PruningError, match=re.escape(message)):
        build_method(method).select(make(), 8)


@pytest.mark.parametrize("method", PRUNING_METHODS)
def test_empty_batch_selects_nothing(method):
    kept = build_method(method).select(tokens(batch=0), 8)
    assert kept.indices.shape == (0, 8) and kept.count == 8


# -- methods: degenerate selections are flagged, valid ones are not -----------------------------------
ZEROS = torch.zeros(2, 24, 8)
SAME_ROW = torch.ones(2, 24, 8)
# (method, options, inputs): the input gives the method no preference, so the lowest indices are kept
DEGENERATE_INPUTS = [
    ("scope", {}, lambda: tokens(saliency=torch.zeros(2, 24))),
    ("scope", {}, lambda: tokens(features=ZEROS)),
    ("scope", {"alpha": 1e6}, lambda: tokens(saliency=torch.full((2, 24), 1 / 25))),  # a**alpha underflows to 0
    ("scope", {"combine": "add"}, lambda: tokens(features=ZEROS, saliency=torch.full((2, 24), 0.3))),
    ("coverage", {}, lambda: tokens(features=ZEROS)),
    ("saliency", {}, lambda: tokens(saliency=torch.zeros(2, 24))),
    ("divprune", {"on": "features"}, lambda: tokens(features=ZEROS)),
    ("divprune", {}, lambda: tokens(features=SAME_ROW)),  # identical projected tokens
]


@pytest.mark.parametrize("method, options, make", DEGENERATE_INPUTS, ids=[f"{m}{o}-{i}" for i, (m, o, _) in enumerate(DEGENERATE_INPUTS)])
def test_degenerate_selection_is_flagged(method, options, make):
    kept = build_method(method, **options).select(make(), 8)
    assert kept.indices.tolist() == [list(range(8))] * 2  # what the tie rule alone gives
    assert kept.degenerate.tolist() == [True, True]


@pytest.mark.parametrize("method", ["scope", "coverage", "saliency", "divprune"])
def test_ordinary_selection_is_not_flagged(method):
    kept = build_method(method).select(tokens(), 8)
    assert kept.degenerate.tolist() == [False, False]


def test_only_the_degenerate_image_is_flagged():
    saliency = torch.rand(2, 24, generator=torch.Generator().manual_seed(3))
    saliency[1] = 0
    assert build_method("scope").select(tokens(saliency=saliency), 8).degenerate.tolist() == [False, True]


def test_full_budget_is_never_degenerate():
    assert build_method("scope").select(tokens(saliency=torch.zeros(2, 24)), 24).degenerate is None


def test_degenerate_images_are_counted_by_the_handle_and_warned_once(hf_llava):
    model, processor = hf_llava
    inputs = processor(
        images=[random_image(336, 336, seed=1), random_image(336, 336, seed=2)],
        text=["<image>\nwhat is in the image ?"] * 2,
        return_tensors="pt",
        padding=True,
    )
    with prune(model, "scope", 64, alpha=1e6) as handle, torch.no_grad():
        with pytest.warns(RuntimeWarning, match="2 of 2 image\\(s\\) had a degenerate selection"):
            model(**inputs)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a second batch is counted, not warned about again
            model(**inputs)
        assert handle.take_counts() == [64] * 4
        assert handle.take_degenerate() == 4 and handle.take_degenerate() == 0
    with prune(model, "scope", 64) as handle, torch.no_grad():  # the paper's alpha: not degenerate
        model(**inputs)
        assert handle.take_degenerate() == 0


def test_degenerate_count_reaches_the_logged_sample():
    from lmms_eval.api.instance import Instance

    from scope_eval.lmms.tracking import generate_one_by_one, guarded_generate
    from scope_eval.pruning.plan import PruningPlan

    recorded = SimpleNamespace(counts=[], degenerate=0)
    handle = SimpleNamespace(take_counts=lambda: recorded.counts, take_degenerate=lambda: recorded.degenerate, take_layer_counts=list)

    def generate():
        recorded.counts, recorded.degenerate = [64], 1
        return "yes"

    owner = SimpleNamespace(model_id="llava_scope", sample=None, pruning=handle, pruning_plan=PruningPlan.build("scope", 64))
    metadata = {"task": "task_a", "doc_id": 5, "repeats": 1}
    request = Instance("generate_until", ("ctx", {}, lambda doc: [], 5, "task_a", "test"), idx=0, metadata=metadata)
    guarded = guarded_generate(owner, generate)
    (answer,) = generate_one_by_one(owner, [request], lambda requests: [guarded()])
    logged = answer.token_counts.to_dict()
    assert answer.text == "yes" and logged["visual_tokens"] == [64] and logged["degenerate_selections"] == 1


# -- autograd on: selection works and the language model still gets gradients -------------------------
@pytest.mark.parametrize("method", PRUNING_METHODS)
def test_selection_works_with_autograd_on(hf_llava, method):
    model, processor = hf_llava
    assert torch.is_grad_enabled()
    with prune(model, method, 64) as handle:
        logits = model(**one_image(processor)).logits
        assert handle.take_counts() == [64]
    assert logits.requires_grad


def test_scope_select_accepts_features_that_require_grad():
    from scope_eval.pruning import scope_select

    features = torch.randn(1, 24, 8, requires_grad=True)
    saliency = torch.rand(1, 24).requires_grad_()
    assert torch.equal(scope_select(features, saliency, 8), scope_select(features.detach(), saliency.detach(), 8))


# -- one processor, two pruned models ------------------------------------------------------------------
@pytest.mark.parametrize("first_removed", ["a", "b"])
def test_shared_processor_is_refused_and_restored_exactly(hf_llava, first_removed):
    from tiny_models import tiny_llava

    model_a, processor = hf_llava
    model_b, _ = tiny_llava(seed=1)
    stock = placeholders(processor, model_a)
    handles = {"a": prune(model_a, "scope", 64, processor=processor)}
    with pytest.raises(PruningError, match="give each pruned model its own processor"):
        prune(model_b, "scope", 128, processor=processor)
    assert handle_of(model_b) is None and "get_image_features" not in vars(model_b.model)
    handles["b"] = prune(model_b, "scope", 128)  # without the processor: allowed
    assert placeholders(processor, model_a) == 64
    for name in (first_removed, "b" if first_removed == "a" else "a"):
        handles[name].remove()
    assert placeholders(processor, model_a) == stock and "replace_image_token" not in vars(processor)
    with prune(model_b, "scope", 128, processor=processor):  # free again once the first user is gone
        assert placeholders(processor, model_b) == 128
    assert placeholders(processor, model_a) == stock


# -- copies of a pruned model ----------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["none", "scope"])
@pytest.mark.parametrize("copier", [copy.deepcopy, pickle.dumps], ids=["deepcopy", "pickle"])
def test_a_pruned_model_cannot_be_copied(method, copier):
    from tiny_models import tiny_llava

    # A fresh model: once called, transformers hangs local hooks on modules that make any model unpicklable,
    # which would answer the pickle case before our guard does.
    model, _ = tiny_llava()
    with prune(model, method, None if method == "none" else 64):
        with pytest.raises(PruningError, match="restore\\(model\\) first"):
            copier(model)
    duplicate = copy.deepcopy(model)  # restored: copies as the stock model
    assert "get_image_features" not in vars(duplicate.model) and "generate" not in vars(duplicate)
