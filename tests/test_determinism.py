"""The random baseline and the regression verdict do not depend on the machine's arithmetic.

Features differ in their last bits between machines (CPU matmul kernels, thread count). `random` seeds
from the input pixels, so its draw must not move when the features do; and the regression check must
give the same verdict on answers computed under two thread counts or with last-bit noise.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import random_image

from scope_eval import prune
from scope_eval.adapters.core import ImageCrops, PruningPlan, pixel_keys, prune_images
from scope_eval.adapters.vision_probe import encoder_layers, layer_for_hidden_state
from scope_eval.pruning import VisualTokens, build_method
from scope_eval.reports.regression import KEY_COLUMNS, Rule, compare, item_score

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "scope_eval" / "toy" / "weights" / "llava15"


def last_bit_up(x: torch.Tensor) -> torch.Tensor:
    """x moved by one unit in the last place: what another machine's kernels may compute."""
    return torch.nextafter(x, torch.full_like(x, float("inf")))


def crops(n: int = 3, tokens: int = 64, seed: int = 0) -> ImageCrops:
    generator = torch.Generator().manual_seed(seed)
    return ImageCrops(
        features=torch.randn(n, tokens, 16, generator=generator),
        saliency=torch.rand(n, tokens, generator=generator),
        keys=torch.randn(n, tokens, 8, generator=generator),
        grid=(1, n - 1) if n > 1 else None,
        pixels=torch.randn(n, 3, 28, 28, generator=generator),
    )


def with_noisy_features(image: ImageCrops) -> ImageCrops:
    return ImageCrops(last_bit_up(image.features), image.saliency, image.keys, image.grid, image.pixels)


@pytest.mark.parametrize("policy", ["per_crop", "global"])
def test_random_draw_ignores_last_bit_noise_in_the_features(policy):
    plan = PruningPlan.build("random", 48, budget_policy=policy, seed=5)
    image = crops()
    clean = prune_images(plan, [image], torch.nn.Identity())[0]
    noisy = prune_images(plan, [with_noisy_features(image)], torch.nn.Identity())[0]
    assert not torch.equal(image.features, with_noisy_features(image).features)
    assert torch.equal(clean.kept_indices, noisy.kept_indices)
    # Why the pixels matter: seeded from the features' bits (a keyless call), the same noise moves the draw.
    method = build_method("random", seed=5)
    keyless = method.select(VisualTokens(image.features), 16).indices
    assert not torch.equal(keyless, method.select(VisualTokens(last_bit_up(image.features)), 16).indices)


def test_pixel_keys_are_per_crop_and_the_same_in_every_dtype():
    pixels = crops().pixels
    keys = pixel_keys(pixels)
    assert len(set(keys)) == 3, "each crop its own key"
    assert keys == pixel_keys(pixels.double()) == pixel_keys(pixels.to(torch.bfloat16))  # the wrappers cast pixels
    assert pixel_keys(pixels[1:2]) == keys[1:2], "a crop's key does not depend on its neighbours"
    assert pixel_keys(pixels + 0.1) != keys


def test_random_draw_depends_on_seed_and_key_not_on_batch_position():
    method = build_method("random", seed=0)
    features = torch.randn(3, 64, 8)
    drawn = method.select(VisualTokens(features, image_keys=[11, 22, 33]), 8).indices
    alone = method.select(VisualTokens(features[2:] * 2, image_keys=[33]), 8).indices
    assert torch.equal(alone[0], drawn[2]), "same key, same draw, whatever the features and the batch"
    assert not torch.equal(drawn[0], drawn[1])
    assert not torch.equal(drawn, build_method("random", seed=1).select(VisualTokens(features, image_keys=[11, 22, 33]), 8).indices)


def test_random_rejects_a_key_count_that_does_not_match_the_batch():
    from scope_eval.pruning import PruningError

    with pytest.raises(PruningError, match="2 image_keys for 3 images/crops; pass one key per row"):
        build_method("random").select(VisualTokens(torch.randn(3, 64, 8), image_keys=[1, 2]), 8)


