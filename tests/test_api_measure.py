"""The Python API's handle: the last call's timings and FLOPs (handle.measure), and take_counts' unit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

import scope_eval
from scope_eval import prune
from scope_eval.cost.flops import prefill_flops
from scope_eval.pruning.plan import PruningPlan
from scope_eval.toy import ANSWER_STYLE, scene

CHECKPOINT = Path(scope_eval.__file__).parent / "toy" / "weights" / "llava15"


@pytest.fixture(scope="module")
def toy():
    model = AutoModelForImageTextToText.from_pretrained(CHECKPOINT).eval()
    processor = AutoProcessor.from_pretrained(CHECKPOINT)
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is there a red circle in the image?" + ANSWER_STYLE}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    return model, processor(images=scene([("red", "circle", "left")]), text=prompt, return_tensors="pt")


@pytest.mark.parametrize("method", ["scope", "fastv"])
def test_handle_measure_keeps_the_last_calls_timings_and_flops(toy, method):
    model, inputs = toy
    options = {"layer": 1, "budget_unit": "after_layer"} if method == "fastv" else {}
    with prune(model, method, budget=64, **options) as handle, torch.no_grad():
        assert handle.last_timing is None and handle.last_flops is None
        output = handle.measure(lambda: model.generate(**inputs, max_new_tokens=2, do_sample=False))
        timing, flops = handle.last_timing, handle.last_flops
        counts = handle.take_counts()
    assert output.shape[0] == 1 and timing.first_token > 0 and timing.vision > 0 and timing.selection > 0
    assert timing.first_token <= timing.total and timing.prefill_tokens > 0
    if method == "scope":
        assert counts == [64] and all(isinstance(n, int) for n in counts)
        expected = prefill_flops(model.config, PruningPlan.build("scope", 64), crops=1, projected_tokens=64,
                                 prefill_tokens=timing.prefill_tokens)  # fmt: skip
        assert flops == expected and flops.selection > 0
    else:
        assert isinstance(counts[0], float) and counts[0] > 64  # the layer average: layer 0 still sees 576 tokens
        assert flops.selection > 0 and flops.language_model > 0
