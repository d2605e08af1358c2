"""Every registered method on one contract: budgets, output shapes, bad input, and each method's own rule."""

from __future__ import annotations

import pytest
import torch

from scope_eval.pruning import (
    METHODS,
    PruningError,
    VisualTokens,
    build_method,
    method_options,
    scope_select,
)
from scope_eval.pruning.methods.divprune import max_min_diverse
from scope_eval.pruning.methods.visionzip import VisionZipMethod

N, D, DK, D_TEXT, D_CLIP = 576, 32, 24, 48, 16


def make_tokens(batch: int = 2, tokens: int = N, seed: int = 0, with_keys: bool = True) -> VisualTokens:
    generator = torch.Generator().manual_seed(seed)
    projector = torch.nn.Linear(D, D_TEXT)
    with torch.no_grad():
        projector.weight.copy_(torch.randn(D_TEXT, D, generator=generator))
        projector.bias.zero_()
    return VisualTokens(
        features=torch.randn(batch, tokens, D, generator=generator),
        saliency=16 * torch.softmax(torch.randn(batch, tokens, generator=generator), dim=-1),
        keys=torch.randn(batch, tokens, DK, generator=generator) if with_keys else None,
        project=lambda x: projector(x).detach(),
        # cdpruner's inputs: a one-segment instruction embedding and a fixed map into its space
        instruction=torch.randn(batch, 1, D_CLIP, generator=generator),
        text_space=lambda x, w=torch.randn(D, D_CLIP, generator=generator): x.float() @ w,
    )


# Methods that select before the language model; the in-LLM ones (stage "llm") have their matrix in
# tests/test_llm_stage.py.
PRUNING = sorted(name for name, cls in METHODS.items() if not cls.keeps_all and cls.stage == "vision")


def test_the_paper_methods_are_registered():
    # a subset: the in-LLM methods (fastv, pdrop, dart) register from their own files
    assert {
        "none", "random", "saliency", "coverage", "scope", "divprune", "visionzip", "vispruner", "cdpruner"
    } <= set(METHODS)


@pytest.mark.parametrize("budget", [1, 7, 64, 192, N])
@pytest.mark.parametrize("name", PRUNING)
def test_every_method_keeps_exactly_the_budget(name, budget):
    tokens = make_tokens()
    kept = build_method(name).select(tokens, budget)
    assert kept.count == budget
    assert kept.indices.dtype == torch.long and kept.indices.shape[0] == 2
    assert (kept.indices.diff(dim=-1) > 0).all(), "indices ascending and unique"
    assert kept.indices.numel() == 0 or (kept.indices.min() >= 0 and kept.indices.max() < N)
    if name == "visionzip" and budget >= 7:
        assert kept.merged is not None and kept.merged.shape == (2, budget * 10 // 64, D)
        assert kept.merged.dtype == tokens.features.dtype
    else:
        assert kept.merged is None or kept.merged.shape[1] == 0


def test_none_keeps_every_token_and_takes_no_budget():
    kept = build_method("none").select(make_tokens(), None)
    assert kept.indices.tolist() == [list(range(N))] * 2 and kept.merged is None
    with pytest.raises(PruningError, match="takes no budget"):
        build_method("none").select(make_tokens(), 64)


@pytest.mark.parametrize(("budget", "message"), [(0, "at least 1"), (-3, "at least 1"), (2.5, "whole number"),
                                                 (N + 1, "larger than the 576"), (None, "needs a budget"),
                                                 ("64", "whole number")])
@pytest.mark.parametrize("name", PRUNING)
def test_bad_budgets_are_refused(name, budget, message):
    with pytest.raises(PruningError, match=message):
        build_method(name).select(make_tokens(), budget)


def test_unknown_method_lists_the_registered_ones():
    with pytest.raises(PruningError, match="unknown pruning method 'scoop'; choose one of: ") as error:
        build_method("scoop")
    assert str(error.value).endswith(", ".join(sorted(METHODS)))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_unknown_option_lists_the_valid_ones(name):
    listing = ", ".join(f"{key}={value!r}" for key, value in method_options(name).items()) or "none"
    with pytest.raises(PruningError, match="has no option") as error:
        build_method(name, budget_ratio=0.5)
    assert f"its options are: {listing}" in str(error.value)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("scope", {"alpha": -1.0}, "alpha must be"),
        ("scope", {"alpha": "high"}, "alpha must be"),
        ("scope", {"combine": "mul"}, "combine must be one of multi, add"),
        ("divprune", {"on": "pixels"}, "on must be one of projected, features"),
        ("visionzip", {"contextual": -1}, "contextual must be"),
        ("visionzip", {"contextual": 2.5}, "contextual must be"),
        ("random", {"seed": 1.5}, "seed must be an integer"),
    ],
)
def test_bad_option_values_are_refused(name, options, message):
    with pytest.raises(PruningError, match=message):
        build_method(name, **options)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_nan_features_are_refused(name):
    tokens = make_tokens()
    tokens.features[1, 10, 3] = float("nan")
    with pytest.raises(PruningError, match="NaN or inf"):
        build_method(name).select(tokens, None if METHODS[name].keeps_all else 16)