def test_hf_adapter_draw_survives_noise_in_the_vision_tower(hf_llava_next):
    """End to end through the adapter: one-ulp noise on the probed layer's output changes the features the
    method sees, never the tokens `random` keeps; nor does a second image in the batch."""
    model, processor = hf_llava_next
    texts = ["<image>\nwhat is in the image ?", "<image>\nhow many ?"]
    images = [random_image(480, 640, seed=1), random_image(336, 336, seed=2)]
    together = processor(images=images, text=texts, return_tensors="pt", padding=True)
    alone = processor(images=images[:1], text=texts[:1], return_tensors="pt", padding=True)
    clean, clean_features = draws(model, together)
    noisy, noisy_features = draws(model, together, noise=True)
    assert not torch.equal(clean_features[0], noisy_features[0])
    assert [d.tolist() for d in clean] == [d.tolist() for d in noisy]
    assert draws(model, alone)[0][0].tolist() == clean[0].tolist()


def draws(model, inputs, noise: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The indices `random` keeps per method call (and the features it saw), optionally with last-bit noise."""
    with recorded_random(model, 160, noise) as (kept, seen), torch.no_grad():
        model(**inputs)
    return kept, seen


@contextmanager
def recorded_random(model, budget: int, noise: bool):
    """`random` applied to model, its draws and the features it saw recorded (shadowing run, what the adapters
    call, on the instance)."""
    kept: list[torch.Tensor] = []
    seen: list[torch.Tensor] = []
    with last_bit_noise(model) if noise else _nothing(), prune(model, "random", budget, seed=3) as handle:
        method = handle.plan.method
        stock = method.run

        def recording_run(tokens, budget):
            seen.append(tokens.features.clone())
            result = stock(tokens, budget)
            kept.append(result.indices.clone())
            return result

        method.run = recording_run
        yield kept, seen


@contextmanager
def last_bit_noise(model):
    """Moves the output of the vision layer LLaVA selects by one ulp (registered before the probe, so the
    probe and everything after it see the noisy values)."""
    layers = encoder_layers(model.model.vision_tower)
    layer = layers[layer_for_hidden_state(len(layers), model.config.vision_feature_layer)]

    def add_noise(module, args, output):
        if isinstance(output, tuple):
            return (last_bit_up(output[0]), *output[1:])
        return last_bit_up(output)

    hook = layer.register_forward_hook(add_noise)
    try:
        yield
    finally:
        hook.remove()


@contextmanager
def _nothing():
    yield


@contextmanager
def threads(count: int):
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not TOY.is_dir(), reason="the trained toy checkpoint is not present")
def test_toy_random_draw_and_regression_verdict_do_not_depend_on_threads_or_last_bits():
    """The trained toy LLaVA-1.5, random@64 on 16 Toy-POPE documents: computed with 1 thread, 2 threads and
    1 thread plus last-bit noise in the vision tower, it keeps the same tokens, and the paired regression
    check of each run against the first passes."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from toy_training.measure import TASK_SCORING, load_items, prompt_text
    from scope_eval.lmms.tasks.toy.scenes import render

    model = AutoModelForImageTextToText.from_pretrained(TOY, dtype=torch.float32, device_map="cpu").eval()
    processor = AutoProcessor.from_pretrained(TOY)
    documents = load_items("scope_toy_pope")[:16]
    inputs = [processor(images=[render(d["scene"])], text=[prompt_text(processor, d["question"])], return_tensors="pt")
              for d in documents]  # fmt: skip

    def run(thread_count: int, noise: bool) -> tuple[list[list[int]], pd.DataFrame]:
        kept, answers = [], []
        with threads(thread_count):
            for x in inputs:
                with recorded_random(model, 64, noise) as (draw, _), torch.no_grad():
                    logits = model(**x).logits[:, -1]
                kept.append(draw[0].tolist())
                answers.append(processor.tokenizer.decode(logits.argmax(-1)[:1], skip_special_tokens=True))
        scores = {str(i): [item_score(TASK_SCORING["scope_toy_pope"].process_results(d, [a])["pope_f1_score"]), a]
                  for i, (d, a) in enumerate(zip(documents, answers))}  # fmt: skip
        value = 100 * sum(s for s, _ in scores.values()) / len(scores)
        row = dict(zip(KEY_COLUMNS, ["toy-llava15", "random", 64, "scope_toy_pope", "Toy-POPE"]), value=value, items=scores)
        return kept, pd.DataFrame([row])

    reference_kept, baseline = run(1, noise=False)
    for thread_count, noise in ((2, False), (1, True)):
        kept, current = run(thread_count, noise)
        assert kept == reference_kept, (thread_count, noise)
        verdict = compare(current, baseline, Rule())
        assert verdict.ok and verdict.checked == 1, [d.describe() for d in verdict.drops]

