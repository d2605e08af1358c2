"""HF LLaVA-1.5 / LLaVA-NeXT: exactly the kept tokens reach the language model, reversibly."""

from __future__ import annotations

import pytest
import torch
from conftest import random_image

from scope_eval import PruningError, prune, restore, scope
from scope_eval.pruning import METHODS, build_method  # noqa: F401  (fills the registry)

# Every registered pre-LLM method (a new method file joins this matrix by itself); methods that need an
# input the tiny models lack (cdpruner: a CLIP text tower) and the in-LLM ones have their own tests.
PRUNING_METHODS = sorted(
    name for name, cls in METHODS.items() if cls.stage == "vision" and not cls.keeps_all and not cls.needs_instruction
)
# cdpruner needs text_encoder= and processor=: its counts, generate and restore are in test_vispruner_cdpruner.py
TEXTS = ["<image>\nwhat is in the image ?", "how many red circle ? is there a blue square ? <image>\nyes"]


def batch(processor, sizes, texts=TEXTS):
    images = [random_image(h, w, seed=h * w) for h, w in sizes]  # same size, same image
    return processor(images=images, text=texts[: len(images)], return_tensors="pt", padding=True)


class LanguageModelInputs:
    """Records the sequence length the language model receives."""

    def __init__(self, model):
        self.lengths = []
        self.handle = model.model.language_model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        self.lengths.append(kwargs["inputs_embeds"].shape[1])

    def close(self):
        self.handle.remove()


def text_tokens(inputs, image_token_id):
    mask = inputs["attention_mask"].bool()
    return [int(((ids != image_token_id) & m).sum()) for ids, m in zip(inputs["input_ids"], mask)]


def hooks(model):
    # transformers installs output-capturing hooks of its own on first use; compare, don't expect none
    return {name: (dict(m._forward_hooks), dict(m._forward_pre_hooks)) for name, m in model.named_modules()}


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, hooks(model)


def assert_pristine(model, reference):
    reference_state, reference_hooks = reference
    assert "get_image_features" not in vars(model.model)
    assert "generate" not in vars(model)
    assert hooks(model) == reference_hooks
    state = model.state_dict()
    assert state.keys() == reference_state.keys()
    assert all(torch.equal(state[k], reference_state[k]) for k in state)