@pytest.mark.parametrize("name", ["saliency", "scope", "visionzip"])
def test_methods_needing_saliency_say_so(name):
    tokens = make_tokens()
    tokens.saliency = None
    with pytest.raises(PruningError, match="needs the CLS saliency"):
        build_method(name).select(tokens, 16)


@pytest.mark.parametrize("name", ["scope", "coverage", "saliency", "divprune"])
def test_all_zero_features_give_the_documented_result(name):
    # documented: zero vectors have cosine similarity 0 with everything (distance 1), so similarity-based
    # methods see no structure and fall back on the lowest indices; saliency-only ignores the features
    tokens = make_tokens()
    tokens.features = torch.zeros(2, N, D)
    tokens.project = lambda x: x  # the projected tokens are zero too
    kept = build_method(name).select(tokens, 8)
    expected = tokens.saliency.topk(8).indices.sort().values if name == "saliency" else torch.arange(8).expand(2, -1)
    assert torch.equal(kept.indices, expected)


def test_all_zero_features_in_visionzip_average_to_zero():
    tokens = make_tokens()
    tokens.features, tokens.keys = torch.zeros(2, N, D), torch.zeros(2, N, DK)
    kept = build_method("visionzip").select(tokens, 64)
    assert kept.count == 64 and torch.equal(kept.merged, torch.zeros(2, 10, D))


# -- random ---------------------------------------------------------------------------------------------

def test_random_is_reproducible_and_seeded():
    tokens = make_tokens()
    first = build_method("random", seed=3).select(tokens, 64).indices
    assert torch.equal(first, build_method("random", seed=3).select(tokens, 64).indices)
    assert not torch.equal(first, build_method("random", seed=4).select(tokens, 64).indices)
    assert not torch.equal(first[0], first[1]), "each image draws its own tokens"


def test_random_does_not_depend_on_batch_composition_or_call_order():
    tokens = make_tokens(batch=4)
    method = build_method("random", seed=0)
    together = method.select(tokens, 32).indices
    method.select(make_tokens(batch=3, seed=9), 32)  # an unrelated call in between
    for order in ([3, 1], [2], [0, 2, 1, 3]):
        subset = VisualTokens(features=tokens.features[order], saliency=tokens.saliency[order])
        assert torch.equal(method.select(subset, 32).indices, together[order])


# -- saliency -------------------------------------------------------------------------------------------

def test_saliency_keeps_the_top_k_with_ties_to_the_lowest_index():
    tokens = make_tokens(batch=1, tokens=10)
    tokens.saliency = torch.tensor([[0.1, 0.5, 0.2, 0.5, 0.0, 0.5, 0.3, 0.3, 0.9, 0.1]])
    assert build_method("saliency").select(tokens, 4).indices.tolist() == [[1, 3, 5, 8]]
    assert build_method("saliency").select(tokens, 6).indices.tolist() == [[1, 3, 5, 6, 7, 8]]


# -- scope / coverage -----------------------------------------------------------------------------------

def test_scope_and_coverage_are_scope_select():
    tokens = make_tokens()
    for options in ({}, {"alpha": 0.5, "combine": "add"}):
        kept = build_method("scope", **options).select(tokens, 64).indices
        assert torch.equal(kept, scope_select(tokens.features, tokens.saliency, 64, **options))
    coverage = build_method("coverage").select(VisualTokens(features=tokens.features), 64).indices
    assert torch.equal(coverage, scope_select(tokens.features, None, 64, alpha=0.0))


# -- divprune -------------------------------------------------------------------------------------------

def slow_max_min(points: torch.Tensor, k: int) -> list[int]:
    unit = points.double() / points.double().norm(dim=-1, keepdim=True)
    distance = 1 - unit @ unit.T
    n = len(points)
    nearest = [min(distance[i, j].item() for j in range(n) if j != i) for i in range(n)]
    chosen = [max(range(n), key=lambda i: (nearest[i], -i))]
    while len(chosen) < k:
        spread = [min(distance[i, c].item() for c in chosen) if i not in chosen else -1.0 for i in range(n)]
        chosen.append(max(range(n), key=lambda i: (spread[i], -i)))
    return chosen


