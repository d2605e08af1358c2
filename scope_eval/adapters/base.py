"""What every adapter shares: reversible instance patches, hooks, and the realised-token record."""

from __future__ import annotations

from typing import Any

from torch.utils.hooks import RemovableHandle

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
        self.active = True

    # -- realised visual tokens -------------------------------------------------------------------
    def record(self, counts: list[int]) -> None:
        self._counts.extend(counts)

    def take_counts(self) -> list[int]:
        """Visual tokens that reached the language model, per image, since the last call."""
        counts, self._counts = self._counts, []
        return counts

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

    def __enter__(self) -> "PruningHandle":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        return f"{type(self).__name__}({self.plan.method!r}, budget={self.plan.budget}, policy={self.plan.budget_policy}, {state})"
