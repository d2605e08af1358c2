"""qwen2_vl_scope / qwen2_5_vl_scope in-process against lmms-eval's own qwen2_vl / qwen2_5_vl wrappers.

Random toy Qwen checkpoints (scope_eval.toy.qwen2_vl builders, saved to a temporary folder) and pictures of
several sizes, so each image brings its own number of visual tokens N (Qwen's dynamic resolution).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lmms_eval.api.instance import Instance

from conftest import random_image
from scope_eval.lmms.errors import RunAborted

SIZES = [(336, 336), (280, 448), (476, 224), (200, 300)]  # (height, width): 144, 160, 136, 77 merged tokens
QUESTION = "Is there a red circle in the image?"
TASK, SPLIT = "qwen_task", "test"
LIMITS = dict(min_pixels=3136, max_pixels=200704)  # pinned: N per image depends on them


def docs() -> list[dict]:
    return [{"image": random_image(h, w, seed=i), "question": f"{QUESTION} {i}"} for i, (h, w) in enumerate(SIZES)]


def merged_tokens(height: int, width: int) -> int:
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    h, w = smart_resize(height, width, factor=28, min_pixels=LIMITS["min_pixels"], max_pixels=LIMITS["max_pixels"])
    return (h // 28) * (w // 28)


def saved(built: tuple, directory: Path) -> Path:
    model, processor = built
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory) -> Path:
    from scope_eval.toy.qwen2_vl import build_toy_qwen2_vl

    return saved(build_toy_qwen2_vl(seed=3), tmp_path_factory.mktemp("models") / "qwen2-vl-toy-random")


@pytest.fixture(scope="module")
def qwen25_dir(tmp_path_factory) -> Path:
    from scope_eval.toy.qwen2_vl import build_toy_qwen2_5_vl

    return saved(build_toy_qwen2_5_vl(seed=4), tmp_path_factory.mktemp("models") / "qwen2.5-vl-toy-random")


def simple_requests(items: list[dict]) -> list[Instance]:
    """lmms-eval simple-path requests: (context, gen_kwargs, doc_to_visual, doc_id, task, split)."""
    gen_kwargs = {"max_new_tokens": 4, "temperature": 0, "do_sample": False}
    return [
        Instance("generate_until", (doc["question"], dict(gen_kwargs), lambda d: [d["image"]], i, TASK, SPLIT), idx=0,
                 metadata={"task": TASK, "doc_id": i, "repeats": 1})
        for i, doc in enumerate(items)
    ]


def chat_requests(items: list[dict]) -> list[Instance]:
    """lmms-eval chat-path requests: (context, doc_to_messages, gen_kwargs, doc_id, task, split)."""
    gen_kwargs = {"max_new_tokens": 4, "temperature": 0, "do_sample": False}

    def messages(doc):
        return [{"role": "user", "content": [{"type": "image", "url": doc["image"]}, {"type": "text", "text": doc["question"]}]}]

    return [
        Instance("generate_until", (doc["question"], messages, dict(gen_kwargs), i, TASK, SPLIT), idx=0,
                 metadata={"task": TASK, "doc_id": i, "repeats": 1})
        for i, doc in enumerate(items)
    ]


def answer(wrapper, requests: list[Instance]) -> list:
    wrapper.task_dict = {TASK: {SPLIT: docs()}}
    return wrapper.generate_until(requests)


def texts(results: list) -> list[str]:
    return [getattr(r, "text", r) for r in results]


def qwen2(directory: Path, **pruning):
    from scope_eval.lmms.models.qwen2_vl_scope import Qwen2VlScope

    return Qwen2VlScope(pretrained=str(directory), device="cpu", device_map="cpu", **LIMITS, **pruning)


def qwen25(directory: Path, **pruning):
    from scope_eval.lmms.models.qwen2_5_vl_scope import Qwen2_5VlScope

    return Qwen2_5VlScope(pretrained=str(directory), device="cpu", device_map="cpu", **LIMITS, **pruning)


def test_registered_on_the_paths_upstream_resolves_to():
    from lmms_eval.models.chat.qwen2_5_vl import Qwen2_5_VL as ChatQwen2_5_VL
    from lmms_eval.models.simple.qwen2_vl import Qwen2_VL

    from scope_eval.lmms.models.qwen2_5_vl_scope import Qwen2_5VlScope
    from scope_eval.lmms.models.qwen2_vl_scope import Qwen2VlScope
    from scope_eval.lmms.registration import MANIFESTS

    manifests = {m.model_id: m for m in MANIFESTS}
    assert manifests["qwen2_vl_scope"].simple_class_path.endswith("qwen2_vl_scope.Qwen2VlScope")
    assert manifests["qwen2_5_vl_scope"].chat_class_path.endswith("qwen2_5_vl_scope.Qwen2_5VlScope")
    assert issubclass(Qwen2VlScope, Qwen2_VL) and Qwen2VlScope.is_simple
    assert issubclass(Qwen2_5VlScope, ChatQwen2_5_VL) and not Qwen2_5VlScope.is_simple


def test_qwen2_vl_scope_none_equals_upstream_qwen2_vl_and_records_tokens(qwen2_dir):
    from lmms_eval.models.simple.qwen2_vl import Qwen2_VL

    stock = Qwen2_VL(pretrained=str(qwen2_dir), device="cpu", device_map="cpu", **LIMITS)
    expected = texts(answer(stock, simple_requests(docs())))
    wrapper = qwen2(qwen2_dir, method="none")
    results = answer(wrapper, simple_requests(docs()))
    assert texts(results) == expected and any(expected)
    assert [r.token_counts.visual_tokens for r in results] == [[merged_tokens(h, w)] for h, w in SIZES]
    cost = results[0].token_counts.cost
    assert cost["generate_s"] > 0 and cost["ttft_s"] > 0 and cost["llm_prefill_flops"] > 0
    assert cost["prefill_tokens"] > merged_tokens(*SIZES[0])


def test_qwen2_5_vl_scope_none_equals_upstream_qwen2_5_vl_and_records_tokens(qwen25_dir):
    from lmms_eval.models.chat.qwen2_5_vl import Qwen2_5_VL as ChatQwen2_5_VL

    stock = ChatQwen2_5_VL(pretrained=str(qwen25_dir), device="cpu", device_map="cpu", **LIMITS)
    expected = texts(answer(stock, chat_requests(docs())))
    results = answer(qwen25(qwen25_dir, method="none"), chat_requests(docs()))
    assert texts(results) == expected and any(expected)
    assert [r.token_counts.visual_tokens for r in results] == [[merged_tokens(h, w)] for h, w in SIZES]


@pytest.mark.parametrize("ratio", [0.25, 0.1])
def test_keep_ratio_keeps_each_images_own_share(qwen2_dir, ratio):
    """K = max(1, round(r * N_i)) per image, N_i from the image's own size; recorded per sample."""
    results = answer(qwen2(qwen2_dir, method="divprune", keep_ratio=ratio), simple_requests(docs()))
    expected = [[max(1, int(ratio * merged_tokens(h, w) + 0.5))] for h, w in SIZES]
    assert [r.token_counts.visual_tokens for r in results] == expected


