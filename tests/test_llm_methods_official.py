"""In-LLM methods as their authors' code ranks, without a model: DART's kept set (ZichenWen1/DART
modeling_llama_self.py, get_retained_image_token) on random tie-free inputs, its official count option, and the
model's dtype in DART's key norms and in FastV's and PDrop's attention ranking."""

from __future__ import annotations

import pytest
import torch

from scope_eval.pruning import PruningError, build_method
from scope_eval.pruning.llm_stage import LlmTokens

START, VISUAL, TEXT, WIDTH = 5, 96, 12, 32


def tokens_for(seed: int, dtype: torch.dtype) -> LlmTokens:
    generator = torch.Generator().manual_seed(seed)
    length = START + VISUAL + TEXT
    hidden = torch.randn(1, length, WIDTH, generator=generator, dtype=torch.float64).to(dtype)
    keys = torch.randn(1, length, 2 * WIDTH, generator=generator, dtype=torch.float64).to(dtype)
    scale = torch.rand(WIDTH, generator=generator, dtype=torch.float64).to(dtype) + 0.5
    return LlmTokens(
        hidden=hidden,
        visual=torch.arange(START, START + VISUAL).unsqueeze(0),
        attention=lambda which, queries: pytest.fail("DART needs no attention"),
        keys=lambda which: keys if which == "before" else pytest.fail("DART reads the keys of the layer before"),
        final_norm=lambda states: states * scale,  # a fixed per-channel scale stands in for the final RMSNorm
    )


def dart_as_officially_written(tokens: LlmTokens, budget: int) -> list[int]:
    """The official selection restated in our words, everything in the inputs' dtype: each of the 8 pivots takes
    floor(B / 8) tokens; pivots = the 4 image tokens and the 4 tokens after the image with the largest key L1
    norm; the pivots are visited in the order of a Python set of their absolute positions, each taking, of the
    image tokens not yet taken, the floor(B/8) whose normalised final-norm states are least cosine-similar to
    its own; the image pivots and all picks stay (indices into the image span)."""
    per_pivot = budget // 8
    keys, states = tokens.keys("before")[0], tokens.final_norm(tokens.hidden)[0]
    norms = keys.abs().sum(dim=-1)
    image_pivots = (norms[START:START + VISUAL].topk(4).indices + START).tolist()
    text_pivots = (norms[START + VISUAL:].topk(4).indices + START + VISUAL).tolist()
    unit = states / states.norm(dim=-1, keepdim=True)
    candidates = [p for p in range(START, START + VISUAL) if p not in image_pivots]
    kept = list(image_pivots)
    for pivot in list(set(image_pivots + text_pivots)):
        pool = torch.tensor(candidates)
        dissimilarity = -(unit[pool] @ unit[pivot])
        picks = pool[dissimilarity.topk(per_pivot).indices].tolist()
        kept += picks
        candidates = [c for c in candidates if c not in picks]
    return sorted(p - START for p in kept)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dart_official_count_keeps_what_the_official_code_keeps(dtype):
    """count=official at B = 16 / 24 / 40 keeps 4 + 8*floor(B/8) = 20 / 28 / 44, the official set."""
    method = build_method("dart", count="official", budget_unit="after_layer")
    for seed in range(3):
        tokens = tokens_for(seed, dtype)
        for budget in (16, 24, 40):
            (keep,) = method.schedule(budget, VISUAL, 8).keep
            assert keep == 4 + 8 * (budget // 8)
            assert method.choose(tokens, keep, 0)[0].tolist() == dart_as_officially_written(tokens, budget)


def test_dart_counts_per_convention():
    """Official: 68 / 132 / 196 at B = 64 / 128 / 192 (576 tokens); ours by default exactly the budget's R."""
    official = build_method("dart", count="official", budget_unit="after_layer")
    ours = build_method("dart", budget_unit="after_layer")
    assert [official.schedule(b, 576, 32).keep for b in (64, 128, 192)] == [(68,), (132,), (196,)]
    assert [ours.schedule(b, 576, 32).keep for b in (64, 128, 192)] == [(64,), (128,), (192,)]
    # layer_average: R = 29 / 98 / 166 -> official 28 / 100 / 164
    averaged = build_method("dart", count="official")
    assert [averaged.schedule(b, 576, 32).keep for b in (64, 128, 192)] == [(28,), (100,), (164,)]
    with pytest.raises(PruningError, match="count must be one of"):
        build_method("dart", count="paper")


def test_dart_ranks_key_norms_in_the_model_dtype():
    """In float16 the L1 norms 1024.25 and 1024.5 both round to 1024 (a tie, lower index first), while float32 would
    rank the second higher: the official code computes the norms in the model's dtype, and so do we."""
    tokens = tokens_for(0, torch.float16)
    keys = torch.zeros(1, START + VISUAL + TEXT, 2 * WIDTH, dtype=torch.float16)
    keys[0, START, :2] = torch.tensor([1024.0, 0.25])
    keys[0, START + 1, :2] = torch.tensor([1024.0, 0.5])
    tokens.keys = lambda which: keys
    method = build_method("dart", budget_unit="after_layer")
    assert method.choose(tokens, 1, 0).tolist() == [[0]]
    tokens_32 = LlmTokens(tokens.hidden.float(), tokens.visual, tokens.attention, lambda which: keys.float(), tokens.final_norm)
    assert method.choose(tokens_32, 1, 0).tolist() == [[1]]


@pytest.mark.parametrize("method, which", [("fastv", "before"), ("pdrop", "at")])
def test_fastv_and_pdrop_rank_the_attention_in_the_model_dtype(method, which):
    """Official FastV and PDrop cast the float32 softmax to the model's dtype (fp16) before the head mean and top-k:
    received attention 0.30001 and 0.30002 are one float16 value (a tie, lower index first), while float32 would
    keep the second."""
    length = START + VISUAL + TEXT
    probabilities = torch.full((1, 2, 1, length), 1e-3)
    probabilities[..., START] = 0.30001
    probabilities[..., START + 1] = 0.30002

    def attention(asked, queries):
        assert asked == which
        return probabilities

    for dtype, expected in ((torch.float16, [[0]]), (torch.float32, [[1]])):
        tokens = tokens_for(0, dtype)
        tokens.attention = attention
        assert build_method(method, budget_unit="after_layer").choose(tokens, 1, 0).tolist() == expected
