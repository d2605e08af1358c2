"""What every adapter shares: reversible instance patches, hooks, and the realised-token record."""

from __future__ import annotations

import warnings
from typing import Any

from torch.utils.hooks import RemovableHandle

from scope_eval.pruning import PruningError

from .core import PruningPlan

_MISSING = object()


class InstancePatches:
    """Shadows attributes of single objects (never their classes) and restores them exactly."""

    def __init__(self) -> None:
        self._saved: list[tuple[object, str, Any]] = []

    def set(self, obj: object, name: str, value: Any) -> None:
        self._saved.append((obj, name, vars(obj).get(name, _MISSING)))
        setattr(obj, name, value)

    def restore(self) -> None:
        while self._saved:
            obj, name, previous = self._saved.pop()
            if previous is _MISSING:
                delattr(obj, name)
            else:
                setattr(obj, name, previous)


class PruningHandle:
    """An applied pruning plan. Use as a context manager, or call ``remove()``; both restore the model."""

    def __init__(self, model: Any, plan: PruningPlan):
        self.model = model
        self.plan = plan
        self._patches = InstancePatches()
        self._hooks: list[RemovableHandle] = []
        self._counts: list[int] = []
        self._layer_counts: list = []  # in-LLM methods: one adapters.llm_stage.LayerCounts per image
        self._degenerate = 0
        self._warned_degenerate = False
        self.active = True

    # -- realised visual tokens -------------------------------------------------------------------
    def record(self, counts: list[int], degenerate: int = 0) -> None:
        """Note the visual tokens of each image, and how many of these images had a degenerate selection."""
        self._counts.extend(counts)
        self._degenerate += degenerate
        if degenerate and not self._warned_degenerate:
            self._warned_degenerate = True
            warnings.warn(
                f"{self.plan.method.name}: {degenerate} of {len(counts)} image(s) had a degenerate selection: "
                "the saliency/features gave no preference among the tokens (all zero, or saliency**alpha "
                "underflowing), so the lowest indices were kept. Check the vision features and alpha; "
                "handle.take_degenerate() counts the affected images (warned once per handle)",
                RuntimeWarning,
                stacklevel=2,
            )

    def take_counts(self) -> list[int]:
        """Visual tokens that reached the language model, per image, since the last call."""
        counts, self._counts = self._counts, []
        return counts

    def record_layers(self, records: list) -> None:
        """In-LLM methods: per image, the visual tokens at every decoder layer (LayerCounts). take_counts()
        then reports their layer average, the default budget unit; take_layer_counts() gives both numbers."""
        self._layer_counts.extend(records)
        self.record([r.layer_average for r in records])

    def take_layer_counts(self) -> list:
        """In-LLM methods: LayerCounts per image since the last call (.per_layer, .layer_average, .after_layer)."""
        records, self._layer_counts = self._layer_counts, []
        return records

    def take_degenerate(self) -> int:
        """Images whose selection was degenerate (see KeptTokens.degenerate) since the last call."""
        degenerate, self._degenerate = self._degenerate, 0
        return degenerate

    # -- lifecycle -------------------------------------------------------------------------------
    def remove(self) -> None:
        if not self.active:
            return
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        self._patches.restore()
        self._release()
        self.active = False
        from .api import _forget  # the model may be pruned again once this handle is gone

        _forget(self.model, self)

    def _release(self) -> None:
        """Adapter-specific clean-up (probes etc.)."""

    # -- copies ----------------------------------------------------------------------------------
    def __deepcopy__(self, memo: dict) -> "PruningHandle":
        # A deep copy of a pruned model reaches its handle through the instance patches (bound methods
        # of this handle): refuse, since the copy would stay pruned with patches nobody removes.
        raise PruningError(
            "a pruned model cannot be copied (its copy would stay pruned, and restore() would not reach it); "
            "copy the model before pruning it, or restore(model) first and prune the copy separately"
        )

    def __reduce_ex__(self, protocol: object) -> Any:
        raise PruningError(
            "a pruned model cannot be pickled or saved whole; restore(model) first, or save its state_dict"
        )

    def __enter__(self) -> "PruningHandle":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        return f"{type(self).__name__}({self.plan.method!r}, budget={self.plan.budget}, policy={self.plan.budget_policy}, {state})"