def test_divprune_follows_the_max_min_rule_on_projected_tokens():
    tokens = make_tokens(batch=2, tokens=40)
    kept = build_method("divprune").select(tokens, 12).indices
    projected = tokens.projected()
    for b in range(2):
        assert kept[b].tolist() == sorted(slow_max_min(projected[b], 12))
    on_features = build_method("divprune", on="features").select(tokens, 12).indices
    assert on_features[0].tolist() == sorted(slow_max_min(tokens.features[0], 12))


def test_divprune_first_pick_is_the_token_with_the_farthest_nearest_neighbour():
    # A and B close together, C and D near the top, E alone on the left
    points = torch.tensor([[[1.0, 0.0], [0.995, 0.0998], [-0.0998, 0.995], [0.2, 0.98], [-1.0, 0.0]]])
    order = max_min_diverse(1 - torch.nn.functional.cosine_similarity(points[:, :, None], points[:, None], dim=-1), 3)
    assert order[0, 0].item() == 4  # E: its nearest neighbour (C) is the farthest of all nearest neighbours
    assert order[0].tolist() == [4, 0, 2]  # then A (opposite E), then C (0.9 from both; D is 0.8 from A)


def test_divprune_without_projector_asks_for_one():
    tokens = make_tokens()
    tokens.project = None
    with pytest.raises(PruningError, match="projector"):
        build_method("divprune").select(tokens, 8)
    assert build_method("divprune", on="features").select(tokens, 8).count == 8


# -- visionzip ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("budget", "dominant", "contextual"), [(64, 54, 10), (128, 108, 20), (192, 162, 30)])
def test_visionzip_reproduces_the_paper_splits(budget, dominant, contextual):
    assert VisionZipMethod().split(budget) == (dominant, contextual)
    kept = build_method("visionzip").select(make_tokens(), budget)
    assert kept.indices.shape == (2, dominant) and kept.merged.shape == (2, contextual, D)


def test_visionzip_dominant_tokens_are_the_most_attended():
    tokens = make_tokens()
    kept = build_method("visionzip").select(tokens, 64)
    assert torch.equal(kept.indices, tokens.saliency.topk(54).indices.sort().values)


def test_visionzip_merges_groups_around_evenly_spaced_targets():
    saliency = torch.tensor([[0.0, 0.9, 0.0, 0.0, 0.8, 0.0, 0.0, 0.0]])
    keys = torch.tensor([[[1, 0], [0, 1], [0, 1], [1, 0.1], [1, 1], [0.1, 1], [1, 0], [0.2, 1]]]).float()
    features = torch.arange(8 * 3).float().view(1, 8, 3)
    kept = build_method("visionzip", contextual=2).select(VisualTokens(features, saliency, keys), 4)
    assert kept.indices.tolist() == [[1, 4]]
    # remaining tokens 0,2,3,5,6,7; targets at positions 0 and 3 of that list: tokens 0 and 5
    # by key direction: {3, 6} join token 0, {2, 7} join token 5; the official rule: target + mean of the others
    expected = torch.stack([features[0, 0] + features[0, [3, 6]].mean(0), features[0, 5] + features[0, [2, 7]].mean(0)])
    assert torch.allclose(kept.merged[0], expected)


def test_visionzip_falls_back_to_features_without_keys():
    tokens = make_tokens(with_keys=False)
    kept = build_method("visionzip").select(tokens, 128)
    assert kept.count == 128 and torch.isfinite(kept.merged).all()


def test_visionzip_explicit_split_and_its_limits():
    tokens = make_tokens()
    assert build_method("visionzip", contextual=0).select(tokens, 64).merged is None
    only_merged = build_method("visionzip", contextual=64).select(tokens, 64)
    assert only_merged.indices.shape == (2, 0) and only_merged.merged.shape == (2, 64, D)
    with pytest.raises(PruningError, match="exceeds the budget"):
        build_method("visionzip", contextual=65).select(tokens, 64)


@pytest.mark.parametrize("name", PRUNING)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_tokens(name, dtype):
    tokens = make_tokens()
    half = VisualTokens(
        features=tokens.features.to(dtype), saliency=tokens.saliency.to(dtype), keys=tokens.keys.to(dtype),
        project=lambda x: x.float() @ torch.ones(D, 4), instruction=tokens.instruction, text_space=tokens.text_space,
    )
    kept = build_method(name).select(half, 64)
    assert kept.count == 64
    if kept.merged is not None:
        assert kept.merged.dtype == dtype
