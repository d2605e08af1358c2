"""Behaviour shared by the registered pruned-LLaVA wrappers (``llava_scope``, ``llava_hf_scope``)."""

from __future__ import annotations

import gc
from typing import Any, Callable

import torch
from loguru import logger

from scope_eval.adapters.base import InstancePatches
from scope_eval.lmms.errors import RunAborted, abort_on_error
from scope_eval.lmms.options import PruningSpec, split_model_args
from scope_eval.lmms.tracking import RequestTracker, guarded_generate

from .cost import CostMeter


class PrunedWrapper:
    """Mixin placed before an upstream lmms-eval wrapper class.

    Subclasses set ``model_id`` and ``doc_fn_index`` (where the document callable sits in a
    generate_until request's args) and call ``_start_pruning`` once the model is loaded.
    """

    model_id: str = ""
    doc_fn_index: int = 2
    tracker: RequestTracker | None = None

    @classmethod
    def _split_args(cls, kwargs: dict[str, Any], wrapper_args: set[str]) -> tuple[PruningSpec, dict[str, Any]]:
        with abort_on_error(f"{cls.model_id} model_args"):
            spec, upstream = split_model_args(cls.model_id, kwargs, wrapper_args)
            batch_size = int(upstream.get("batch_size", 1))
            if batch_size != 1:
                raise ValueError(f"{cls.model_id} evaluates one request at a time (batch_size=1, the paper's setting), got {batch_size}")
        return spec, upstream

    def _start_pruning(self, model: Any, spec: PruningSpec, processor: Any = None) -> None:
        from scope_eval import prune

        with abort_on_error(f"{self.model_id}: pruning the loaded model ({spec.describe()})"):
            self.pruning_spec = spec
            self.pruning = prune(
                model, spec.method, spec.budget, processor=processor, budget_policy=spec.budget_policy, **spec.options
            )
            plan = self.pruning.plan
            self.cost_meter = CostMeter(
                model, plan.method, method_name=spec.method, budget=plan.budget, budget_policy=plan.budget_policy, keeps_all=plan.keeps_all
            )
        self._own_patches = InstancePatches()
        self._own_patches.set(model, "generate", guarded_generate(self, model.generate))
        logger.info(f"{self.model_id}: pruning with {spec.describe()}")

    def _generate_tracked(self, requests: list, run: Callable[[list], list]) -> list:
        tracker = RequestTracker(self.model_id, requests, self.doc_fn_index)
        self.tracker = tracker
        try:
            outputs = run(tracker.tagged_requests())
        except Exception as error:  # preparing inputs (processor, images) fails outside generate()
            where = tracker.describe(tracker.current) if tracker.current is not None else "a request"
            raise RunAborted(
                f"{self.model_id}: generation failed on {where} ({self.pruning_spec.describe()}): {type(error).__name__}: {error}"
            ) from error
        finally:
            self.tracker = None
        degenerate = sum(1 for count in tracker.degenerate.values() if count)
        if degenerate:  # once per run; each sample's token_counts say which (degenerate_selections)
            logger.warning(
                f"{self.model_id}: {degenerate} of {len(requests)} samples had a degenerate selection "
                f"({self.pruning_spec.describe()}): no preference among the visual tokens (all-zero saliency or "
                "features, or saliency**alpha underflowing), so the lowest indices were kept; check alpha and the vision tower"
            )
        return tracker.with_counts(outputs)

    def clean(self) -> None:
        # lmms-eval's clean() deletes every nn.Module attribute after each evaluation; keeping the model
        # (and its pruning) lets one wrapper object be evaluated again, e.g. by simple_evaluate in a loop.
        accelerator = getattr(self, "accelerator", None)
        if accelerator is not None:
            accelerator.free_memory()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def unprune(self) -> None:
        """Restore the wrapped model exactly (drops the generate guard and the cost meter, then the pruning)."""
        patches = getattr(self, "_own_patches", None)
        if patches is not None:
            patches.restore()
        meter = getattr(self, "cost_meter", None)
        if meter is not None:
            meter.close()
        handle = getattr(self, "pruning", None)
        if handle is not None:
            handle.remove()

