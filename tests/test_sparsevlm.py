"""SparseVLM (v1, Gumpest/SparseVLMs @ b72c5d6) inside the language model: raters, scores, schedule,
recycling, determinism, and the model runs (tiny LLaVA with 8 decoder layers, as in test_llm_stage)."""

from __future__ import annotations

import math

import pytest
import torch
from test_llm_stage import LAYERS, build, deep_configs, record_lengths  # noqa: F401  (deep_configs is a fixture)

from scope_eval import PruningError, prune
from scope_eval.pruning import build_method
from scope_eval.pruning.llm_stage import LlmTokens, Recycled
from scope_eval.pruning.methods.sparsevlm import cluster_and_merge

OPTIONS = {"layers": (1, 2, 4)}


def synthetic_tokens(seed: int, prefix: int = 3, visual: int = 12, text: int = 6, width: int = 8, heads: int = 2):
    """LlmTokens of one row [prefix | visual | text] whose attention is a fixed random tensor (tie-free)."""
    generator = torch.Generator().manual_seed(seed)
    length = prefix + visual + text
    inputs = torch.randn(1, length, width, generator=generator, dtype=torch.float64)
    hidden = torch.randn(1, length, width, generator=generator, dtype=torch.float64)
    probabilities = torch.rand(1, heads, length, length, generator=generator, dtype=torch.float64)
    positions = torch.arange(prefix, prefix + visual).unsqueeze(0)

    def attention(which, queries):
        assert which == "before"
        return probabilities[:, :, queries[0]]

    tokens = LlmTokens(hidden=hidden, visual=positions, attention=attention, keys=None, final_norm=None,
                       inputs=inputs, input_visual=positions)
    return tokens, probabilities


def raters_by_hand(inputs: torch.Tensor, first_visual: int, visual: int) -> list[int]:
    """Text token j rates when sum_i softmax_j(v_i . t_j) / |V| is above the mean of those values over j."""
    text = inputs[first_visual + visual:]
    relevance = []
    for j in range(text.shape[0]):
        total = 0.0
        for i in range(first_visual, first_visual + visual):
            logits = [float(inputs[i] @ text[m]) for m in range(text.shape[0])]
            total += math.exp(logits[j]) / sum(math.exp(x) for x in logits)
        relevance.append(total / visual)
    mean = sum(relevance) / len(relevance)
    return [first_visual + visual + j for j, value in enumerate(relevance) if value > mean]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_raters_are_the_text_tokens_above_mean_relevance(seed):
    tokens, _ = synthetic_tokens(seed)
    (found,) = build_method("sparsevlm").raters(tokens)
    expected = raters_by_hand(tokens.inputs[0], 3, 12)
    assert found.tolist() == expected and 0 < len(expected) < 6


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_visual_scores_are_the_raters_mean_attention(seed):
    """Kept: the top visual tokens by attention from the raters only (head mean, rater mean); the merged
    tokens: int(int(0.3 * dropped) + 1) / 10) + 1 of them, from the best-scored dropped tokens."""
    tokens, probabilities = synthetic_tokens(seed)
    method = build_method("sparsevlm", layers=(1,))
    raters = raters_by_hand(tokens.inputs[0], 3, 12)
    keep_core = 5
    selected, merged_count = method.stage_counts(keep_core, 12)
    assert (selected, merged_count) == (5, int((int(7 * 0.3) + 1) / 10) + 1)
    result = method.choose(tokens, selected + merged_count, 0)
    assert isinstance(result, Recycled)
    scores = [float(probabilities[0, :, raters, 3 + i].mean()) for i in range(12)]
    best = sorted(range(12), key=lambda i: -scores[i])[:selected]
    assert result.kept[0].tolist() == sorted(best)
    dropped = [i for i in range(12) if i not in best]
    recycled = sorted(dropped, key=lambda i: -scores[i])[: int(len(dropped) * 0.3) + 1]
    assert result.merged.shape == (1, merged_count, 8)
    # one cluster here: the merged token is the mean of the recycled tokens' hidden states
    torch.testing.assert_close(result.merged[0, 0], tokens.hidden[0, [3 + i for i in recycled]].mean(dim=0), atol=1e-6, rtol=1e-6)


