"""VisionZip as its official code runs it (dvlab-research/VisionZip @ 3151f6d, visionzip/clip_encoder.py), on
small cases whose results are worked out by hand in the comments."""

from __future__ import annotations

import pytest
import torch
from conftest import random_image

from scope_eval import prune
from scope_eval.adapters.core import ImageCrops, PruningPlan, prune_images
from scope_eval.adapters.vision_probe import VisionLayerProbe
from scope_eval.pruning import VisualTokens, build_method
from scope_eval.pruning.methods.visionzip import target_slots


def test_cls_is_one_of_the_dominant_tokens_at_54_plus_10():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(1, 576, 8, generator=generator)
    saliency = torch.rand(1, 576, generator=generator)
    cls = torch.randn(1, 8, generator=generator)
    kept = build_method("visionzip").select(VisualTokens(features, saliency, cls=cls), 64)
    # 64 = CLS + 53 most attended patches + 10 contextual tokens
    assert torch.equal(kept.prefix, cls[:, None])
    assert torch.equal(kept.indices, saliency.topk(53).indices.sort().values)
    assert kept.merged.shape == (1, 10, 8) and kept.count == 64


def test_without_a_cls_token_one_more_patch_takes_its_place():
    saliency = torch.tensor([[0.1, 0.9, 0.3, 0.8, 0.2, 0.0]])
    kept = build_method("visionzip", contextual=0).select(VisualTokens(torch.randn(1, 6, 4), saliency), 3)
    assert kept.prefix is None and kept.indices.tolist() == [[1, 2, 3]]


@pytest.mark.parametrize(
    ("remaining", "count", "expected"),
    [
        (8, 3, [0, 2, 4]),  # step 8 // 3 = 2; floor(t * 8 / 3) would give 0, 2, 5
        (10, 3, [0, 3, 6]),  # step 3, the first 3 of 0, 3, 6, 9
        (5, 5, [0, 1, 2, 3, 4]),
        (523, 10, [0, 52, 104, 156, 208, 260, 312, 364, 416, 468]),  # LLaVA-1.5 at 64: 576 - 53 remaining
    ],
)
def test_merge_targets_are_every_r_over_c_th_remaining_token(remaining, count, expected):
    assert target_slots(remaining, count).tolist() == expected


def test_contextual_token_is_the_target_plus_the_mean_of_the_others():
    # 7 patches + CLS; saliency makes patch 3 the one dominant patch (budget 4 = CLS + 1 patch + 2 contextual)
    saliency = torch.tensor([[0.0, 0.1, 0.0, 0.9, 0.0, 0.0, 0.0]])
    features = torch.tensor([[[1.0], [2.0], [4.0], [100.0], [8.0], [16.0], [32.0]]])
    # remaining patches 0, 1, 2, 4, 5, 6 (R = 6); step 3: targets are patches 0 and 4
    # keys: 1 and 2 point like patch 0, 5 and 6 like patch 4
    keys = torch.tensor([[[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0], [0.0, 1.0], [0.1, 0.9], [0.2, 0.8]]])
    cls = torch.tensor([[-5.0]])
    kept = build_method("visionzip", contextual=2).select(VisualTokens(features, saliency, keys, cls=cls), 4)
    assert kept.prefix.tolist() == [[[-5.0]]] and kept.indices.tolist() == [[3]]
    # patch 0 + mean(2, 4) = 4;  patch 4 + mean(16, 32) = 32
    assert kept.merged.tolist() == [[[4.0], [32.0]]]


def test_a_target_nobody_joins_stays_as_it_is():
    saliency = torch.tensor([[0.9, 0.0, 0.0, 0.0, 0.0]])
    features = torch.tensor([[[0.0], [3.0], [5.0], [7.0], [11.0]]])
    keys = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [1.0, 0.2]]])
    # remaining 1, 2, 3, 4 (R = 4), 2 contextual: step 2, targets patches 1 and 3; 2 and 4 both join patch 1
    kept = build_method("visionzip", contextual=2).select(VisualTokens(features, saliency, keys), 3)
    assert kept.indices.tolist() == [[0]]
    assert kept.merged.tolist() == [[[3.0 + (5.0 + 11.0) / 2], [7.0]]]


