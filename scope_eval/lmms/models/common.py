"""Behaviour shared by the registered pruned-LLaVA wrappers (``llava_scope``, ``llava_hf_scope``)."""

from __future__ import annotations

import gc
from typing import Any, Callable

import torch
from loguru import logger

from scope_eval.adapters.base import InstancePatches
from scope_eval.lmms.errors import abort_on_error
from scope_eval.lmms.options import split_model_args, wrapper_parameters
from scope_eval.lmms.tracking import SampleRecord, generate_one_by_one, guarded_generate
from scope_eval.pruning.plan import PruningPlan

from .cost import CostMeter


class PrunedWrapper:
    """Mixin placed before an upstream lmms-eval wrapper class.

    Subclasses set ``model_id`` and call ``_start_pruning`` once the model is loaded.
    """

    model_id: str = ""
    upstream_class: type  # the lmms-eval wrapper whose loading, prompts and generation this one keeps
    # model_args handed to prune() as adapter options (Qwen: saliency_layer): fixed for the loaded model, so a
    # sweep worker only runs cells that ask for the same values
    adapter_options: tuple[str, ...] = ()
    sample: SampleRecord | None = None  # the request being generated (scope_eval.lmms.tracking)
    # Called with (answered, requests) after each answer of a generate_until call: the sweep worker's
    # per-document progress. None (the default) reports nothing.
    on_answer: Callable[[int, int], None] | None = None

    @classmethod
    def _split_args(cls, kwargs: dict[str, Any], wrapper_args: set[str]) -> tuple[PruningPlan, dict[str, Any]]:
        with abort_on_error(f"{cls.model_id} model_args"):
            plan, upstream = split_model_args(cls.model_id, kwargs, wrapper_args)
            batch_size = int(upstream.get("batch_size", 1))
            if batch_size != 1:
                raise ValueError(f"{cls.model_id} evaluates one request at a time (batch_size=1, the paper's setting), got {batch_size}")
        return plan, upstream

    def _load_upstream_and_prune(self, kwargs: dict[str, Any], processor_attribute: str) -> None:
        """For wrappers whose loading is upstream's own: split the pruning args off, run ``upstream_class``'s
        ``__init__`` with the rest, then prune the loaded model (the processor named for methods that need it)."""
        plan, upstream = self.cell_plan(kwargs)
        self._adapter_options = self.adapter_options_of(kwargs)
        with abort_on_error(f"{self.model_id}: loading {upstream.get('pretrained', 'the default checkpoint')}"):
            self.upstream_class.__init__(self, **upstream)
        self._start_pruning(self.model, plan, processor=getattr(self, processor_attribute))

    def _start_pruning(self, model: Any, plan: PruningPlan, processor: Any = None) -> None:
        from scope_eval.adapters.api import prune

        self._pruning_processor = processor  # kept for switch_plan
        with abort_on_error(f"{self.model_id}: pruning the loaded model ({plan.describe()})"):
            self.pruning_plan = plan
            self.pruning = prune(model, plan, processor=processor, **getattr(self, "_adapter_options", {}))
            self.cost_meter = CostMeter(model, plan)
        self._own_patches = InstancePatches()
        self._own_patches.set(model, "generate", guarded_generate(self, model.generate))
        logger.info(f"{self.model_id}: pruning with {plan.describe()}")

    def _generate_tracked(self, requests: list, run: Callable[[list], list]) -> list:
        answers = generate_one_by_one(self, requests, run, self.on_answer)
        degenerate = sum(1 for answer in answers if answer.token_counts.degenerate_selections)
        if degenerate:  # once per run; each sample's token_counts say which (degenerate_selections)
            logger.warning(
                f"{self.model_id}: {degenerate} of {len(requests)} samples had a degenerate selection "
                f"({self.pruning_plan.describe()}): no preference among the visual tokens (e.g. all-zero saliency "
                "or features, or weights underflowing), so the lowest indices were kept; check the method's options and the vision tower"
            )
        return answers

    def clean(self) -> None:
        # lmms-eval's clean() deletes every nn.Module attribute after each evaluation; keeping the model
        # (and its pruning) lets one wrapper object be evaluated again, e.g. by simple_evaluate in a loop.
        # One garbage collection per evaluation: accelerate's free_memory() already runs one (and empties
        # the device cache); a second full collection cost about 0.3 s per sweep cell on the toy.
        accelerator = getattr(self, "accelerator", None)
        if accelerator is not None:
            accelerator.free_memory()
            return
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    @classmethod
    def cell_plan(cls, kwargs: dict[str, Any]) -> tuple[PruningPlan, dict[str, Any]]:
        """(the pruning plan, the upstream wrapper's arguments) of one set of model args, validated exactly
        as ``__init__`` validates them; the sweep worker checks the upstream part against the loaded model's."""
        # adapter options are validated once, when the model is loaded (a worker's cells must repeat them)
        upstream_and_pruning = {key: value for key, value in kwargs.items() if key not in cls.adapter_options}
        return cls._split_args(upstream_and_pruning, wrapper_parameters(cls.upstream_class))

    @classmethod
    def adapter_options_of(cls, kwargs: dict[str, Any]) -> dict[str, int]:
        """The adapter options among the model args (whole numbers: ViT block indices)."""
        options = {}
        for key in cls.adapter_options:
            if key in kwargs:
                value = kwargs[key]
                if isinstance(value, bool) or not isinstance(value, int):
                    with abort_on_error(f"{cls.model_id} model_args"):
                        raise ValueError(f"{key} must be a whole number (a ViT block index such as -2), got {value!r}")
                options[key] = value
        return options

    def switch_plan(self, plan: PruningPlan) -> None:
        """Prune the loaded model with another plan: the current one is removed (exact restore) first.
        The sweep worker evaluates many cells on one load this way."""
        self.unprune()
        self._start_pruning(self.model, plan, processor=self._pruning_processor)

    def unprune(self) -> None:
        """Restore the wrapped model exactly (drops the generate guard and the cost meter, then the pruning)."""
        patches = getattr(self, "_own_patches", None)
        if patches is not None:
            patches.restore()
        meter = getattr(self, "cost_meter", None)
        if meter is not None:
            meter.close()
            self.cost_meter = None
        handle = getattr(self, "pruning", None)
        if handle is not None:
            handle.remove()
            self.pruning = None

