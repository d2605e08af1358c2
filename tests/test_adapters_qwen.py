"""The Qwen2-VL / Qwen2.5-VL adapter on tiny random models (tests/tiny_qwen.py): what reaches the LM, positions,
restore, budgets, saliency."""

from __future__ import annotations

import pytest
import torch

from scope_eval import prune, restore
from scope_eval.adapters.qwen_saliency import QwenSaliencyProbe, attention_received
from scope_eval.pruning import PruningError
from scope_eval.pruning.plan import PruningPlan
from scope_eval.pruning.registry import METHODS
from tiny_qwen import IMAGE, qwen_inputs, tiny_qwen

FAMILIES = ["qwen2-vl", "qwen2.5-vl"]
PRE_LLM = sorted(name for name, cls in METHODS.items() if cls.stage != "llm" and not cls.keeps_all and not cls.needs_instruction)
IN_LLM = sorted(name for name, cls in METHODS.items() if cls.stage == "llm")
# drop layers that exist in the tiny 3-layer decoder
IN_LLM_OPTIONS = {"pdrop": {"layers": (1, 2)}, "fastv": {"layer": 1}, "dart": {"layer": 1}, "sparsevlm": {"layers": (1, 2)}}
GREEDY = dict(max_new_tokens=6, do_sample=False, eos_token_id=None)


@pytest.fixture(scope="module", params=FAMILIES)
def qwen(request):
    return tiny_qwen(request.param)


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def stock_logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def test_none_runs_the_stock_model(qwen):
    inputs = qwen_inputs([[(8, 12), (6, 6)]])
    reference = qwen.generate(**inputs, **GREEDY)
    with prune(qwen, "none") as handle:
        assert torch.equal(qwen.generate(**inputs, **GREEDY), reference)
        assert handle.take_counts() == [24, 9]


