"""scope_select is SPEC section 2's greedy: against a float64 reference, independent formulations, ties,
precision and bad input; and every exact implementation selects the same tokens."""

from __future__ import annotations

import pytest
import torch

from scope_eval.pruning import PruningError, scope_order, scope_select
from scope_eval.pruning import greedy_kernels
from scope_eval.pruning.greedy_reference import naive_scope_select, reference_scope_select

VARIANTS = ("inplace", "lazy", "auto")


def clustered(batch: int, tokens: int, dim: int, seed: int, spread: float = 0.5, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(batch, 6, dim, generator=generator)
    members = torch.randint(0, 6, (batch, tokens), generator=generator)
    features = torch.gather(centres, 1, members[:, :, None].expand(-1, -1, dim))
    features = features + spread * torch.randn(batch, tokens, dim, generator=generator)
    saliency = 16 * torch.softmax(2 * torch.randn(batch, tokens, generator=generator), dim=-1)
    return features.to(dtype), saliency


def cosine64(features: torch.Tensor) -> torch.Tensor:
    unit = features.double() / features.double().norm(dim=-1, keepdim=True)
    return unit @ unit.transpose(-1, -2)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("combine", ["multi", "add"])
@pytest.mark.parametrize(("batch", "tokens", "dim", "k"), [(1, 12, 8, 5), (2, 64, 32, 20), (3, 150, 48, 70)])
def test_matches_float64_reference(batch, tokens, dim, k, alpha, combine):
    features, saliency = clustered(batch, tokens, dim, seed=tokens + k)
    expected = reference_scope_select(features, saliency, k, alpha, combine)
    for variant in VARIANTS:
        assert torch.equal(scope_select(features, saliency, k, alpha, combine, variant=variant), expected), variant


@pytest.mark.parametrize("alpha", [0.0, 2.0])
def test_float64_inputs_match_reference_to_the_last_pick(alpha):
    # Low dimension and k close to N leave tiny, nearly equal gains at the end, beyond float32's resolution;
    # float64 inputs keep float64 similarities, so the algorithm itself is checked pick by pick.
    features, saliency = clustered(2, 120, 4, seed=7, spread=0.3, dtype=torch.float64)
    expected = reference_scope_select(features, saliency, 115, alpha)
    for variant in VARIANTS:
        assert torch.equal(scope_select(features, saliency, 115, alpha, variant=variant), expected), variant


def test_alpha_zero_is_greedy_facility_location():
    features, saliency = clustered(2, 40, 16, seed=3)
    sim = cosine64(features)
    for b in range(2):
        chosen: list[int] = []
        for _ in range(12):  # maximise C(T + j) = sum_i max(0, max_{t in T + j} S_it) directly
            values = [
                -1.0 if j in chosen else sim[b][:, chosen + [j]].max(dim=1).values.clamp(min=0).sum().item()
                for j in range(40)
            ]
            chosen.append(max(range(40), key=lambda j: (values[j], -j)))
        assert scope_select(features[b : b + 1], None, 12, alpha=0.0).tolist()[0] == sorted(chosen)
    # with alpha = 0 the saliency is ignored
    assert torch.equal(scope_select(features, saliency, 12, alpha=0.0), scope_select(features, None, 12, alpha=0.0))


def test_first_pick_maximises_gain_times_saliency():
    features, saliency = clustered(3, 80, 24, seed=11)
    gains = cosine64(features).clamp(min=0).sum(dim=1)  # g_j(empty) = sum_i max(0, S_ij)
    for variant in VARIANTS:
        first = scope_order(features, saliency, 10, variant=variant)[:, 0]
        assert torch.equal(first, (gains * saliency.double()).argmax(dim=-1))
        first_add = scope_order(features, saliency, 10, combine="add", variant=variant)[:, 0]
        assert torch.equal(first_add, (gains + saliency.double()).argmax(dim=-1))


def test_output_is_sorted_unique_in_range_long():
    features, saliency = clustered(4, 100, 16, seed=5)
    kept = scope_select(features, saliency, 37)
    assert kept.shape == (4, 37) and kept.dtype == torch.long
    assert (kept.diff(dim=-1) > 0).all() and kept.min() >= 0 and kept.max() < 100


@pytest.mark.parametrize(("batch", "tokens", "k"), [(1, 2, 1), (3, 10, 10), (5, 120, 40), (2, 576, 192), (1, 2880, 64)])
def test_exact_implementations_pick_identical_sequences(batch, tokens, k):
    features, saliency = clustered(batch, tokens, 32, seed=tokens)
    orders = {variant: scope_order(features, saliency, k, variant=variant) for variant in VARIANTS}
    assert torch.equal(orders["inplace"], orders["lazy"])
    assert torch.equal(orders["inplace"], orders["auto"])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_upcast(dtype):
    features, saliency = clustered(2, 64, 32, seed=2)
    features, saliency = features.to(dtype), saliency.to(dtype)
    kept = scope_select(features, saliency, 16)
    assert kept.dtype == torch.long
    assert torch.equal(kept, scope_select(features.float(), saliency.float(), 16))
    assert torch.equal(kept, reference_scope_select(features, saliency, 16))


def hadamard_tokens(pattern_of_token: list[int]) -> torch.Tensor:
    """[1, N, 16] copies of mutually orthogonal +-1 rows."""
    hadamard = torch.ones(1, 1)
    while hadamard.shape[0] < 16:
        hadamard = torch.cat([torch.cat([hadamard, hadamard], 1), torch.cat([hadamard, -hadamard], 1)], 0)
    return hadamard[pattern_of_token][None]


def sign_tokens(patterns: int, tokens: int, generator: torch.Generator) -> torch.Tensor:
    """[1, N, 16] copies of a few random +-1 rows. Length 16 gives norm 4, a power of two: normalising,
    every product and every sum is exact in float32, so equal scores are exactly equal."""
    base = torch.randint(0, 2, (patterns, 16), generator=generator).float() * 2 - 1
    return base[torch.randint(0, patterns, (tokens,), generator=generator)][None]


@pytest.mark.parametrize("refresh_batch", [1, 8])
def test_ties_go_to_the_lowest_index_in_every_implementation(monkeypatch, refresh_batch):
    monkeypatch.setattr(greedy_kernels, "LAZY_REFRESH_BATCH", refresh_batch)
    features = hadamard_tokens([1, 0, 1, 2, 0, 2, 1, 0, 2, 1, 0, 2])  # three patterns, four copies each
    saliency = torch.full((1, 12), 0.25)
    # every group covers 4 tokens: groups tie, and within a group the copies tie; once all is covered,
    # every score is 0 and the remaining tokens come in index order
    for combine in ("multi", "add"):
        expected = {3: [0, 1, 3], 5: [0, 1, 2, 3, 4]}
        for k, kept in expected.items():
            assert reference_scope_select(features, saliency, k, combine=combine).tolist() == [kept]
            for variant in VARIANTS:
                assert scope_select(features, saliency, k, combine=combine, variant=variant).tolist() == [kept]


@pytest.mark.parametrize("refresh_batch", [1, 3, 8])
def test_tie_heavy_random_inputs_agree_with_reference(monkeypatch, refresh_batch):
    monkeypatch.setattr(greedy_kernels, "LAZY_REFRESH_BATCH", refresh_batch)
    generator = torch.Generator().manual_seed(refresh_batch)
    for trial in range(6):
        features = sign_tokens(10, 60, generator)
        saliency = torch.randint(1, 3, (1, 60), generator=generator).float() / 4  # few distinct values
        for alpha in (0.0, 1.0):
            expected = reference_scope_select(features, saliency, 30, alpha)
            for variant in VARIANTS:
                assert torch.equal(scope_select(features, saliency, 30, alpha, variant=variant), expected), (trial, variant)


def test_pairs_that_only_cover_each_other_tie_exactly():
    # Gaussian features in 32 dimensions: late in a coverage-only greedy, many candidates' gains are exactly
    # equal in exact arithmetic; the symmetric, unit-diagonal similarity keeps them equal.
    features, _ = clustered(3, 100, 32, seed=9, spread=3.0)
    expected = reference_scope_select(features, None, 40, alpha=0.0)
    for variant in VARIANTS:
        assert torch.equal(scope_select(features, None, 40, alpha=0.0, variant=variant), expected)


def test_naive_yardstick_selects_like_the_exact_greedy_on_distinct_scores():
    features, saliency = clustered(2, 100, 32, seed=4)
    assert torch.equal(naive_scope_select(features, saliency, 30), scope_select(features, saliency, 30))


def test_all_zero_features_keep_the_first_tokens():
    # documented: a zero vector has similarity 0 with everything (itself included), so every gain is 0
    features = torch.zeros(2, 20, 8)
    saliency = torch.rand(2, 20)
    for variant in VARIANTS:
        with pytest.warns(RuntimeWarning, match="degenerate selection"):  # and says so (issue 22)
            assert scope_select(features, saliency, 5, variant=variant).tolist() == [[0, 1, 2, 3, 4]] * 2
    # with combine="add" the scores are a**alpha alone: the most salient tokens
    added = scope_select(features, saliency, 5, combine="add")
    assert torch.equal(added, saliency.topk(5).indices.sort().values)


def test_zero_rows_are_taken_only_after_every_positive_gain():
    features, saliency = clustered(1, 30, 16, seed=1)
    features[0, :5] = 0
    kept = scope_select(features, saliency, 25).tolist()[0]
    assert kept == list(range(5, 30))


def test_zero_saliency_scores_zero_unless_alpha_is_zero():
    features, saliency = clustered(1, 30, 16, seed=8)
    saliency[0, 10:] = 0
    assert scope_select(features, saliency, 10).tolist() == [list(range(10))]  # 0**1 = 0: never preferred
    # alpha = 0: 0**0 = 1, the saliency plays no part
    assert torch.equal(scope_select(features, saliency, 10, alpha=0.0), scope_select(features, None, 10, alpha=0.0))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "at least 1"),
        ({"k": -3}, "at least 1"),
        ({"k": 2.5}, "whole number"),
        ({"k": 21}, "larger than the 20"),
        ({"alpha": -1.0}, "alpha must be"),
        ({"alpha": float("nan")}, "alpha must be"),
        ({"combine": "mul"}, "combine must be"),
        ({"variant": "fast"}, "unknown greedy variant"),
        ({"saliency": None}, "saliency is None"),
        ({"saliency": -torch.ones(2, 20)}, "non-negative"),
        ({"saliency": torch.ones(2, 19)}, "saliency must be"),
        ({"alpha": 1000.0, "saliency": torch.full((2, 20), 16.0)}, "overflows"),
    ],
)
def test_bad_input_is_refused_with_the_fix(kwargs, message):
    arguments = {"features": torch.randn(2, 20, 8), "saliency": torch.rand(2, 20), "k": 5, **kwargs}
    with pytest.raises(PruningError, match=message):
        scope_select(**arguments)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features_are_refused(bad):
    features = torch.randn(1, 10, 4)
    features[0, 3, 1] = bad
    with pytest.raises(PruningError, match="NaN or inf"):
        scope_select(features, torch.rand(1, 10), 3)


def test_features_must_be_batched_floats():
    with pytest.raises(PruningError, match=r"\[B, N, D\]"):
        scope_select(torch.randn(10, 4), torch.rand(10), 3)
    with pytest.raises(PruningError, match="floating-point"):
        scope_select(torch.ones(1, 10, 4, dtype=torch.long), None, 3, alpha=0.0)


def test_integral_float_budget_is_accepted():
    features, saliency = clustered(1, 20, 8, seed=0)
    assert torch.equal(scope_select(features, saliency, 5.0), scope_select(features, saliency, 5))
