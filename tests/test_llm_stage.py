"""In-LLM pruning (FastV, PDrop, DART): realised counts at every decoder layer, generate, exact restore.

The tiny models get 8 decoder layers here (tests/tiny_models.py builds 2): with N = 576 visual tokens, a
drop at layer 2 can only reach layer-averaged budgets above 2*576/8 = 144.
"""

from __future__ import annotations

import pytest
import torch
from conftest import random_image

import tiny_models
from scope_eval import PruningError, prune

LAYERS = 8
METHODS = {"fastv": {}, "pdrop": {"layers": (1, 2, 4)}, "dart": {}}
BACKENDS = ["hf", "hf_next", "original"]
BUDGET = {"hf": 192, "hf_next": 1000, "original": 192}  # NeXT: ~2000 visual tokens in the LM
IMAGE_TOKEN_INDEX = -200


@pytest.fixture(scope="module")
def deep_configs():
    stock = tiny_models._configs

    def with_more_layers(tokenizer):
        common = stock(tokenizer)
        common["text_config"].num_hidden_layers = LAYERS
        return common

    return with_more_layers


class Backend:
    """One tiny model and how to feed it, whichever codebase it comes from."""

    def __init__(self, kind: str, model, batch: dict, prompt_length: int, num_visual: int):
        self.kind, self.model, self.batch = kind, model, batch
        self.prompt_length, self.num_visual = prompt_length, num_visual

    @property
    def decoder_layers(self):
        return self.model.model.language_model.layers if self.kind.startswith("hf") else self.model.get_model().layers

    def generate(self, new_tokens: int = 3):
        with torch.no_grad():
            if self.kind.startswith("hf"):
                out = self.model.generate(**self.batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, output_logits=True, return_dict_in_generate=True)
                return out.sequences[0, self.batch["input_ids"].shape[1]:], torch.stack(out.logits)[:, 0]
            out = self.model.generate(
                self.batch["input_ids"], images=self.batch["images"], image_sizes=self.batch["image_sizes"],
                max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, output_logits=True, return_dict_in_generate=True,
            )
            return out.sequences[0], torch.stack(out.logits)[:, 0]

    def logits(self, extra: torch.Tensor | None = None, use_cache: bool = False) -> torch.Tensor:
        ids = self.batch["input_ids"]
        if extra is not None:
            ids = torch.cat([ids, extra.view(1, -1)], dim=1)
        batch = {**self.batch, "input_ids": ids}
        if "attention_mask" in batch:
            batch["attention_mask"] = torch.ones_like(ids)
        with torch.no_grad():
            return self.model(**batch, use_cache=use_cache).logits[0]