@pytest.mark.parametrize("method", PRUNING_METHODS)
@pytest.mark.parametrize("budget", [64, 192])
def test_llava15_exact_token_count(hf_llava, method, budget):
    model, processor = hf_llava
    inputs = batch(processor, [(336, 336), (480, 640)])
    recorder = LanguageModelInputs(model)
    try:
        with prune(model, method, budget) as handle, torch.no_grad():
            logits = model(**inputs).logits
            counts = handle.take_counts()
    finally:
        recorder.close()
    assert counts == [budget, budget]
    texts = text_tokens(inputs, model.config.image_token_id)
    assert recorder.lengths == [max(texts) + budget]
    assert logits.shape[1] == max(texts) + budget
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("policy", ["per_crop", "global"])
@pytest.mark.parametrize("method", PRUNING_METHODS)
def test_llava_next_exact_token_count(hf_llava_next, method, policy):
    model, processor = hf_llava_next
    budget = 160
    inputs = batch(processor, [(480, 640), (300, 900)])  # 5 crops and 4 crops
    recorder = LanguageModelInputs(model)
    try:
        with prune(model, method, budget, budget_policy=policy) as handle, torch.no_grad():
            model(**inputs)
            counts = handle.take_counts()
    finally:
        recorder.close()
    expected = [5 * (budget // 5), 4 * (budget // 4)] if policy == "per_crop" else [budget, budget]
    assert counts == expected
    texts = text_tokens(inputs, model.config.image_token_id)
    assert recorder.lengths == [max(t + c for t, c in zip(texts, expected))]


def test_llava_next_per_crop_realised_count_below_budget(hf_llava_next):
    model, processor = hf_llava_next
    with prune(model, "scope", 64) as handle, torch.no_grad():
        model(**batch(processor, [(480, 640)]))
        assert handle.take_counts() == [60]  # 5 crops x floor(64 / 5)


def test_full_budget_is_identical_to_unpruned(hf_llava):
    model, processor = hf_llava
    inputs = batch(processor, [(336, 336), (480, 640)])
    with torch.no_grad():
        reference = model(**inputs).logits
        for method in ("scope", "saliency", "random"):
            with prune(model, method, 576):
                assert torch.equal(model(**inputs).logits, reference)


def test_removal_restores_model_exactly(hf_llava, hf_llava_next):
    for model, processor, size in ((*hf_llava, (336, 336)), (*hf_llava_next, (480, 640))):
        inputs = batch(processor, [size])
        with torch.no_grad():
            before = model(**inputs).logits
        state = snapshot(model)
        with torch.no_grad():
            handle = prune(model, "scope", 64, processor=processor)
            model(**batch(processor, [size]))
            handle.remove()
            after = model(**inputs).logits
        assert torch.equal(before, after)
        assert "replace_image_token" not in vars(processor)
        assert_pristine(model, state)
        scope(model, token_num=64)
        restore(model)
        assert_pristine(model, state)


def test_batched_left_padded_matches_single(hf_llava_next):
    """Images of different sizes (5 and 4 crops) in one left-padded batch: each row gets its own tokens.

    transformers' LLaVA does not shift positions for left padding (stock batched logits differ from
    single ones for padded rows too), so padded rows are compared by the sequence they receive.
    """
    model, processor = hf_llava_next
    sizes = [(480, 640), (300, 900)]
    seen = []
    spy = model.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((args[0], kwargs["attention_mask"])), with_kwargs=True
    )
    try:
        with prune(model, "scope", 160, budget_policy="per_crop") as handle, torch.no_grad():
            both = model(**batch(processor, sizes)).logits[:, -1]
            singles = [model(**batch(processor, [size], texts=[text])).logits[:, -1] for size, text in zip(sizes, TEXTS)]
            assert handle.take_counts() == [160, 160, 160, 160]
    finally:
        spy.remove()
    (batch_ids, batch_mask), *single_inputs = seen
    padded = (batch_mask[:, 0] == 0).tolist()
    assert padded.count(True) == 1  # one row is left-padded, the other is not
    for row, (ids, mask) in enumerate(single_inputs):
        assert torch.equal(batch_ids[row][batch_mask[row].bool()], ids[0][mask[0].bool()])
    full = padded.index(False)
    torch.testing.assert_close(both[full : full + 1], singles[full], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["none", *PRUNING_METHODS])
def test_generate_every_method(hf_llava, method):
    model, processor = hf_llava
    inputs = batch(processor, [(336, 336), (480, 640)])
    budget = None if method == "none" else 64
    with prune(model, method, budget) as handle, torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        assert handle.take_counts() == [576 if method == "none" else 64] * 2
    assert out.shape[0] == 2


def test_processor_patch_emits_kept_count(hf_llava_next):
    model, processor = hf_llava_next
    with prune(model, "scope", 160, processor=processor) as handle, torch.no_grad():
        inputs = batch(processor, [(480, 640)])
        assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 160
        model.generate(**inputs, max_new_tokens=2, do_sample=False)
        assert handle.take_counts() == [160]


def test_none_runs_the_stock_model(hf_llava_next):
    model, processor = hf_llava_next
    inputs = batch(processor, [(480, 640)])
    with torch.no_grad():
        reference = model(**inputs).logits
        with prune(model, "none") as handle:
            assert torch.equal(model(**inputs).logits, reference)
            stock = int((inputs["input_ids"] == model.config.image_token_id).sum())
            assert handle.take_counts() == [stock]


def test_text_only_prompt_untouched(hf_llava):
    model, processor = hf_llava
    inputs = processor.tokenizer(["what is in the image ?"], return_tensors="pt")
    with torch.no_grad():
        reference = model(**inputs).logits
        with prune(model, "scope", 64) as handle:
            assert torch.equal(model(**inputs).logits, reference)
            assert handle.take_counts() == []


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype):
    from tiny_models import tiny_llava

    model, processor = tiny_llava()
    model = model.to(dtype)
    inputs = batch(processor, [(336, 336)])
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    with prune(model, "scope", 64) as handle, torch.no_grad():
        logits = model(**inputs).logits
        assert handle.take_counts() == [64]
    assert torch.isfinite(logits.float()).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="scope", budget=0), "at least 1"),
        (dict(method="scope", budget=-3), "at least 1"),
        (dict(method="scope", budget=2.5), "whole number"),
        (dict(method="scope", budget=577), "larger than the 576"),
        (dict(method="scope", budget=None), "needs a budget"),
        (dict(method="none", budget=64), "takes no budget"),
        (dict(method="bogus", budget=64), "unknown pruning method 'bogus'"),
        (dict(method="scope", budget=64, gamma=2), "options are"),
        (dict(method="scope", budget=64, budget_policy="sideways"), "budget_policy"),
    ],
)
def test_bad_input_is_refused_clearly(hf_llava, kwargs, message):
    model, _ = hf_llava
    with pytest.raises(PruningError, match=message):
        prune(model, **kwargs)
    assert "get_image_features" not in vars(model.model)


def test_pruning_twice_is_refused(hf_llava):
    model, _ = hf_llava
    with prune(model, "scope", 64):
        with pytest.raises(PruningError, match="already pruned"):
            prune(model, "random", 64)
