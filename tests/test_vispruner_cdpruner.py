"""VisPruner and CDPruner: their rules on hand-made inputs, and through the HF adapters (counts, restore)."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import random_image

from scope_eval import PruningError, prune
from scope_eval.adapters.instruction import instruction_texts
from scope_eval.pruning import VisualTokens, build_method
from scope_eval.pruning.methods.cdpruner import RELEVANCE_FLOOR, greedy_dpp_map, instruction_relevance

PROMPTS = ["USER: <image>\nwhat is in the image ? ASSISTANT:", "USER: <image>\nhow many red circle ? ASSISTANT:"]


# -- VisPruner -------------------------------------------------------------------------------------------


def duplicate_tokens() -> VisualTokens:
    """10 tokens, attention descending with the index. Token 4 repeats token 5; token 6 nearly repeats 9."""
    features = torch.eye(10)
    features[4] = features[5]
    features[6] = features[9] + 0.1 * features[6]
    saliency = torch.linspace(1.0, 0.1, 10).unsqueeze(0)
    return VisualTokens(features=features.unsqueeze(0), saliency=saliency)  # no projector: pre-projector only


def test_vispruner_keeps_top_attention_then_removes_duplicates():
    # budget 8, ratio 0.5: important = the 4 most attended {0,1,2,3}; residual [4..9] -> A = [4,6,8],
    # B = [5,7,9]; max cos to B: 4 -> 1 (copy of 5), 6 -> 0.995 (near 9), 8 -> 0; 2 drops: 4 and 6
    kept = build_method("vispruner").select(duplicate_tokens(), 8)
    assert kept.indices.tolist() == [[0, 1, 2, 3, 5, 7, 8, 9]]
    assert kept.merged is None and kept.count == 8


def test_vispruner_important_ratio_moves_the_split():
    # ratio 0.75: important {0..5}; residual [6,7,8,9]: A = [6,8], B = [7,9]; both A dropped (2 surplus)
    kept = build_method("vispruner", important_ratio=0.75).select(duplicate_tokens(), 8)
    assert kept.indices.tolist() == [[0, 1, 2, 3, 4, 5, 7, 9]]


def test_vispruner_exact_budget_with_odd_residual_and_many_rounds():
    # N=11, budget 8, ratio 0.5 leaves an odd residual (7), where the official code raises IndexError;
    # N=576, budget 64 needs 64 rounds of at most 8 drops
    generator = torch.Generator().manual_seed(0)
    for n, budget in ((11, 8), (576, 64)):
        features = torch.randn(2, n, 16, generator=generator)
        saliency = torch.rand(2, n, generator=generator)
        kept = build_method("vispruner").select(VisualTokens(features, saliency), budget)
        assert kept.count == budget and (kept.indices.diff(dim=-1) > 0).all()
        important = saliency.topk(budget // 2).indices
        for row in range(2):
            assert set(important[row].tolist()) <= set(kept.indices[row].tolist())


def vispruner_as_officially_written(features: torch.Tensor, attention: torch.Tensor, budget: int, ratio: float) -> list[list[int]]:
    """VisPruner's encode_images selection (Theia-4869/VisPruner llava/model/llava_arch.py), restated in our words:
    rank by head-mean CLS attention; the first int(T*ratio) stay; then, while more than T - T_imp residual tokens
    remain, unit-length residual rows are split by position into evens (A) and odds (B), each A row scored by its
    largest dot product with the B rows (one A @ B^T per round, in the features' dtype), the min(8, surplus)
    highest-scoring A rows go, and the next list is the other A rows by descending score, then all of B."""
    important_count = int(budget * ratio)
    diverse_count = budget - important_count
    order = attention.argsort(dim=-1, descending=True)
    unit = features / features.norm(dim=-1, keepdim=True)
    kept = []
    for row in range(features.shape[0]):
        residual = order[row, important_count:]
        while min(8, residual.shape[0] - diverse_count) > 0:
            drop = min(8, residual.shape[0] - diverse_count)
            evens, odds = residual[0::2], residual[1::2]
            best = (unit[row, evens] @ unit[row, odds].T).max(dim=-1).values
            residual = torch.cat([evens[best.argsort(descending=True)[drop:]], odds])
        kept.append(sorted(order[row, :important_count].tolist() + residual.tolist()))
    return kept


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_vispruner_matches_the_official_rounds(dtype):
    """Random tie-free cases at the paper's size (N = 576, budgets 64 / 128 / 192, ratios 0.5 / 0.75): the kept sets
    equal the official loop's in float64 and, since each round multiplies the current A and B afresh as the
    official loop does, in float32 too (before issue 21, 4 of 36 float32 cases differed). 3 draws x 2 rows x 6
    settings = 36 cases per dtype."""
    generator = torch.Generator().manual_seed(21)
    for _case in range(3):
        features = torch.randn(2, 576, 64, generator=generator, dtype=torch.float64)
        attention = torch.rand(2, 576, generator=generator, dtype=torch.float64)
        features, attention = features.to(dtype), attention.to(dtype)
        for budget, ratio in itertools.product((64, 128, 192), (0.5, 0.75)):
            ours = build_method("vispruner", important_ratio=ratio).select(VisualTokens(features, attention), budget)
            assert ours.indices.tolist() == vispruner_as_officially_written(features, attention, budget, ratio)


def test_vispruner_refuses_a_bad_ratio_and_missing_saliency():
    with pytest.raises(PruningError, match="important_ratio must be"):
        build_method("vispruner", important_ratio=1.5)
    tokens = duplicate_tokens()
    tokens.saliency = None
    with pytest.raises(PruningError, match="needs the CLS saliency"):
        build_method("vispruner").select(tokens, 4)


# -- CDPruner: the greedy DPP ----------------------------------------------------------------------------


def log_det(kernel: torch.Tensor, subset: list[int]) -> float:
    return float(torch.logdet(kernel[subset][:, subset])) if subset else 0.0


def test_greedy_dpp_each_pick_maximises_the_determinant():
    generator = torch.Generator().manual_seed(1)
    vectors = torch.randn(7, 5, generator=generator, dtype=torch.float64)
    kernel = vectors @ vectors.T
    picks, exhausted = greedy_dpp_map(kernel.unsqueeze(0), 5, fallback=torch.zeros(1, 7, dtype=torch.float64))
    chosen: list[int] = []
    for pick in picks[0].tolist():
        best = max((j for j in range(7) if j not in chosen), key=lambda j: log_det(kernel, chosen + [j]))
        assert pick == best
        chosen.append(pick)
    assert not exhausted.any()


def test_greedy_dpp_matches_brute_force_on_a_hand_made_kernel():
    # token 1 is token 0 slightly rotated and a bit longer: greedy takes 1, then 2 and 3; 0 adds little
    e = torch.eye(4, dtype=torch.float64)
    vectors = torch.stack([2 * e[0], 2 * (e[0] + 0.1 * e[1]), 1.5 * e[2], e[3], 0.5 * e[1], 0.8 * (e[2] + e[3])])
    kernel = vectors @ vectors.T
    picks, _ = greedy_dpp_map(kernel.unsqueeze(0), 3, fallback=torch.zeros(1, 6, dtype=torch.float64))
    best = max(itertools.combinations(range(6), 3), key=lambda s: log_det(kernel, list(s)))
    assert sorted(picks[0].tolist()) == sorted(best) == [1, 2, 3]


def test_greedy_dpp_past_the_kernel_rank_falls_back_to_relevance():
    vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)  # rank 2
    relevance = torch.tensor([[0.1, 0.2, 0.9, 0.5]], dtype=torch.float64)
    picks, exhausted = greedy_dpp_map((vectors @ vectors.T).unsqueeze(0), 4, fallback=relevance)
    assert picks[0, :2].tolist() == [2, 3]  # the two largest diagonal entries, orthogonal to each other
    assert picks[0, 2:].tolist() == [1, 0] and exhausted.tolist() == [True]  # then by relevance


# -- CDPruner: relevance -----------------------------------------------------------------------------------


def test_relevance_is_negative_cosine_min_max_normalised_over_all_crops():
    text = torch.tensor([[[1.0, 0.0]]]).expand(2, -1, -1)  # one segment, shared by both crops
    image = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], [[1.0, 1.0], [1.0, -1.0], [0.0, -1.0]]])
    cos = torch.tensor([[1.0, 0.0, -1.0], [2**-0.5, 2**-0.5, 0.0]])
    expected = (-cos - (-1.0) + RELEVANCE_FLOOR) / 2.0  # min -1, max 1, over both crops jointly
    assert torch.allclose(instruction_relevance(image, text), expected)
    # the token facing the instruction weighs least; crop 1's largest weight stays below 1 (not per crop)
    assert instruction_relevance(image, text)[1].max() < 0.6


def test_relevance_averages_the_segments():
    image = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, -1.0]]])
    segments = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    negative = -torch.tensor([[0.5, 0.5, 2**-0.5, -(2**-0.5)]])
    expected = (negative - negative.min() + RELEVANCE_FLOOR) / (negative.max() - negative.min())
    assert torch.allclose(instruction_relevance(image, segments), expected)


def test_cdpruner_needs_the_instruction():
    tokens = VisualTokens(torch.randn(1, 16, 8), project=lambda x: x)
    with pytest.raises(PruningError, match="needs the instruction's CLIP text embedding"):
        build_method("cdpruner").select(tokens, 4)


# -- through the HF adapters ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_encoder(tmp_path_factory):
    from tiny_models import tiny_clip

    return str(tiny_clip(tmp_path_factory.mktemp("clip")))


def options(method, text_encoder):
    return {"text_encoder": text_encoder} if method == "cdpruner" else {}


def hf_inputs(processor, sizes):
    images = [random_image(h, w, seed=h * w) for h, w in sizes]
    return processor(images=images, text=PROMPTS[: len(images)], return_tensors="pt", padding=True)


def test_the_instruction_is_the_question_without_template(hf_llava):
    model, processor = hf_llava
    inputs = hf_inputs(processor, [(336, 336), (480, 640)])
    texts = instruction_texts(inputs["input_ids"], inputs["attention_mask"], model.config.image_token_id, processor.tokenizer)
    assert texts == ["what is in the image ?", "how many red circle ?"]


@pytest.mark.parametrize("method", ["vispruner", "cdpruner"])
def test_llava15_exact_count_generate_and_bit_exact_restore(hf_llava, text_encoder, method):
    model, processor = hf_llava
    inputs = hf_inputs(processor, [(336, 336), (480, 640)])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        reference = model(**inputs).logits
    with prune(model, method, 64, processor=processor, **options(method, text_encoder)) as handle, torch.no_grad():
        logits = model(**inputs).logits
        assert handle.take_counts() == [64, 64]
        texts = [int(t) for t in ((inputs["input_ids"] != model.config.image_token_id) & inputs["attention_mask"].bool()).sum(1)]
        assert logits.shape[1] == max(texts) + 64
        out = model.generate(**inputs, max_new_tokens=2, do_sample=False)
        assert handle.take_counts() == [64, 64] and out.shape[1] == inputs["input_ids"].shape[1] + 2
    assert "get_image_features" not in vars(model.model) and "generate" not in vars(model)
    assert "replace_image_token" not in vars(processor)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, reference)


@pytest.mark.parametrize("method", ["vispruner", "cdpruner"])
def test_llava_next_per_crop_exact_count(hf_llava_next, text_encoder, method):
    model, processor = hf_llava_next
    inputs = hf_inputs(processor, [(480, 640), (300, 900)])  # 5 crops and 4 crops
    with prune(model, method, 160, processor=processor, **options(method, text_encoder)) as handle, torch.no_grad():
        model(**inputs)
        assert handle.take_counts() == [5 * 32, 4 * 40]


def test_cdpruner_selection_follows_the_prompt(hf_llava, text_encoder):
    # same image, two prompts: the relevance (hence possibly the kept set) is computed per prompt
    model, processor = hf_llava
    seen = []
    with prune(model, "cdpruner", 64, processor=processor, text_encoder=text_encoder) as handle, torch.no_grad():
        original = handle.plan.method._select
        handle.plan.method._select = lambda tokens, budget: seen.append(tokens.instruction.clone()) or original(tokens, budget)
        for prompt in PROMPTS:
            image = random_image(336, 336, seed=3)
            model(**processor(images=[image], text=[prompt], return_tensors="pt"))
    assert len(seen) == 2 and seen[0].shape == seen[1].shape == (1, 1, 16)
    assert not torch.equal(seen[0], seen[1])


def test_cdpruner_refusals_name_the_fix(hf_llava, text_encoder, tmp_path):
    model, processor = hf_llava
    with pytest.raises(PruningError, match="pass text_encoder="):
        prune(model, "cdpruner", 64, processor=processor)
    with pytest.raises(PruningError, match="pass processor="):
        prune(model, "cdpruner", 64, text_encoder=text_encoder)
    with pytest.raises(PruningError, match="is not a folder; pass the path or hub id of a full CLIP checkpoint"):
        prune(model, "cdpruner", 64, processor=processor, text_encoder=str(tmp_path / "missing"))
    assert "get_image_features" not in vars(model.model)  # nothing left patched


def test_cdpruner_is_refused_on_the_original_codebase(tmp_path, text_encoder):
    pytest.importorskip("llava.model")
    from tiny_models import tiny_llava_original

    model = tiny_llava_original(tmp_path)[0]
    with pytest.raises(PruningError, match="transformers backend"):
        prune(model, "cdpruner", 64, text_encoder=text_encoder)
    assert "prepare_inputs_labels_for_multimodal" not in vars(model)


def test_vispruner_flops_count_the_rounds_products():
    """N = 20, T = 8, ratio 0.5: residual 16 -> A, B of 8 (2*8*8*D), 8 dropped; then 4 and 4 (2*4*4*D), 4 dropped."""
    from scope_eval.pruning.cost import SelectionWork

    work = SelectionWork(groups=2, tokens=20, keep=8, vision_width=3, text_width=5)
    assert build_method("vispruner").selection_flops(work) == 2 * (2 * 8 * 8 * 3 + 2 * 4 * 4 * 3)