def build(kind: str, deep_configs, tmp_path, monkeypatch) -> Backend:
    monkeypatch.setattr(tiny_models, "_configs", deep_configs)
    image = random_image(480, 640, seed=3)
    if kind.startswith("hf"):
        model, processor = tiny_models.tiny_llava_next() if kind == "hf_next" else tiny_models.tiny_llava()
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is in the image ?"}]}]
        prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
        batch = dict(processor(images=image, text=prompt, return_tensors="pt"))
        visual = int((batch["input_ids"] == model.config.image_token_id).sum())
        return Backend(kind, model, batch, batch["input_ids"].shape[1] - visual, visual)
    pytest.importorskip("llava.model")
    from llava.mm_utils import process_images, tokenizer_image_token

    model, tokenizer, image_processor = tiny_models.tiny_llava_original(tmp_path)
    images = process_images([image], image_processor, model.config)
    ids = tokenizer_image_token("what is <image>\nin the image ?", tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt").unsqueeze(0)
    return Backend(kind, model, dict(input_ids=ids, images=images, image_sizes=[image.size]), ids.shape[1] - 1, 576)


@pytest.fixture(params=BACKENDS)
def backend(request, deep_configs, tmp_path, monkeypatch):
    return build(request.param, deep_configs, tmp_path, monkeypatch)


def record_lengths(layers) -> tuple[list[int], list]:
    seen: list[int] = []

    def note(module, args, kwargs):
        seen.append((args[0] if args else kwargs["hidden_states"]).shape[1])

    return seen, [layer.register_forward_pre_hook(note, with_kwargs=True) for layer in layers]


def expected_visual_per_layer(method: str, handle, budget: int, num_visual: int) -> list[int]:
    """Closed form for the one-drop methods; PDrop's schedule checked for its shape in the test."""
    if method == "pdrop":
        return handle.plan.method.schedule(budget, num_visual, LAYERS).per_layer()
    layer = handle.plan.method.layer
    kept = (LAYERS * budget - layer * num_visual) // (LAYERS - layer)
    return [num_visual] * layer + [kept] * (LAYERS - layer)


@pytest.mark.parametrize("method", list(METHODS))
def test_counts_at_every_layer(backend, method):
    budget = BUDGET[backend.kind]
    with prune(backend.model, method, budget, **METHODS[method]) as handle:
        seen, hooks = record_lengths(backend.decoder_layers)
        backend.logits()
        for hook in hooks:
            hook.remove()
        expected = expected_visual_per_layer(method, handle, budget, backend.num_visual)
        assert seen == [backend.prompt_length + n for n in expected]
        (record,) = handle.take_layer_counts()
        assert record.per_layer == expected
        assert record.layer_average == sum(expected) / LAYERS
        assert handle.take_counts() == [record.layer_average]
        assert record.layer_average <= budget
    if method == "pdrop":  # drops exactly at its layers, each stage int(N * ratio**j) of the ORIGINAL N
        changes = [i for i in range(1, LAYERS) if expected[i] != expected[i - 1]]
        assert changes == [1, 2, 4] and expected == sorted(expected, reverse=True)
        ratio = expected[1] / backend.num_visual
        assert expected[4] <= int(backend.num_visual * ratio**3) + 3


@pytest.mark.parametrize("method", list(METHODS))
def test_after_layer_unit(backend, method):
    if backend.kind != "hf":
        pytest.skip("the unit is backend-independent arithmetic; one backend suffices")
    with prune(backend.model, method, 64, budget_unit="after_layer", **METHODS[method]) as handle:
        backend.logits()
        (record,) = handle.take_layer_counts()
        if method == "pdrop":  # the largest ratio whose schedule fits
            assert 60 <= record.after_layer <= 64
        else:
            assert record.after_layer == 64
        first = handle.plan.method.drop_layers()[0]
        assert record.per_layer[:first] == [backend.num_visual] * first


@pytest.mark.parametrize("method", list(METHODS))
def test_generate_matches_recomputation_without_cache(backend, method):
    """Decoding on the pruned per-layer caches = a full recomputation of the same sequence, the same tokens dropped."""
    with prune(backend.model, method, BUDGET[backend.kind], **METHODS[method]) as handle:
        chosen = []
        stock_choose = handle.plan.method.choose

        def recording(tokens, keep, stage):
            chosen.append(stock_choose(tokens, keep, stage))
            return chosen[-1]

        handle.plan.method.choose = recording
        new, scores = backend.generate(3)
        assert new.shape[0] == 3
        replay = iter(chosen)
        handle.plan.method.choose = lambda tokens, keep, stage: next(replay)
        logits = backend.logits(new[:-1])[-3:]
        del handle.plan.method.choose
    torch.testing.assert_close(logits, scores, atol=1e-4, rtol=1e-4)  # raw logits; EOS was suppressed


def decoded_and_recomputed(backend, method: str, budget: int, **options) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits of a full recomputation with the same tokens dropped, logits of 3 decoded steps on the pruned caches)."""
    with prune(backend.model, method, budget, **options) as handle:
        chosen = []
        stock_choose = handle.plan.method.choose
        handle.plan.method.choose = lambda t, k, s: chosen.append(stock_choose(t, k, s)) or chosen[-1]
        new, scores = backend.generate(3)
        replay = iter(chosen)
        handle.plan.method.choose = lambda t, k, s: next(replay)
        logits = backend.logits(new[:-1])[-3:]
        del handle.plan.method.choose
    return logits, scores


def test_eager_attention_masks(deep_configs, tmp_path, monkeypatch):
    """Under eager attention the decoder passes full masks: each pruned layer must get its own rows/columns."""
    backend = build("hf", deep_configs, tmp_path, monkeypatch)
    backend.model.set_attn_implementation("eager")
    logits, scores = decoded_and_recomputed(backend, "pdrop", 192, layers=(1, 2, 4))
    torch.testing.assert_close(logits, scores, atol=1e-4, rtol=1e-4)


def test_attention_probe_equals_eager_attention(deep_configs, tmp_path, monkeypatch):
    """FastV's scores: the last token's attention in layer 1, as eager attention returns it."""
    backend = build("hf", deep_configs, tmp_path, monkeypatch)
    backend.model.set_attn_implementation("eager")
    with torch.no_grad():
        reference = backend.model(**backend.batch, output_attentions=True).attentions[1][:, :, -1:]
    with prune(backend.model, "fastv", 192) as handle:
        probed = []
        stock_choose = handle.plan.method.choose

        def probing(tokens, keep, stage):
            probed.append(tokens.attention("before", tokens.last_query))
            return stock_choose(tokens, keep, stage)

        handle.plan.method.choose = probing
        backend.logits()
        del handle.plan.method.choose
    torch.testing.assert_close(probed[0], reference.float(), atol=1e-5, rtol=1e-4)


def module_state(model) -> list:
    return [
        (name, sorted(vars(m)), len(m._forward_pre_hooks), len(m._forward_hooks)) for name, m in model.named_modules()
    ]


@pytest.mark.parametrize("method", list(METHODS))
def test_restore_is_exact(backend, method):
    backend.generate(2)  # transformers caches some attributes on a module's first call: take them first
    before_state = {k: v.clone() for k, v in backend.model.state_dict().items()}
    before_modules = module_state(backend.model)
    before_logits = backend.logits()
    with prune(backend.model, method, BUDGET[backend.kind], **METHODS[method]):
        backend.generate(2)
        assert backend.logits().shape[0] < before_logits.shape[0]
    assert module_state(backend.model) == before_modules
    assert all(torch.equal(before_state[k], v) for k, v in backend.model.state_dict().items())
    assert torch.equal(backend.logits(), before_logits)


@pytest.mark.parametrize("method", list(METHODS))
def test_padded_batch_refused(hf_llava, method):
    model, processor = hf_llava
    prompts = ["USER: <image>\nwhat is in the image ? ASSISTANT:", "USER: <image>\nwhat ? ASSISTANT:"]
    batch = processor(images=[random_image(336, 336, 1)] * 2, text=prompts, return_tensors="pt", padding=True)
    options = {"layers": (1,)} if method == "pdrop" else {"layer": 1}
    with prune(model, method, 400, **options):
        with pytest.raises(PruningError, match="padded batches"):
            model.generate(**batch, max_new_tokens=2, do_sample=False)


@pytest.mark.parametrize("method", list(METHODS))
def test_bad_layer_and_unreachable_budget_refused(hf_llava, method):
    model = hf_llava[0]  # 2 decoder layers
    beyond = {"layers": (1, 2)} if method == "pdrop" else {"layer": 2}
    with pytest.raises(PruningError, match="beyond this language model's 2 decoder layers"):
        prune(model, method, 400, **beyond)
    early = {"layers": (1,)} if method == "pdrop" else {"layer": 1}
    with pytest.raises(PruningError, match="raise the budget"):
        prune(model, method, 64, **early)  # layer 0 alone already averages 576/2 = 288
    with pytest.raises(PruningError, match="layer"):
        prune(model, method, 400, **({"layers": (0,)} if method == "pdrop" else {"layer": 0}))
    with pytest.raises(PruningError, match="budget_unit"):
        prune(model, method, 400, budget_unit="per_layer", **early)


def test_flops_cost_every_layer_at_its_own_length(hf_llava):
    from scope_eval.cost.flops import DecoderDims, language_model_prefill_flops, prefill_flops

    config = hf_llava[0].config
    dims = DecoderDims.of(config.get_text_config())
    text, visual = 20, [576, 100]  # the tiny model's 2 layers: all visual tokens, then 100 after a drop at 1
    from scope_eval.pruning.plan import PruningPlan

    pruned = prefill_flops(config, PruningPlan.build("fastv", 338, layer=1), crops=1, projected_tokens=576,
                           prefill_tokens=text + 576, visual_per_layer=visual)
    one_layer = [language_model_prefill_flops(DecoderDims(**{**vars(dims), "layers": 1}), text + n) - 2 * dims.hidden * dims.vocab for n in visual]
    assert pruned.language_model == sum(one_layer) + 2 * dims.hidden * dims.vocab
    assert language_model_prefill_flops(dims, text + 576, [text + 576] * dims.layers) == language_model_prefill_flops(dims, text + 576)
    assert pruned.selection is not None and pruned.selection > 0


@pytest.mark.parametrize("layers, least", [((2, 8, 16), 52), ((8, 16, 24), 164)])
def test_pdrop_smallest_layer_averaged_budget_is_the_documented_one(layers, least):
    """docs/semantics.md#pdrop and the pdrop docstring quote these minima (576 tokens, 32 layers)."""
    from scope_eval.pruning import PruningError, build_method

    method = build_method("pdrop", layers=layers)
    assert method.schedule(least, 576, 32).layer_average() <= least
    with pytest.raises(PruningError):
        method.schedule(least - 1, 576, 32)