def test_clusters_are_the_blobs_and_deterministic():
    generator = torch.Generator().manual_seed(5)
    centres = torch.tensor([[0.0] * 6, [10.0] * 6, [-10.0] + [0.0] * 5])
    members = torch.cat([centre + 0.1 * torch.randn(7, 6, generator=generator) for centre in centres])
    order = torch.randperm(21, generator=generator)
    states = members[order]
    torch.manual_seed(0)
    first = cluster_and_merge(states, 3)
    torch.manual_seed(123)  # the global RNG does not matter: the noise is seeded from the states
    second = cluster_and_merge(states, 3)
    assert torch.equal(first, second)
    blob_means = torch.stack([members[7 * b: 7 * b + 7].mean(dim=0) for b in range(3)])
    matched = sorted(int((blob_means - row).norm(dim=1).argmin()) for row in first)
    assert matched == [0, 1, 2]
    torch.testing.assert_close(torch.sort(first[:, 0]).values, torch.sort(blob_means[:, 0]).values)


@pytest.mark.parametrize("budget", [192, 128, 64])
@pytest.mark.parametrize("unit", ["layer_average", "after_layer"])
def test_schedule_is_the_largest_common_k_meeting_the_budget(budget, unit):
    """576 tokens, 32 layers, official layers: every stage keeps the same k (min(k, n - 1)) plus its merged
    tokens; k + 1 would exceed the budget."""
    method = build_method("sparsevlm", budget_unit=unit)
    schedule = method.schedule(budget, 576, 32)
    measure = schedule.layer_average if unit == "layer_average" else schedule.after_layer
    assert measure() <= budget
    present, cores = 576, set()
    for total in schedule.keep:
        selected, merged = method._split(total, present)
        assert merged == int((int((present - selected) * 0.3) + 1) / 10) + 1
        cores.add(selected)
        present = total
    (core,) = cores
    bigger = method.totals(core + 1, 576)
    from scope_eval.pruning.llm_stage import LlmSchedule

    over = LlmSchedule(schedule.layers, bigger, 576, 32)
    assert (over.layer_average() if unit == "layer_average" else over.after_layer()) > budget


def test_documented_schedules():
    """docs/semantics.md#sparsevlm quotes these (576 tokens, 32 layers, layer-averaged budget)."""
    method = build_method("sparsevlm")
    assert {k: method.schedule(k, 576, 32).keep for k in (192, 128, 64)} == {
        192: (162, 150, 150, 150), 128: (94, 79, 79, 79), 64: (25, 8, 8, 8)
    }


def test_bad_options_and_budgets_refused():
    with pytest.raises(PruningError, match="recycle_ratio"):
        build_method("sparsevlm", recycle_ratio=1.0)
    with pytest.raises(PruningError, match="cluster_divisor"):
        build_method("sparsevlm", cluster_divisor=1)
    with pytest.raises(PruningError, match="strictly increasing"):
        build_method("sparsevlm", layers="7-3")
    assert build_method("sparsevlm", layers="1-2-4").layers == (1, 2, 4)
    with pytest.raises(PruningError, match="raise the budget"):
        build_method("sparsevlm").schedule(57, 576, 32)
    # docs/semantics.md quotes 58 as the smallest layer-averaged budget of the defaults (576 tokens, 32 layers)
    assert build_method("sparsevlm").schedule(58, 576, 32).layer_average() <= 58


@pytest.fixture(params=["hf", "hf_next", "original"])
def backend(request, deep_configs, tmp_path, monkeypatch):  # noqa: F811
    return build(request.param, deep_configs, tmp_path, monkeypatch)


def budget_for(backend) -> int:
    return 1000 if backend.kind == "hf_next" else 192


def test_counts_at_every_layer(backend):
    budget = budget_for(backend)
    with prune(backend.model, "sparsevlm", budget, **OPTIONS) as handle:
        seen, hooks = record_lengths(backend.decoder_layers)
        backend.logits()
        for hook in hooks:
            hook.remove()
        expected = handle.plan.method.schedule(budget, backend.num_visual, LAYERS).per_layer()
        assert seen == [backend.prompt_length + n for n in expected]
        (record,) = handle.take_layer_counts()
        assert record.per_layer == expected and record.layer_average <= budget
        assert [i for i in range(1, LAYERS) if expected[i] != expected[i - 1]][0] == 1


