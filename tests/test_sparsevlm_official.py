"""SparseVLM against a float64 restatement of the official v1 loop (Gumpest/SparseVLMs @ b72c5d6:
`modelling_sparse_llama.py` rater selection and pruning-layer branch, `score.py` attn_postprocess_rank,
`utils.py` cluster_and_merge), written here in our own words, on random tie-free cases: two pruning
stages fed the same attention, the second on the sequence the first produced (recycled tokens included).

The official count k = min(int(rank * scale + bias), n - 1) is driven here with scale 0 and bias k, so
both sides keep the same k; the density noise is left out of the restatement (it is 1e-6 against
density gaps of ~1e-3 in these cases)."""

from __future__ import annotations

import pytest
import torch

from scope_eval.pruning import build_method
from scope_eval.pruning.llm_stage import LlmTokens, Recycled

PREFIX, VISUAL, TEXT, WIDTH, HEADS = 5, 576, 24, 32, 4


def official_raters(embeddings: torch.Tensor, image_start: int, image_tokens: int) -> torch.Tensor:
    """Text indices (relative to the text start) whose mean softmax relevance beats the average."""
    image = embeddings[image_start: image_start + image_tokens]
    text = embeddings[image_start + image_tokens:]
    relevance = torch.softmax(image @ text.T, dim=1).mean(dim=0)
    return torch.where(relevance > relevance.mean())[0]


def official_clusters(points: torch.Tensor, count: int) -> torch.Tensor:
    """Density peaks with kNN density, the nearest-centre assignment, the plain mean per cluster."""
    n, width = points.shape
    gaps = (points[:, None, :] - points[None, :, :]).norm(dim=-1) / width**0.5
    knn = gaps.topk(count, dim=-1, largest=False).values
    density = (-(knn**2).mean(dim=-1)).exp()
    denser = (density[None, :] > density[:, None]).to(points.dtype)
    parent_gap = (gaps * denser + gaps.max() * (1 - denser)).min(dim=-1).values
    centres = (parent_gap * density).topk(count).indices
    member_of = gaps[centres].argmin(dim=0)
    member_of[centres] = torch.arange(count)
    sums = torch.zeros(count, width, dtype=points.dtype).index_add_(0, member_of, points)
    sizes = torch.zeros(count, dtype=points.dtype).index_add_(0, member_of, torch.ones(n, dtype=points.dtype))
    return sums / (sizes[:, None] + 1e-6)


def official_stage(attention, hidden, raters, image_start, image_tokens, keep):
    """One pruning layer: (kept image indices, merged tokens, the new sequence)."""
    heads_mean = attention.mean(dim=0)
    text_start = image_start + image_tokens
    relation = heads_mean[raters + text_start, image_start:text_start]
    score = relation.mean(dim=0)
    selected = min(keep, image_tokens - 1)
    policy = torch.zeros(image_tokens, dtype=torch.bool)
    policy[score.topk(selected).indices] = True
    dropped = torch.where(~policy)[0]
    recycled = int(dropped.shape[0] * 0.3) + 1
    best = score[dropped].topk(recycled).indices
    merged = official_clusters(hidden[image_start + dropped[best]], int(recycled / 10) + 1)
    kept = torch.where(policy)[0]
    sequence = torch.cat([hidden[:image_start], hidden[image_start + kept], merged, hidden[text_start:]])
    return kept, merged, sequence


def ours(method, embeddings, attention, hidden, image_tokens, keep_total):
    visual = torch.arange(PREFIX, PREFIX + image_tokens).unsqueeze(0)
    tokens = LlmTokens(
        hidden=hidden.unsqueeze(0), visual=visual,
        attention=lambda which, queries: attention.unsqueeze(0)[:, :, queries[0]],
        keys=None, final_norm=None,
        inputs=embeddings.unsqueeze(0), input_visual=torch.arange(PREFIX, PREFIX + VISUAL).unsqueeze(0),
    )
    return method.choose(tokens, keep_total, 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("keep", [149, 78, 7])
def test_two_stages_match_the_official_loop(seed, keep):
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(PREFIX + VISUAL + TEXT, WIDTH, generator=generator, dtype=torch.float64)
    hidden = torch.randn(PREFIX + VISUAL + TEXT, WIDTH, generator=generator, dtype=torch.float64)
    raters = official_raters(embeddings, PREFIX, VISUAL)
    method = build_method("sparsevlm")
    present = VISUAL
    for stage in range(2):
        length = hidden.shape[0]
        attention = torch.softmax(torch.randn(HEADS, length, length, generator=generator, dtype=torch.float64) * 3, dim=-1)
        kept, merged, sequence = official_stage(attention, hidden, raters, PREFIX, present, keep)
        selected, clusters = method.stage_counts(keep, present)
        result = ours(method, embeddings, attention, hidden, present, selected + clusters)
        assert isinstance(result, Recycled), stage
        assert result.kept[0].tolist() == kept.tolist(), stage
        torch.testing.assert_close(result.merged[0], merged, atol=1e-5, rtol=1e-5)
        hidden, present = sequence, kept.shape[0] + merged.shape[0]