def test_keep_ratio_and_budget_together_are_refused(qwen2_dir):
    with pytest.raises(RunAborted, match="exactly one of budget"):
        qwen2(qwen2_dir, method="scope", budget=16, keep_ratio=0.25)


@pytest.mark.parametrize("build", [qwen2, qwen25])
def test_batch_size_above_one_is_refused_with_the_reason(qwen2_dir, qwen25_dir, build):
    """Batched Qwen prompts pad to the longest sample, and each image keeps its own K: refused, not approximated."""
    directory = qwen2_dir if build is qwen2 else qwen25_dir
    with pytest.raises(RunAborted, match="batch_size=1"):
        build(directory, method="none", batch_size="2")


def test_saliency_layer_model_arg_chooses_the_vit_block(qwen2_dir, qwen25_dir):
    """saliency_layer= in --model_args reaches the adapter (default: Qwen2-VL block -2, Qwen2.5-VL the last
    full-attention block); a window-attention block of Qwen2.5-VL or a non-integer is refused by name."""
    assert qwen2(qwen2_dir, method="scope", keep_ratio=0.25).pruning.saliency_block == 2  # depth 4: block -2
    chosen = qwen2(qwen2_dir, method="scope", keep_ratio=0.25, saliency_layer=-1)
    assert chosen.pruning.saliency_block == 3
    assert qwen25(qwen25_dir, method="scope", keep_ratio=0.25).pruning.saliency_block == 3  # fullatt [1, 3]
    with pytest.raises(RunAborted, match="window-attention block"):
        qwen25(qwen25_dir, method="scope", keep_ratio=0.25, saliency_layer=2)
    with pytest.raises(RunAborted, match="saliency_layer must be a whole number"):
        qwen2(qwen2_dir, method="scope", keep_ratio=0.25, saliency_layer="last")
