"""What one ``generate()`` of an evaluation cost: measured times and the analytic prefill FLOPs.

The meter hooks the model instance once (removed by ``close()``) with the hooks of the efficiency
benchmark (``scope_eval.cost.timing``), and stamps, per generate():
- the vision tower's forward calls (a pre- and a post-hook on the tower module);
- the pruning method's ``run`` calls (a shadow on the method instance of the pruning plan, the one
  object both adapters call through ``prune_images``);
- the language model's first call (the prefill; later calls are decoding steps and are not stamped);
- the end of the model's first top-level forward: the first token's logits exist (time to first token).
Prefill versus decode is split there: ``ttft_s`` runs from the start of generate() to the end of that
first forward, ``decode_s`` from there to the end of generate(). Decoding steps are not stamped one by
one, so the decode loop gets no synchronisation it would not have had anyway.

On CUDA every stamp synchronises first (``scope_eval.cost.timing.Clock``), so a stamp means "the GPU
has finished everything queued"; on CPU it is ``time.perf_counter``. Nothing here touches a tensor,
so the answers cannot change.

FLOPs come from ``scope_eval.cost.flops`` (the one FLOP model), fed with what this sample realised:
crops the tower saw, tokens the projector got, and the sequence length of the language model's prefill.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from scope_eval.cost.flops import prefill_flops, qwen_prefill_flops
from scope_eval.cost.timing import Clock, PassTimer, _Span
from scope_eval.pruning.plan import PruningPlan

# Per-sample fields, in seconds unless named otherwise; the sweep summarises each (median, p90) per cell.
COST_FIELDS = ("vision_s", "selection_s", "llm_prefill_s", "ttft_s", "decode_s", "generate_s", "prefill_tokens", "prefill_flops", "llm_prefill_flops")


@dataclass(frozen=True)
class ModelParts:
    """Where a host model keeps what the meter hooks, and the configs its FLOPs are computed from."""

    vision_tower: nn.Module
    language_model: nn.Module
    vision_config: Any
    text_config: Any

    @classmethod
    def of(cls, model: nn.Module) -> ModelParts:
        base = getattr(model, "model", None)
        if base is not None and hasattr(base, "language_model") and hasattr(base, "vision_tower"):  # transformers
            return cls(base.vision_tower, base.language_model, model.config.vision_config, model.config.get_text_config())
        if base is not None and hasattr(base, "language_model") and hasattr(base, "visual"):  # transformers Qwen2(.5)-VL
            return cls(base.visual, base.language_model, model.config.vision_config, model.config.get_text_config())
        if hasattr(model, "get_vision_tower") and hasattr(model, "get_model"):  # the original LLaVA codebase
            tower = model.get_vision_tower()
            return cls(tower, model.get_model(), tower.config, model.config)
        raise TypeError(f"cannot find the vision tower and language model of a {type(model).__name__}")


class _FlopsConfig:
    """The two configs in the shape ``cost.flops.prefill_flops`` reads (a transformers LLaVA config)."""

    def __init__(self, parts: ModelParts):
        self.vision_config = parts.vision_config
        self._text_config = parts.text_config

    def get_text_config(self) -> Any:
        return self._text_config


class CostMeter(PassTimer):
    """Times every generate() of one model instance; ``measure`` runs one and returns its cost.

    The hooks and the ``run`` shadow are the benchmark's (``cost.timing.PassTimer``), installed on
    the parts of either codebase (PassTimer's own constructor finds transformers' only), plus a count of
    the crops the tower sees, for the FLOPs."""

    def __init__(self, model: nn.Module, plan: PruningPlan):
        parts = ModelParts.of(model)
        self._model = model
        self.clock = Clock(torch.device("cpu"))
        self.flops_config = _FlopsConfig(parts)
        # Qwen: images of varying patch grids (the tower's grid_thw), priced one by one
        self.qwen = hasattr(parts.vision_config, "spatial_merge_size")
        self._grids: list[tuple[int, int, int]] = []
        if not self.qwen:
            self.tokens_per_crop = (parts.vision_config.image_size // parts.vision_config.patch_size) ** 2
        self.plan = plan
        self._vision, self._selection, self._language_model = _Span(self.clock), _Span(self.clock), _Span(self.clock)
        self._first_forward_end: float | None = None
        self._first_forward_end_cpu = 0.0
        self._prefill_tokens = 0
        self._crops = 0
        self._handles = [
            parts.vision_tower.register_forward_pre_hook(self._tower_starts, with_kwargs=True),
            parts.vision_tower.register_forward_hook(lambda *_: self._vision.stop()),
            parts.language_model.register_forward_pre_hook(self._language_model_starts, with_kwargs=True),
            parts.language_model.register_forward_hook(self._language_model_ends),
            model.register_forward_hook(self._model_forward_ends),
        ]
        self._method = plan.method
        self._shadow_select(plan.method)

    def _tower_starts(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        pixels = args[0] if args else kwargs.get("pixel_values", kwargs.get("images"))
        if self._vision.depth == 0 and self.qwen:  # Qwen's pixel rows are patches: count the images' grids
            grids = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
            if isinstance(grids, torch.Tensor):
                self._grids.extend(tuple(int(x) for x in grid) for grid in grids.tolist())
                self._crops += grids.shape[0]
        elif self._vision.depth == 0 and isinstance(pixels, torch.Tensor):
            self._crops += int(pixels.shape[0])  # one row per crop (the adapters concatenate them)
        self._vision.start()

    def measure(self, generate: Callable[[], Any]) -> tuple[Any, Callable[[list[int]], dict]]:
        """Run ``generate`` timed; returns its output and a function turning the realised visual tokens
        per image into the sample's cost record (the counts are only known once generate() is done)."""
        # The wrapper may move the model after installing the meter (llava_scope does): look now.
        self.clock.device = next(self._model.parameters()).device
        for span in (self._vision, self._selection, self._language_model):
            span.spans.clear()
            span.depth = 0
        self._crops, self._prefill_tokens, self._first_forward_end, self._grids = 0, 0, None, []
        started = self.clock.now()
        output = generate()
        ended = self.clock.now()
        first_token = self._first_forward_end if self._first_forward_end is not None else ended
        times = {
            "vision_s": sum(self._vision.spans),
            "selection_s": sum(self._selection.spans),
            "llm_prefill_s": self._language_model.spans[0] if self._language_model.spans else 0.0,
            "ttft_s": first_token - started,
            "decode_s": ended - first_token,
            "generate_s": ended - started,
        }
        crops, prefill_tokens, grids = self._crops, self._prefill_tokens, list(self._grids)
        if self.qwen:
            return output, lambda counts, layers=(): {**times, **self._qwen_flops(grids, prefill_tokens, layers)}
        return output, lambda counts, layers=(): {**times, **self._flops(counts, crops, prefill_tokens, layers)}

    def _flops(self, counts: list[int], crops: int, prefill_tokens: int, layers=()) -> dict:
        """``layers``: the in-LLM stage's LayerCounts of this sample (empty for pre-LLM methods); their
        per-layer visual tokens price every decoder layer at its own length."""
        images = len(counts)
        if images == 0 or crops == 0 or prefill_tokens == 0:  # a text-only request
            return {"prefill_tokens": prefill_tokens, "prefill_flops": None, "llm_prefill_flops": None}
        crops_per_image = max(1, crops // images)
        # The projector sees every crop's tokens when nothing is pruned, else only the kept ones.
        projected = crops * self.tokens_per_crop if self.plan.keeps_all else sum(counts)
        visual_per_layer = list(layers[0].per_layer) if layers else None  # batch size 1: one sequence
        if visual_per_layer is not None:  # in-LLM: every visual token is projected and enters layer 0
            projected = visual_per_layer[0]
        flops = prefill_flops(
            self.flops_config,
            self.plan,
            crops=crops_per_image,
            projected_tokens=projected // images,
            prefill_tokens=prefill_tokens,
            visual_per_layer=visual_per_layer,
        )
        per_image = flops.vision + (flops.selection or 0) + flops.projector
        return {
            "prefill_tokens": prefill_tokens,
            "prefill_flops": images * per_image + flops.language_model,
            "llm_prefill_flops": flops.language_model,
        }

    def _qwen_flops(self, grids: list[tuple[int, int, int]], prefill_tokens: int, layers=()) -> dict:
        """Qwen: each image's tower, saliency, selection and merger at its own grid; the LM once."""
        if not grids or prefill_tokens == 0:  # a text-only request
            return {"prefill_tokens": prefill_tokens, "prefill_flops": None, "llm_prefill_flops": None}
        visual_per_layer = list(layers[0].per_layer) if layers else None  # batch size 1: one sequence
        per_image = [
            qwen_prefill_flops(self.flops_config, self.plan, grid=grid, prefill_tokens=prefill_tokens, visual_per_layer=visual_per_layer)
            for grid in grids
        ]
        language_model = per_image[0].language_model
        images = sum(f.vision + (f.selection or 0) + f.projector for f in per_image)
        return {"prefill_tokens": prefill_tokens, "prefill_flops": images + language_model, "llm_prefill_flops": language_model}

    def close(self) -> None:
        super().close()
        self._model = None