@pytest.mark.parametrize("method", PRE_LLM)
def test_pruned_generate_is_a_recomputation_of_the_kept_sequence(qwen, method):
    """Greedy generate under pruning == greedy decoding without a cache of the pruned sequence, whose kept
    tokens keep their original (t, h, w) positions and whose new tokens continue after the unpruned length."""
    inputs = qwen_inputs([[(8, 12), (6, 10)]], seed=3)
    ids = inputs["input_ids"]
    with prune(qwen, method, keep_ratio=0.25) as handle:
        generated = qwen.generate(**inputs, **GREEDY)[:, ids.shape[1]:]
        kept_masks = [m.clone() for m in handle.kept_masks]
        assert handle.take_counts() == [6, 4] or method == "visionzip"
    base = qwen.model
    with torch.no_grad():
        positions, _ = base.get_rope_index(ids, inputs["mm_token_type_ids"], inputs["image_grid_thw"], inputs["attention_mask"])
        embeds = base.get_input_embeddings()(ids)
        if method == "visionzip":  # merged tokens: take the LM input the adapter built (their values are VisionZip's)
            captured = []
            with prune(qwen, method, keep_ratio=0.25):  # the capture runs after the adapter's own pre-hook
                hook = base.language_model.register_forward_pre_hook(
                    lambda m, a, k: captured.append(k["inputs_embeds"]), with_kwargs=True
                )
                qwen(**inputs)
                hook.remove()
            kept_embeds = captured[0]
        else:
            image = torch.cat(base.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"]).pooler_output)
            embeds = embeds.masked_scatter((ids == IMAGE).unsqueeze(-1), image)
        keep = torch.ones_like(ids, dtype=torch.bool)
        keep[ids == IMAGE] = torch.cat(kept_masks)
        kept_positions = positions[:, keep].unsqueeze(1)  # [3, 1, L']
        if method != "visionzip":
            kept_embeds = embeds[keep].unsqueeze(0)
        next_position = int(positions.max()) + 1
        step_logits = []
        for step, token in enumerate(generated[0]):  # fed the generated tokens, to compare every step
            out = base.language_model(
                inputs_embeds=kept_embeds, position_ids=kept_positions,
                attention_mask=torch.ones(kept_embeds.shape[:2], dtype=torch.long),
            )
            step_logits.append(qwen.lm_head(out.last_hidden_state[0, -1]))
            kept_embeds = torch.cat([kept_embeds, base.get_input_embeddings()(token.view(1, 1))], dim=1)
            kept_positions = torch.cat([kept_positions, torch.full((3, 1, 1), next_position + step)], dim=2)
    assert_greedy_choices(generated[0], step_logits)


def assert_greedy_choices(tokens: torch.Tensor, step_logits: list[torch.Tensor], tie: float = 1e-4) -> None:
    """Each token is the recomputation's argmax (or within ``tie`` of it: a near-tie may go either way
    under another machine's rounding, and is the only leeway)."""
    for step, (token, logits) in enumerate(zip(tokens.tolist(), step_logits)):
        assert float(logits[token]) >= float(logits.max()) - tie, f"step {step}: {token} is not the argmax {int(logits.argmax())}"


def test_generate_without_a_cache_prunes_every_step(qwen):
    """use_cache=False: generate() re-runs the whole sequence each step with the same image encoding; every
    step must see the pruned sequence (the cached run's prefill length, plus the tokens so far)."""
    inputs = qwen_inputs([[(8, 12)]], seed=5)
    lengths = []
    with prune(qwen, "scope", keep_ratio=0.25):
        hook = qwen.model.language_model.register_forward_pre_hook(
            lambda m, a, k: lengths.append(k["inputs_embeds"].shape[1]), with_kwargs=True
        )
        qwen.generate(**inputs, **GREEDY)
        prompt = inputs["input_ids"].shape[1] - 24 + 6
        assert lengths == [prompt] + [1] * (GREEDY["max_new_tokens"] - 1)
        lengths.clear()
        qwen.generate(**inputs, **GREEDY, use_cache=False)
        hook.remove()
    assert lengths == [prompt + step for step in range(GREEDY["max_new_tokens"])]


def test_language_model_gets_only_kept_tokens_with_a_2d_mask(qwen):
    inputs = qwen_inputs([[(8, 12)]], texts=[[5, 6, 7, 8]])
    seen = {}

    def capture(module, args, kwargs):
        seen.setdefault("first", kwargs)
        return None

    with prune(qwen, "scope", budget=5) as handle:
        hook = qwen.model.language_model.register_forward_pre_hook(capture, with_kwargs=True)
        qwen(**{k: v for k, v in inputs.items() if k != "attention_mask"})  # no mask given: the LM gets one anyway
        hook.remove()
        assert handle.take_counts() == [5]
    full = inputs["input_ids"].shape[1]
    kwargs = seen["first"]
    assert kwargs["inputs_embeds"].shape[1] == full - 24 + 5
    assert kwargs["attention_mask"].shape == (1, full - 24 + 5)
    assert kwargs["position_ids"].shape[-1] == full - 24 + 5
    text_after = kwargs["position_ids"][0, 0, -4:]  # the 4 words after the image keep their unpruned positions
    positions, _ = qwen.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"], inputs["image_grid_thw"])
    assert torch.equal(text_after, positions[0, 0, -4:])


def test_removal_restores_the_model_bit_for_bit(qwen):
    inputs = qwen_inputs([[(8, 12)]])
    weights, logits = snapshot(qwen), stock_logits(qwen, inputs)
    before = {name: dict(vars(module)) for name, module in qwen.named_modules()}
    for method in ("scope", "fastv", "none"):
        kwargs = {"none": {}, "scope": {"budget": 4}, "fastv": {"budget": 12, "layer": 1}}[method]
        prune(qwen, method, **kwargs)
        qwen(**inputs)
        restore(qwen)
    assert all(torch.equal(v, weights[k]) for k, v in qwen.state_dict().items())
    assert torch.equal(stock_logits(qwen, inputs), logits)
    for name, module in qwen.named_modules():
        assert set(vars(module)) == set(before[name]), name
        assert not module._forward_pre_hooks and not module._forward_hooks, name


def test_batched_rows_keeping_different_counts_match_each_row_alone(qwen):
    """Different image sizes keep different K under keep_ratio: rows are re-padded after pruning."""
    grids, texts = [[(8, 12)], [(6, 6)]], [[5, 6, 7], [8, 9]]
    batch = qwen_inputs(grids, texts, seed=4)
    with prune(qwen, "scope", keep_ratio=0.5) as handle:
        together = qwen.generate(**batch, **GREEDY)[:, batch["input_ids"].shape[1]:]
        assert handle.take_counts() == [12, 5]  # floor(0.5 * 9 + 1/2) = 5
        for row in range(2):
            alone = qwen_inputs([grids[row]], [texts[row]], seed=4)
            alone["pixel_values"] = batch["pixel_values"][:96] if row == 0 else batch["pixel_values"][96:]
            single = qwen.generate(**alone, **GREEDY, output_logits=True, return_dict_in_generate=True)
            tokens = single.sequences[0, alone["input_ids"].shape[1]:]
            differ = (together[row] != tokens).nonzero()
            if len(differ):  # only a near-tie may split them (another machine's rounding)
                step = int(differ[0])
                logits = single.logits[step][0]
                assert float(logits[together[row, step]]) >= float(logits.max()) - 1e-4
            else:
                assert together[row].tolist() == tokens.tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_sdpa_and_bfloat16(family):
    """As transformers loads Qwen by default (sdpa kernels, which return no attention weights) and in half
    precision: the saliency is still recomputed, the selection runs, generate works."""
    model = tiny_qwen(family, attn_implementation="sdpa").to(torch.bfloat16)
    inputs = qwen_inputs([[(8, 12)]])
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    for method in ("scope", "visionzip", "vispruner"):
        with prune(model, method, keep_ratio=0.25) as handle:
            out = model.generate(**inputs, **GREEDY)
            assert handle.take_counts() == [6] and out.shape[1] == inputs["input_ids"].shape[1] + 6


def test_each_image_gets_its_own_ratio_budget(qwen):
    inputs = qwen_inputs([[(8, 12), (6, 6), (2, 2)]])
    with prune(qwen, "divprune", keep_ratio=0.1) as handle:
        qwen(**inputs)
        # N = 24, 9, 1: floor(0.1 N + 1/2) = 2, 1 (0.9 + 0.5), and at least 1
        assert handle.take_counts() == [2, 1, 1]


@pytest.mark.parametrize("method", IN_LLM)
def test_in_llm_methods_generate_with_mrope_positions(qwen, method):
    inputs = qwen_inputs([[(8, 12)]])
    with prune(qwen, method, budget=16, **IN_LLM_OPTIONS.get(method, {})) as handle:
        out = qwen.generate(**inputs, **GREEDY)
        counts = handle.take_layer_counts()
    assert out.shape[1] == inputs["input_ids"].shape[1] + GREEDY["max_new_tokens"]
    assert counts and counts[0].per_layer[0] == 24 and min(counts[0].per_layer) < 24


def test_in_llm_keep_ratio_applies_to_the_prefill_visual_tokens(qwen):
    inputs = qwen_inputs([[(8, 12)]])
    with prune(qwen, "fastv", keep_ratio=0.5, layer=1, budget_unit="after_layer") as handle:
        qwen(**inputs)
        assert handle.take_layer_counts()[0].per_layer == [24, 12, 12]


def test_cdpruner_is_refused_with_the_reason(qwen):
    with pytest.raises(PruningError, match="no CLIP text tower"):
        prune(qwen, "cdpruner", budget=4, text_encoder="unused")


def test_video_input_is_refused(qwen):
    with prune(qwen, "scope", budget=4):
        with pytest.raises(PruningError, match="video"):
            qwen.model.get_video_features(torch.zeros(4, 1176), torch.tensor([[2, 2, 2]]))


def test_saliency_layer_option(qwen):
    full = getattr(qwen.config.vision_config, "fullatt_block_indexes", None)
    if full is not None:
        with pytest.raises(PruningError, match="window-attention block"):
            prune(qwen, "scope", budget=4, saliency_layer=0)
    with prune(qwen, "scope", budget=4, saliency_layer=-1) as handle:
        assert handle.saliency_block == qwen.config.vision_config.depth - 1
    with pytest.raises(PruningError, match="ViT block index"):
        prune(qwen, "scope", budget=4, saliency_layer=99)


def test_saliency_is_attention_received_per_image(qwen):
    """Mean over heads and queries of a softmax over keys: each image's saliency sums to 1, and one image's
    saliency does not depend on another image of the same call (cu_seqlens boundaries respected)."""
    visual = qwen.model.visual
    probe = QwenSaliencyProbe(visual, qwen.config.vision_config.depth - 1)
    both = qwen_inputs([[(8, 12), (6, 10)]])
    alone = qwen_inputs([[(8, 12)]])
    alone["pixel_values"] = both["pixel_values"][:96]
    with torch.no_grad():
        visual(both["pixel_values"], grid_thw=both["image_grid_thw"])
        together = probe.take()
        visual(alone["pixel_values"], grid_thw=alone["image_grid_thw"])
        single = probe.take()
    probe.remove()
    assert together.shape == (24 + 15,)
    assert torch.allclose(together[:24].sum(), torch.tensor(1.0)) and torch.allclose(together[24:].sum(), torch.tensor(1.0))
    assert torch.allclose(together[:24], single, atol=1e-6)


def test_saliency_chunks_do_not_change_the_result():
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(3, 50, 8, generator=generator), torch.randn(3, 50, 8, generator=generator)
    whole = attention_received(q, k, 0.3, chunk_elements=1 << 30)
    chunked = attention_received(q, k, 0.3, chunk_elements=3 * 50 * 7)  # 7 queries per chunk
    naive = torch.softmax(q @ k.transpose(-1, -2) * 0.3, dim=-1).mean(dim=(0, 1))
    assert torch.allclose(whole, naive, atol=1e-6) and torch.allclose(chunked, naive, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(budget=4, keep_ratio=0.5), "exactly one of budget"),
        (dict(keep_ratio=0.0), r"keep_ratio must be in \(0, 1\]"),
        (dict(keep_ratio=1.5), r"keep_ratio must be in \(0, 1\]"),
        (dict(keep_ratio=True), "keep_ratio must be a number"),
        (dict(keep_ratio="0.25"), "keep_ratio must be a number"),
        (dict(), "or keep_ratio"),
    ],
)
def test_bad_ratio_budgets_are_refused(kwargs, message):
    with pytest.raises(PruningError, match=message):
        PruningPlan.build("scope", **kwargs)