def recording_choose(handle):
    made = []
    stock = handle.plan.method.choose

    def recording(tokens, keep, stage):
        made.append((tokens.visual.clone(), stock(tokens, keep, stage), tokens.inputs, tokens.input_visual))
        return made[-1][1]

    handle.plan.method.choose = recording
    return made, stock


def test_merged_tokens_enter_the_next_layer_after_the_kept_ones(deep_configs, tmp_path, monkeypatch):  # noqa: F811
    backend = build("hf", deep_configs, tmp_path, monkeypatch)
    with prune(backend.model, "sparsevlm", 192, **OPTIONS) as handle:
        made, _ = recording_choose(handle)
        entering = {}

        def note(module, args, kwargs):  # runs after the stage's own pre-hook: sees the shortened sequence
            entering.setdefault("hidden", (args[0] if args else kwargs["hidden_states"]).clone())

        def note_input(module, args, kwargs):
            entering.setdefault("input", (args[0] if args else kwargs["hidden_states"]).clone())

        hooks = [backend.decoder_layers[1].register_forward_pre_hook(note, with_kwargs=True),
                 backend.decoder_layers[0].register_forward_pre_hook(note_input, with_kwargs=True)]
        backend.logits()
        for hook in hooks:
            hook.remove()
        del handle.plan.method.choose
    visual, result, inputs, input_visual = made[0]
    # the raters were chosen on layer 0's input, where the visual tokens are the image placeholders' positions
    assert torch.equal(inputs, entering["input"])
    image_positions = (backend.batch["input_ids"][0] == backend.model.config.image_token_id).nonzero().squeeze(1)
    assert torch.equal(input_visual[0], image_positions)
    kept, merged = result.kept[0], result.merged[0]
    present = visual.shape[1]
    assert merged.shape[0] == int((int((present - kept.shape[0]) * 0.3) + 1) / 10) + 1
    first = int(visual[0, 0])
    after_kept = first + kept.shape[0]
    torch.testing.assert_close(entering["hidden"][0, after_kept: after_kept + merged.shape[0]], merged)


def test_runs_are_deterministic_whatever_the_global_rng(backend):
    with prune(backend.model, "sparsevlm", budget_for(backend), **OPTIONS):
        torch.manual_seed(1)
        first = backend.logits()
        torch.manual_seed(2)
        second = backend.logits()
    assert torch.equal(first, second)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_generate_matches_recomputation_without_cache(deep_configs, tmp_path, monkeypatch, attention):  # noqa: F811
    """Decoding on the pruned caches (merged tokens included) = recomputing the same sequence from scratch."""
    backend = build("hf", deep_configs, tmp_path, monkeypatch)
    backend.model.set_attn_implementation(attention)
    with prune(backend.model, "sparsevlm", 192, **OPTIONS) as handle:
        made, _ = recording_choose(handle)
        new, scores = backend.generate(3)
        replay = iter([entry[1] for entry in made])
        handle.plan.method.choose = lambda tokens, keep, stage: next(replay)
        logits = backend.logits(new[:-1])[-3:]
        del handle.plan.method.choose
    torch.testing.assert_close(logits, scores, atol=1e-4, rtol=1e-4)


def test_restore_is_exact(deep_configs, tmp_path, monkeypatch):  # noqa: F811
    backend = build("hf", deep_configs, tmp_path, monkeypatch)
    backend.generate(2)
    before = backend.logits()
    with prune(backend.model, "sparsevlm", 192, **OPTIONS):
        backend.generate(2)
    assert torch.equal(backend.logits(), before)


def test_a_single_text_token_rates_alone():
    """No text token can be above the mean of one value: the lone token rates (the official code gets NaN)."""
    tokens, probabilities = synthetic_tokens(4, text=1)
    (found,) = build_method("sparsevlm").raters(tokens)
    assert found.tolist() == [15]


def test_padded_batch_refused(hf_llava):
    from conftest import random_image

    model, processor = hf_llava
    prompts = ["USER: <image>\nwhat is in the image ? ASSISTANT:", "USER: <image>\nwhat ? ASSISTANT:"]
    batch = processor(images=[random_image(336, 336, 1)] * 2, text=prompts, return_tensors="pt", padding=True)
    with prune(model, "sparsevlm", 64, layers=(1,), budget_unit="after_layer"):
        with pytest.raises(PruningError, match="padded batches"):
            model.generate(**batch, max_new_tokens=2, do_sample=False)