def stage_two_probe(backend, **options):
    """PDrop with layers (1, 2): what stage 2 (before layer 2) is given, and the position ids each layer gets."""
    with prune(backend.model, "pdrop", BUDGET["hf"], layers=(1, 2), **options) as handle:
        given = []
        stock_choose = handle.plan.method.choose

        def probing(tokens, keep, stage):
            if stage == 1:
                given.append((tokens.hidden, tokens.attention("at", tokens.last_query)))
            return stock_choose(tokens, keep, stage)

        handle.plan.method.choose = probing
        positions, hooks = [], []
        for layer in backend.decoder_layers:
            hooks.append(layer.register_forward_pre_hook(lambda m, a, k: positions.append(k.get("position_ids")), with_kwargs=True))
        backend.logits()
        for hook in hooks:
            hook.remove()
        del handle.plan.method.choose
    return given[0], positions


def last_token_attention_at(backend, layer_index: int, hidden: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """[1, H, 1, L] the last token's attention in decoder layer ``layer_index`` on ``hidden``, RoPE at ``position_ids``:
    written out from the layer's weights (norm, q/k projections, rotary, scaled dot product, causal softmax)."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    layer = backend.decoder_layers[layer_index]
    rotary = backend.model.model.language_model.rotary_emb
    normed = layer.input_layernorm(hidden)
    length, head_dim = hidden.shape[1], layer.self_attn.head_dim
    q = layer.self_attn.q_proj(normed).view(1, length, -1, head_dim).transpose(1, 2)
    k = layer.self_attn.k_proj(normed).view(1, length, -1, head_dim).transpose(1, 2)
    cos, sin = rotary(hidden, position_ids=position_ids)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    logits = (q[:, :, -1:].float() @ k.float().transpose(-1, -2)) * head_dim**-0.5  # the last row: nothing is in its future
    return torch.softmax(logits, dim=-1)


def test_pdrop_scores_later_stages_at_renumbered_positions(deep_configs, tmp_path, monkeypatch):
    """PyramidDrop's official code renumbers the sequence 0..L'-1 after a drop (modeling_llama_pdrop.py, the tail of
    pdrop_rank_drop) and scores the next stage with RoPE at those positions; positions=original keeps the originals."""
    backend = build("hf", deep_configs, tmp_path, monkeypatch)
    with torch.no_grad():
        (hidden, scores), positions = stage_two_probe(backend)
        length = hidden.shape[1]
        renumbered = torch.arange(length).unsqueeze(0)
        torch.testing.assert_close(scores, last_token_attention_at(backend, 2, hidden, renumbered), atol=1e-5, rtol=1e-4)
        assert all(torch.equal(p.expand(1, -1)[0], torch.arange(p.shape[-1])) for p in positions[1:])  # after the first drop
        assert positions[0].shape[-1] > length > positions[2].shape[-1]

        (hidden_o, scores_o), positions_o = stage_two_probe(backend, positions="original")
        original = positions_o[1].expand(1, -1)  # what layer 1 ran at: the sequence entering stage 2
        assert original.shape[1] == length and original[0, -1] > length - 1  # gaps where tokens were dropped
        torch.testing.assert_close(scores_o, last_token_attention_at(backend, 2, hidden_o, original), atol=1e-5, rtol=1e-4)
        assert not torch.allclose(scores_o, last_token_attention_at(backend, 2, hidden_o, renumbered), atol=1e-5)


def test_pdrop_original_positions_decode_like_recomputation(deep_configs, tmp_path, monkeypatch):
    """The option keeps today's behaviour: decoding on the pruned caches = recomputation, original positions."""
    backend = build("hf", deep_configs, tmp_path, monkeypatch)
    logits, scores = decoded_and_recomputed(backend, "pdrop", BUDGET["hf"], layers=(1, 2, 4), positions="original")
    torch.testing.assert_close(logits, scores, atol=1e-4, rtol=1e-4)


def test_pdrop_published_schedule_at_64():
    """The authors' low-budget recipe (PyramidDrop issue #29): layers 2/8/16, lambda 0.19 -> 109 / 20 / 3 at 64 tokens;
    budgets without a published ratio (and schedule_from=search) take the search."""
    from scope_eval.pruning import PruningError, build_method

    published = build_method("pdrop").schedule(64, 576, 32)
    assert published.keep == (109, 20, 3)
    assert abs(published.layer_average() - 62.9375) < 1e-9
    assert build_method("pdrop", schedule_from="search").schedule(64, 576, 32).keep == (110, 21, 4)
    assert build_method("pdrop").schedule(128, 576, 32).keep == build_method("pdrop", schedule_from="search").schedule(128, 576, 32).keep
    assert build_method("pdrop", budget_unit="after_layer").schedule(64, 576, 32).keep != (109, 20, 3)
    for bad in ({"positions": "shifted"}, {"schedule_from": "paper"}):
        with pytest.raises(PruningError, match="must be one of"):
            build_method("pdrop", **bad)