def test_similarity_uses_the_keys_averaged_over_heads():
    # a 1-layer, 2-head CLIP tower: the probe hands over k_proj's output averaged over the heads
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
                              image_size=28, patch_size=14)
    tower = CLIPVisionModel(config).eval()
    captured = {}
    layer = tower.encoder.layers[0]
    layer.self_attn.k_proj.register_forward_hook(lambda m, a, out: captured.setdefault("keys", out))
    probe = VisionLayerProbe(tower, feature_layer=-2)
    with torch.no_grad():
        hidden = tower(torch.randn(1, 3, 28, 28), output_hidden_states=True).hidden_states[-2]
    features, saliency, keys, cls = probe.take_with_cls()
    probe.remove()
    per_head = captured["keys"].view(1, 5, 2, 4)  # [B, CLS + 4 patches, heads, head_dim]
    assert keys.shape == (1, 4, 4)  # head_dim, not heads x head_dim
    assert torch.allclose(keys, per_head.mean(dim=2)[:, 1:])
    assert torch.equal(cls, hidden[:, 0]) and torch.equal(features, hidden[:, 1:])


def test_official_crop_split_realises_the_scope_repository_counts():
    method = build_method("visionzip", crop_split="official")
    floor = build_method("visionzip")
    for budget, official, floored in [(160, 165, 160), (320, 325, 320), (640, 645, 640)]:
        per_crop_method, per_crop = method.for_crops(budget, 5)
        assert 5 * per_crop == official and 5 * floor.for_crops(budget, 5)[1] == floored
        # 160: 25 contextual -> int(25/5 + .5) = 5 per crop; 134 patches -> int(134/5 + .5) = 27, + CLS
        assert per_crop_method.split(per_crop)[1] == {160: 5, 320: 10, 640: 20}[budget]
    plan = PruningPlan.build("visionzip", 160, crop_split="official")
    assert plan.tokens_for(5, 576) == 165 and plan.tokens_for(3, 576) == 3 * (45 + 1 + 8)


def test_cls_tokens_go_first_into_the_packed_sequence():
    generator = torch.Generator().manual_seed(1)
    image = ImageCrops(
        features=torch.randn(1, 16, 4, generator=generator), saliency=torch.rand(1, 16, generator=generator),
        keys=torch.randn(1, 16, 2, generator=generator), cls=torch.randn(1, 4, generator=generator),
    )
    (packed,) = prune_images(PruningPlan.build("visionzip", 8, contextual=2), [image], lambda x: x)
    assert packed.count == 8
    assert torch.equal(packed.tokens[0], image.cls[0])
    assert torch.equal(packed.tokens[1:6], image.features[0, packed.kept_indices])


def test_hf_llava15_pruned_to_64_reaches_the_language_model_with_64(hf_llava):
    model, processor = hf_llava
    text = "<image>\nwhat is in the image ?"
    inputs = processor(images=[random_image(336, 336)], text=[text], return_tensors="pt")
    lengths = []
    hook = model.model.language_model.register_forward_pre_hook(
        lambda m, a, kw: lengths.append(kw["inputs_embeds"].shape[1]), with_kwargs=True
    )
    text_tokens = int((inputs["input_ids"] != model.config.image_token_id).sum())
    try:
        with prune(model, "visionzip", 64) as handle, torch.no_grad():
            model(**inputs)
            assert handle.take_counts() == [64]
    finally:
        hook.remove()
    assert lengths == [text_tokens + 64]


def test_original_llava15_pruned_to_64_reaches_the_language_model_with_64(tmp_path):
    pytest.importorskip("llava.model")
    from llava.mm_utils import process_images, tokenizer_image_token
    from tiny_models import tiny_llava_original

    model, tokenizer, image_processor = tiny_llava_original(tmp_path)
    images = process_images([random_image(336, 336)], image_processor, model.config)
    ids = tokenizer_image_token("what is <image>\nin the image ?", tokenizer, -200, return_tensors="pt").unsqueeze(0)
    with prune(model, "visionzip", 64) as handle, torch.no_grad():
        length = model(input_ids=ids, images=images, image_sizes=[(336, 336)]).logits.shape[1]
        assert handle.take_counts() == [64]
    assert length == ids.shape[1] - 1 + 64


