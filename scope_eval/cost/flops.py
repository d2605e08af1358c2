"""Analytic FLOPs of one prefill: vision tower, selection (estimate), projector, language model.

Conventions (also in scope_eval/bench/README.md); the selection and in-LLM scoring estimates are each
method's own (``PruningMethod.selection_flops``, ``LlmStageMethod.scoring_flops``), priced on the split
the plan makes (``PruningPlan.crop_selection``):
- a multiply-add is 2 FLOPs; norms, softmax, activations, rotary embeddings and gathers are not counted;
- attention is counted over the full T x T square (scores 2*T^2*d, weighted values 2*T^2*d), i.e. not
  halved for the causal mask: dense kernels compute the square, flash kernels skip about half of it;
- language model, per layer: 2*T*(2*d^2 + 2*d*d_kv + 3*d*d_ff) + 4*T^2*d, with d_kv = kv_heads*head_dim
  (q and o are d x d, k and v are d x d_kv; the gated MLP has three d x d_ff matrices), plus the LM head
  2*d*V on the last prompt token only (generation needs just its logits);
- vision tower, per crop: patch embedding 2*N*(3*p^2)*D plus, for every layer (all of them run, even
  past the selected one), 2*(N+1)*(4*D^2 + 2*D*D_ff) + 4*(N+1)^2*D;
- projector (2-layer MLP): 2*M*(D*d + d*d) for the M visual tokens it projects;
- selection: the method's estimate, None (printed n/a) when it gives none;
- in-LLM methods (fastv, pdrop, dart, sparsevlm): layer l of the language model costs its formula at its own length
  T_l = text tokens + the visual tokens it processes (``visual_per_layer``), and the KV cache holds T_l
  positions in layer l; their scoring inside the LM is the method's estimate at every drop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scope_eval.pruning.cost import DropWork
from scope_eval.pruning.plan import PruningPlan


@dataclass(frozen=True)
class DecoderDims:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    mlp: int
    vocab: int

    @property
    def kv_width(self) -> int:
        return self.kv_heads * (self.hidden // self.heads)

    @classmethod
    def of(cls, text_config: Any) -> DecoderDims:
        heads = text_config.num_attention_heads
        return cls(
            hidden=text_config.hidden_size,
            layers=text_config.num_hidden_layers,
            heads=heads,
            kv_heads=getattr(text_config, "num_key_value_heads", None) or heads,
            mlp=text_config.intermediate_size,
            vocab=text_config.vocab_size,
        )


@dataclass(frozen=True)
class VisionDims:
    hidden: int
    layers: int
    mlp: int
    patch: int
    image: int

    @property
    def tokens_per_crop(self) -> int:
        return (self.image // self.patch) ** 2

    @classmethod
    def of(cls, vision_config: Any) -> VisionDims:
        return cls(
            hidden=vision_config.hidden_size,
            layers=vision_config.num_hidden_layers,
            mlp=vision_config.intermediate_size,
            patch=vision_config.patch_size,
            image=vision_config.image_size,
        )


def language_model_prefill_flops(dims: DecoderDims, tokens: int, layer_tokens: list[int] | None = None) -> int:
    """Prefill of ``tokens`` positions (or ``layer_tokens[l]`` in layer l), with logits for the last one."""
    lengths = layer_tokens if layer_tokens is not None else [tokens] * dims.layers
    if len(lengths) != dims.layers:
        raise ValueError(f"{len(lengths)} per-layer lengths for a {dims.layers}-layer language model")
    d = dims.hidden
    total = 0
    for t in lengths:
        projections = 2 * t * (2 * d * d + 2 * d * dims.kv_width + 3 * d * dims.mlp)
        attention = 4 * t * t * d
        total += projections + attention
    return total + 2 * d * dims.vocab


def llm_selection_flops(plan: PruningPlan, dims: DecoderDims, layer_tokens: list[int], visual_per_layer: list[int]) -> int | None:
    """The in-LLM method's scoring estimate summed over the layers where the visual count changes."""
    drops = [l for l in range(1, len(visual_per_layer)) if visual_per_layer[l] != visual_per_layer[l - 1]]
    total = 0
    for layer in drops:
        work = DropWork(layer_tokens[layer - 1], visual_per_layer[layer - 1], visual_per_layer[layer], dims.hidden, dims.kv_width)
        flops = plan.method.scoring_flops(work)  # type: ignore[attr-defined]
        if flops is None:
            return None
        total += flops
    return total


def vision_tower_flops(dims: VisionDims, crops: int) -> int:
    n, width = dims.tokens_per_crop, dims.hidden
    length = n + 1  # CLS
    patch_embedding = 2 * n * 3 * dims.patch**2 * width
    per_layer = 2 * length * (4 * width * width + 2 * width * dims.mlp) + 4 * length * length * width
    return crops * (patch_embedding + dims.layers * per_layer)


def projector_flops(vision_width: int, text_width: int, tokens: int) -> int:
    return 2 * tokens * (vision_width * text_width + text_width * text_width)


def selection_flops(plan: PruningPlan, crops: int, vision: VisionDims, text_width: int) -> int | None:
    """The method's estimate for one image of ``crops`` crops, on the split the plan makes."""
    if plan.keeps_all:
        return 0
    selection = plan.crop_selection(crops, vision.tokens_per_crop)
    return selection.method.selection_flops(selection.work(vision.hidden, text_width))


def kv_cache_bytes(dims: DecoderDims, tokens: int, bytes_per_element: int) -> int:
    """Keys and values of every layer for ``tokens`` positions."""
    return 2 * dims.layers * tokens * dims.kv_width * bytes_per_element


@dataclass(frozen=True)
class PrefillFlops:
    vision: int
    selection: int | None
    projector: int
    language_model: int

    @property
    def total(self) -> int:
        return self.vision + (self.selection or 0) + self.projector + self.language_model


def prefill_flops(
    config: Any,
    plan: PruningPlan,
    *,
    crops: int,
    projected_tokens: int,
    prefill_tokens: int,
    visual_per_layer: list[int] | None = None,
) -> PrefillFlops:
    """``visual_per_layer``: for in-LLM methods, the visual tokens of every decoder layer; ``prefill_tokens``
    is then the length entering layer 0 (every visual token)."""
    vision = VisionDims.of(config.vision_config)
    text = DecoderDims.of(config.get_text_config())
    if visual_per_layer is not None:
        layer_tokens = [prefill_tokens - visual_per_layer[0] + n for n in visual_per_layer]
        return PrefillFlops(
            vision=vision_tower_flops(vision, crops),
            selection=llm_selection_flops(plan, text, layer_tokens, visual_per_layer),
            projector=projector_flops(vision.hidden, text.hidden, projected_tokens),
            language_model=language_model_prefill_flops(text, prefill_tokens, layer_tokens),
        )
    return PrefillFlops(
        vision=vision_tower_flops(vision, crops),
        selection=selection_flops(plan, crops, vision, text.hidden),
        projector=projector_flops(vision.hidden, text.hidden, projected_tokens),
        language_model=language_model_prefill_flops(text, prefill_tokens),
    )
