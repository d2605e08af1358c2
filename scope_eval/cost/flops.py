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
- in-LLM methods (fastv, pdrop, dart): layer l of the language model costs its formula at its own length
  T_l = text tokens + the visual tokens it processes (``visual_per_layer``), and the KV cache holds T_l
  positions in layer l; their scoring inside the LM is the method's estimate at every drop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scope_eval.pruning.cost import DropWork, SelectionWork
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
class QwenVisionDims:
    """A Qwen2-VL / Qwen2.5-VL ViT: width D, MLP width and matrices (Qwen2-VL fc1/fc2: 2; Qwen2.5-VL's gated
    MLP: 3), patch size, merge size, and for Qwen2.5-VL its window size and full-attention blocks."""

    hidden: int
    layers: int
    mlp: int
    mlp_matrices: int
    patch: int
    merge: int
    window: int | None
    full_blocks: tuple[int, ...]

    @classmethod
    def of(cls, vision_config: Any) -> QwenVisionDims:
        windowed = hasattr(vision_config, "fullatt_block_indexes")
        hidden = vision_config.hidden_size if windowed else vision_config.embed_dim
        return cls(
            hidden=hidden,
            layers=vision_config.depth,
            mlp=vision_config.intermediate_size if windowed else int(hidden * vision_config.mlp_ratio),
            mlp_matrices=3 if windowed else 2,
            patch=vision_config.patch_size,
            merge=vision_config.spatial_merge_size,
            window=vision_config.window_size if windowed else None,
            full_blocks=tuple(vision_config.fullatt_block_indexes) if windowed else tuple(range(vision_config.depth)),
        )


def qwen_vision_flops(dims: QwenVisionDims, grid: tuple[int, int, int]) -> int:
    """One image of ``grid`` = (t, h, w) patches through the ViT blocks.

    Patch embedding 2*P*(3*2*p^2)*D (temporal patch 2); every block 2*P*(4*D^2 + m*D*D_ff) plus attention
    4*sum(len^2)*D over its segments (the image, or Qwen2.5-VL's windows in its window blocks).
    """
    t, h, w = grid
    patches = t * h * w
    width = dims.hidden
    windows = [h * w] * t
    if dims.window is not None:
        import torch
        from transformers.vision_utils import get_vision_window_index

        _, bounds = get_vision_window_index(
            torch.tensor([list(grid)]), spatial_merge_size=dims.merge, window_size=dims.window, patch_size=dims.patch
        )
        windows = (bounds[1:] - bounds[:-1]).tolist()
    full_attention = 4 * t * (h * w) ** 2 * width
    window_attention = 4 * sum(n * n for n in windows) * width
    projections = 2 * patches * (4 * width * width + dims.mlp_matrices * width * dims.mlp)
    blocks = sum(projections + (full_attention if b in dims.full_blocks else window_attention) for b in range(dims.layers))
    patch_embedding = 2 * patches * (3 * 2 * dims.patch**2) * width
    return patch_embedding + blocks


def qwen_merger_flops(dims: QwenVisionDims, patches: int, lm_width: int) -> int:
    """The merger (Qwen's projector) on every 2x2 group: 2*(P/4)*((4D)^2 + 4D*d)."""
    group = dims.merge**2 * dims.hidden
    return 2 * (patches // dims.merge**2) * (group * group + group * lm_width)


def qwen_prefill_flops(
    config: Any,
    plan: PruningPlan,
    *,
    grid: tuple[int, int, int],
    prefill_tokens: int,
    visual_per_layer: list[int] | None = None,
) -> PrefillFlops:
    """Qwen2-VL / Qwen2.5-VL prefill of one image of ``grid`` patches. The tower and the merger (the
    ``projector`` part) run on every patch, since selection comes after the merger; a method that uses
    saliency adds to the tower the recomputation of one block's attention logits, 2*P^2*D; selection is
    priced on the N post-merger tokens (no projection)."""
    vision = QwenVisionDims.of(config.vision_config)
    text = DecoderDims.of(config.get_text_config())
    patches = grid[0] * grid[1] * grid[2]
    tokens = patches // vision.merge**2
    tower, merger = qwen_vision_flops(vision, grid), qwen_merger_flops(vision, patches, text.hidden)
    if visual_per_layer is not None:
        layer_tokens = [prefill_tokens - visual_per_layer[0] + n for n in visual_per_layer]
        return PrefillFlops(tower, llm_selection_flops(plan, text, layer_tokens, visual_per_layer), merger,
                            language_model_prefill_flops(text, prefill_tokens, layer_tokens))
    selection: int | None = 0
    if not plan.keeps_all:
        chosen = plan.crop_selection(1, tokens)
        work = SelectionWork(1, tokens, chosen.budget, text.hidden, text.hidden, projected=True)
        selection = chosen.method.selection_flops(work)
        if chosen.method.needs_saliency:  # recomputed as the tower ends, so it is timed (and counted) with it
            tower += 2 * patches * patches * vision.hidden
    return PrefillFlops(tower, selection, merger, language_model_prefill_flops(text, prefill_tokens))


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