@pytest.mark.parametrize("name", ["scope", "divprune", "visionzip"])
def test_selection_dtype_model_computes_in_the_features_dtype(name):
    from scope_eval.pruning import PruningError

    with pytest.raises(PruningError, match="selection_dtype must be one of float32, model"):
        build_method(name, selection_dtype="half")
    generator = torch.Generator().manual_seed(2)
    tokens = VisualTokens(torch.randn(2, 64, 16, generator=generator, dtype=torch.float64),
                          torch.rand(2, 64, generator=generator, dtype=torch.float64),
                          torch.randn(2, 64, 8, generator=generator, dtype=torch.float64), project=lambda x: x)
    # on float64 features the model's dtype is exact enough: both give the same selection
    default, in_model_dtype = build_method(name).select(tokens, 16), build_method(name, selection_dtype="model").select(tokens, 16)
    assert torch.equal(default.indices, in_model_dtype.indices)
    half = VisualTokens(tokens.features.half(), tokens.saliency.half(), tokens.keys.half(), project=lambda x: x)
    kept = build_method(name, selection_dtype="model").select(half, 16)
    assert kept.count == 16 and (kept.merged is None or kept.merged.dtype == torch.float16)


def test_official_packing_follows_the_scope_repository_on_llava_next():
    """packing=official (kinredon/SCOPE scope/llava_arch.py): base crop [CLS, dominant, contextual], then the grid's
    dominant tokens in full-grid raster order, the grid crops' CLS, then their contextual tokens. Every token is
    labelled by its crop and slot so the order can be read off; the default packs the same tokens grouped."""
    side, crops = 4, 5  # a base crop and a 2 x 2 grid of 16-token crops
    features = torch.arange(crops * side * side, dtype=torch.float64).view(crops, side * side, 1).expand(-1, -1, 3).clone()
    generator = torch.Generator().manual_seed(4)
    image = ImageCrops(
        features=features, saliency=torch.rand(crops, side * side, generator=generator, dtype=torch.float64),
        keys=torch.randn(crops, side * side, 2, generator=generator, dtype=torch.float64),
        cls=-1.0 - torch.arange(crops, dtype=torch.float64).view(crops, 1).expand(-1, 3), grid=(2, 2),
    )
    plan = PruningPlan.build("visionzip", 5 * 8, contextual=2, packing="official")  # per crop: CLS + 5 patches + 2
    (official,) = prune_images(plan, [image], lambda x: x)
    (grouped,) = prune_images(PruningPlan.build("visionzip", 5 * 8, contextual=2), [image], lambda x: x)
    assert official.count == grouped.count == 40 and torch.equal(official.kept_indices, grouped.kept_indices)
    base = official.kept_indices[official.kept_indices < side * side]
    grid = official.kept_indices[official.kept_indices >= side * side]
    assert base.tolist() == sorted(base.tolist()) and len(base) == 5

    def rows_of(packed, start, count):
        return packed.tokens[start:start + count, 0]

    contextual = grouped.tokens[-10:, 0]  # grouped: 5 CLS, 25 kept, then 5 crops x 2 contextual
    assert torch.equal(rows_of(official, 0, 1), torch.tensor([-1.0], dtype=torch.float64))  # base CLS
    assert torch.equal(rows_of(official, 1, 5), base.double())  # base dominant, ascending
    assert torch.equal(rows_of(official, 6, 2), contextual[:2])  # base contextual
    assert torch.equal(rows_of(official, 8, 20), grid.double())  # grid dominant, full-grid raster order
    assert torch.equal(rows_of(official, 28, 4), torch.tensor([-2.0, -3.0, -4.0, -5.0], dtype=torch.float64))  # grid CLS
    assert torch.equal(rows_of(official, 32, 8), contextual[2:])  # grid contextual, crop order
    assert torch.equal(rows_of(grouped, 0, 5), -1.0 - torch.arange(5, dtype=torch.float64))
    assert sorted(official.tokens[:, 0].tolist()) == sorted(grouped.tokens[:, 0].tolist())
