"""The original LLaVA codebase (llava package): the same methods, LLaVA-1.5 and LLaVA-NeXT (anyres)."""

from __future__ import annotations

import pytest
import torch
from conftest import random_image

pytest.importorskip("llava.model")
from llava.mm_utils import process_images, tokenizer_image_token  # noqa: E402

from scope_eval import PruningError, prune  # noqa: E402
from scope_eval.pruning import METHODS as REGISTRY  # noqa: E402

IMAGE_TOKEN_INDEX = -200
# Every registered pre-LLM method (a new method file joins this matrix by itself); cdpruner is refused on
# this backend (tests/test_vispruner_cdpruner.py) and the in-LLM methods have tests/test_llm_stage.py.
METHODS = sorted(
    name for name, cls in REGISTRY.items() if cls.stage == "vision" and not cls.keeps_all and not cls.needs_instruction
)
# cdpruner is refused on this backend (no tokenizer to read the prompt): test_vispruner_cdpruner.py checks the refusal


@pytest.fixture(scope="module")
def llava15(tmp_path_factory):
    from tiny_models import tiny_llava_original

    return tiny_llava_original(tmp_path_factory.mktemp("llava15"))


@pytest.fixture(scope="module")
def llava_next(tmp_path_factory):
    from tiny_models import tiny_llava_original

    return tiny_llava_original(tmp_path_factory.mktemp("llava_next"), anyres=True)


def inputs(bundle, size, prompt="what is <image>\nin the image ?"):
    model, tokenizer, image_processor = bundle
    image = random_image(*size, seed=size[0] * size[1])
    images = process_images([image], image_processor, model.config)
    ids = tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt").unsqueeze(0)
    return dict(input_ids=ids, images=images, image_sizes=[image.size])


def spliced_length(model, batch):
    with torch.no_grad():
        return model(**batch).logits.shape[1]


@pytest.mark.parametrize("method", METHODS)
def test_llava15_exact_count(llava15, method):
    model = llava15[0]
    batch = inputs(llava15, (336, 336))
    text = batch["input_ids"].shape[1] - 1
    with prune(model, method, 64) as handle:
        assert spliced_length(model, batch) == text + 64
        assert handle.take_counts() == [64]
        with torch.no_grad():
            out = model.generate(batch["input_ids"], images=batch["images"], image_sizes=batch["image_sizes"], max_new_tokens=2, do_sample=False)
        assert handle.take_counts() == [64]
        assert out.shape[0] == 1


@pytest.mark.parametrize("policy, size, expected", [
    ("per_crop", (480, 640), 5 * (160 // 5)),
    ("per_crop", (300, 900), 4 * (160 // 4)),
    ("global", (480, 640), 160),
    ("global", (300, 900), 160),
])
@pytest.mark.parametrize("method", ["scope", "visionzip", "random"])
def test_llava_next_exact_count(llava_next, method, policy, size, expected):
    model = llava_next[0]
    batch = inputs(llava_next, size)
    text = batch["input_ids"].shape[1] - 1
    with prune(model, method, 160, budget_policy=policy) as handle:
        assert spliced_length(model, batch) == text + expected
        assert handle.take_counts() == [expected]


def test_full_budget_identical_and_restore(llava15):
    model = llava15[0]
    batch = inputs(llava15, (336, 336))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        reference = model(**batch).logits
        with prune(model, "scope", 576):
            assert torch.equal(model(**batch).logits, reference)
        with prune(model, "scope", 64):
            assert model(**batch).logits.shape[1] < reference.shape[1]
        assert torch.equal(model(**batch).logits, reference)
    assert "prepare_inputs_labels_for_multimodal" not in vars(model)
    assert "encode_images" not in vars(model)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_none_is_stock_and_counts_unpadded_newline_tokens(llava_next):
    model = llava_next[0]
    batch = inputs(llava_next, (480, 640))
    with torch.no_grad():
        reference = model(**batch).logits
        with prune(model, "none") as handle:
            assert torch.equal(model(**batch).logits, reference)
            assert handle.take_counts() == [reference.shape[1] - (batch["input_ids"].shape[1] - 1)]


def test_text_only_untouched(llava15):
    model, tokenizer, _ = llava15
    ids = tokenizer("what is in the image ?", return_tensors="pt").input_ids
    with torch.no_grad():
        reference = model(input_ids=ids).logits
        with prune(model, "scope", 64) as handle:
            assert torch.equal(model(input_ids=ids).logits, reference)
            assert handle.take_counts() == []


def test_bad_budget(llava15, llava_next):
    with pytest.raises(PruningError, match="larger than the 576"):
        prune(llava15[0], "scope", 600)
    with pytest.raises(PruningError, match="larger than the 2880"):
        prune(llava_next[0], "scope", 3000)
    with prune(llava_next[0], "scope", 3) as handle, pytest.raises(PruningError, match="0 tokens per crop"):
        spliced_length(llava_next[0], inputs(llava_next, (480, 640)))
    assert not handle.active or handle.take_counts() == []


def test_fp32_tower_under_bf16_language_model(tmp_path):
    """accelerate's device_map='auto' leaves the tower in fp32 under an fp16/bf16 model; stock casts, so must we."""
    from tiny_models import tiny_llava_original

    bundle = tiny_llava_original(tmp_path)
    model = bundle[0].to(torch.bfloat16)
    model.get_model().vision_tower.to(torch.float32)
    batch = inputs(bundle, (336, 336))
    with prune(model, "scope", 64) as handle, torch.no_grad():
        logits = model(**batch).logits
        assert handle.take_counts() == [64]
    assert torch.isfinite(logits.float()).all()