def test_ratio_rounding_is_half_up_at_the_written_decimal():
    plan = PruningPlan.build("scope", keep_ratio=0.1)
    assert [plan.ratio_budget(n) for n in (1, 4, 5, 15, 25, 345)] == [1, 1, 1, 2, 3, 35]
    quarter = PruningPlan.build("scope", keep_ratio=0.25)
    assert [quarter.ratio_budget(n) for n in (2, 6, 10, 345)] == [1, 2, 3, 86]  # 0.5, 1.5, 2.5 round up
    assert PruningPlan.build("none").image_budget(10) is None


def test_qwen25_window_order_is_undone():
    """Qwen2.5-VL's blocks run in window order: the probe's saliency, per merged token in raster order,
    equals a naive recomputation on the block's input put back in raster order first."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision
    from transformers.vision_utils import get_vision_window_index

    model = tiny_qwen("qwen2.5-vl")
    visual = model.model.visual
    block_index = visual.fullatt_block_indexes[-1]
    block = visual.blocks[block_index]
    inputs = qwen_inputs([[(12, 16), (8, 20)]])  # several 4x4-token windows, partial ones at the edges
    grid = inputs["image_grid_thw"]
    seen = {}
    hook = block.register_forward_pre_hook(lambda m, a, k: seen.update(hidden=a[0], call=k), with_kwargs=True)
    probe = QwenSaliencyProbe(visual, block_index)
    with torch.no_grad():
        visual(inputs["pixel_values"], grid_thw=grid)
        saliency = probe.take()
    hook.remove()
    probe.remove()
    window_index, _ = get_vision_window_index(grid, spatial_merge_size=2, window_size=visual.window_size, patch_size=14)
    assert not torch.equal(window_index, torch.arange(window_index.numel()))  # the order really is permuted
    patch_order = (window_index[:, None] * 4 + torch.arange(4)).flatten()  # window position -> raster patch
    raster = torch.argsort(patch_order)
    hidden = seen["hidden"][raster]
    cos, sin = (x[raster] for x in seen["call"]["position_embeddings"])
    attention = block.attn
    with torch.no_grad():
        qkv = attention.qkv(block.norm1(hidden)).reshape(hidden.shape[0], 3, attention.num_heads, -1).permute(1, 0, 2, 3)
        q, k = apply_rotary_pos_emb_vision(qkv[0], qkv[1], cos, sin)
    expected = []
    start = 0
    for t, h, w in grid.tolist():
        end = start + t * h * w
        qi, ki = q[start:end].transpose(0, 1).float(), k[start:end].transpose(0, 1).float()
        received = torch.softmax(qi @ ki.transpose(-1, -2) * attention.scaling, dim=-1).mean(dim=(0, 1))
        expected.append(received.view(-1, 4).sum(dim=1))
        start = end
    assert torch.allclose(saliency, torch.cat(expected), atol=1e-6)


def test_saliency_bench_measures_one_image_at_max_pixels():
    from scope_eval.bench.qwen_saliency import largest_grid, measure_saliency

    assert largest_grid(1280 * 28 * 28) == (70, 72)  # 1260 LM tokens <= 1280
    result = measure_saliency("tiny-qwen2.5-vl", 28 * 28 * 64, 0.25, 1, torch.device("cpu"))
    assert result["lm_tokens"] == 64 and result["kept"] == 16 and result["default_saliency_block"] == 3
    assert result["recompute_ms_median"] > 0 and result["scope_selection_ms_median"] > 0


def test_qwen_prefill_flops():
    from scope_eval.bench.shapes import QWEN_SHAPES
    from scope_eval.cost.flops import QwenVisionDims, qwen_prefill_flops, qwen_vision_flops

    qwen2, qwen25 = QWEN_SHAPES["qwen2-vl-7b"].config(), QWEN_SHAPES["qwen2.5-vl-7b"].config()
    grid = (1, 34, 46)  # a 640x480 photo: 391 LM tokens
    unpruned = qwen_prefill_flops(qwen2, PruningPlan.build("none"), grid=grid, prefill_tokens=391 + 40)
    pruned = qwen_prefill_flops(qwen2, PruningPlan.build("scope", keep_ratio=0.25), grid=grid, prefill_tokens=98 + 40)
    assert pruned.language_model < unpruned.language_model and pruned.projector == unpruned.projector
    patches, width = 34 * 46, 1280
    assert pruned.vision - unpruned.vision == 2 * patches * patches * width  # the saliency recomputation
    assert pruned.selection > 0
    # Qwen2.5-VL's window blocks attend within windows: cheaper attention than 32 full blocks would cost
    windowed = QwenVisionDims.of(qwen25.vision_config)
    full = QwenVisionDims(**{**windowed.__dict__, "full_blocks": tuple(range(windowed.layers))})
    assert qwen_vision_flops(windowed, grid) < qwen_vision_flops(full, grid)


def test_bench_runs_a_qwen_shape():
    from scope_eval.bench.loading import load_bench_model
    from scope_eval.bench.runner import BenchSettings, run_bench

    bench_model = load_bench_model("tiny-qwen2-vl", torch.device("cpu"), torch.float32)
    settings = BenchSettings(methods=["scope"], budgets=[4], image_size=(112, 168), repeats=1, warmup=0, new_tokens=2, prompt_tokens=5)
    run = run_bench(bench_model, settings, progress=lambda line: None)
    unpruned, pruned = run.cases
    assert (unpruned.visual_tokens, pruned.visual_tokens) == (24, 4)
    assert unpruned.prefill_tokens - pruned.prefill_tokens == 20
    assert pruned.flops.language_model < unpruned.flops.language_model


@pytest.mark.parametrize("method, options", [("scope", {"keep_ratio": 0.25}), ("fastv", {"budget": 12, "layer": 1, "budget_unit": "after_layer"})])
def test_cost_meter_prices_every_qwen_sample(qwen, method, options):
    """Per-sample timing and FLOPs (the lmms-eval wrappers' cost record) on Qwen: every field, the same
    answer as without the meter, and fewer LM FLOPs than the unpruned sample."""
    from scope_eval.lmms.models.cost import COST_FIELDS, CostMeter

    inputs = qwen_inputs([[(8, 12), (6, 10)]])
    generate = lambda: qwen.generate(**inputs, **GREEDY)
    costs = {}
    for name, kwargs in (("none", {}), (method, options)):
        with prune(qwen, name, **kwargs) as handle, torch.no_grad():
            plain = generate()
            handle.take_counts(), handle.take_layer_counts()
            meter = CostMeter(qwen, handle.plan)
            timed, cost_of = meter.measure(generate)
            costs[name] = cost_of(handle.take_counts(), handle.take_layer_counts())
            meter.close()
        assert torch.equal(plain, timed)
        assert set(costs[name]) == set(COST_FIELDS) and costs[name]["vision_s"] > 0
        assert costs[name]["prefill_flops"] > costs[name]["llm_prefill_flops"] > 0
    assert costs[method]["llm_prefill_flops"] < costs["none"]["llm_prefill_flops"]
    if method == "scope":
        assert costs["scope"]["prefill_tokens"] == costs["none"]["prefill_tokens"] - (24 + 15) + (6 + 4)


def test_real_image_processor_dynamic_resolution():
    """Qwen's own image processing of a real photo (shipped with scikit-learn), pinned max_pixels: the
    grid sets N, keep_ratio sets K = floor(r N + 1/2) per image."""
    from pathlib import Path

    import sklearn
    from PIL import Image
    from transformers import Qwen2VLImageProcessor

    photo = Image.open(Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg")
    encoded = Qwen2VLImageProcessor(max_pixels=602112)(images=[photo], return_tensors="pt")
    t, h, w = encoded["image_grid_thw"][0].tolist()
    assert (t, h, w) == (1, 30, 46)  # 345 LM tokens
    model = tiny_qwen("qwen2-vl")
    inputs = qwen_inputs([[(h, w)]])
    inputs["pixel_values"] = encoded["pixel_values"]
    with prune(model, "scope", keep_ratio=0.25) as handle:
        model(**inputs)
        assert handle.take_counts() == [86]


def test_bench_default_budgets_are_table8_ratios_of_the_test_image():
    from scope_eval.bench.command import DEFAULT_IMAGE_SIZE, _paper_budgets
    from scope_eval.bench.loading import load_bench_model

    bench_model = load_bench_model("tiny-qwen2.5-vl", torch.device("cpu"), torch.float32)
    # a 640x480 photo: 46 x 34 patches, 391 LM tokens; 25 % -> 98, 10 % -> 39
    assert _paper_budgets(bench_model, DEFAULT_IMAGE_SIZE["qwen2.5-vl"]) == [98, 39]
