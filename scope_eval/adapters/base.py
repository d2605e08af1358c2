"""The adapter skeleton: what every host adapter shares.

Reversible instance patches and hooks; the pre-LLM sequence (run the vision tower with the saliency
probe attached, cut the result into images, select and pack per the plan, project, record the realised
counts) in ``select_and_pack``; the realised-token record; clean-up. A host adapter (hf_llava.py,
llava_original.py) supplies only what differs: how many tokens an image can bring
(``visual_tokens_per_image``), where its vision tower, feature layer and projector are, how it splits
its pixel input into crops and grids, and how the packed tokens reach its language model.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
from torch.utils.hooks import RemovableHandle

from scope_eval.pruning import PruningError
from scope_eval.pruning.plan import PruningPlan

from .core import ImageCrops, PackedImage, prune_images
from .vision_probe import VisionLayerProbe

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

    @staticmethod
    def visual_tokens_per_image(model: Any) -> int:  # pragma: no cover - every adapter overrides it
        """The most visual tokens one image can bring to the language model before pruning."""
        raise NotImplementedError

    def __init__(self, model: Any, plan: PruningPlan):
        self.model = model
        self.plan = plan
        self.probe: VisionLayerProbe | None = None
        self.llm_stage = None  # adapters.llm_stage.LlmStage, for in-LLM methods
        self._patches = InstancePatches()
        self._hooks: list[RemovableHandle] = []
        self._counts: list[int] = []
        self._layer_counts: list = []  # in-LLM methods: one adapters.llm_stage.LayerCounts per image
        self._degenerate = 0
        self._warned_degenerate = False
        self.active = True

    # -- the shared pre-LLM sequence ---------------------------------------------------------------
    def attach_probe(self, vision_tower: torch.nn.Module, feature_layer: int) -> None:
        """Collect CLS saliency, keys and the CLS state at ``feature_layer`` whenever the tower runs."""
        self.probe = VisionLayerProbe(vision_tower, feature_layer)

    def select_and_pack(
        self,
        crops: list[torch.Tensor],
        grids: list[tuple[int, int] | None],
        run_tower: Callable[[torch.Tensor], Any],
        project: Callable[[torch.Tensor], torch.Tensor],
        instructions: list[torch.Tensor | None] | None = None,
        text_space: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[list[PackedImage], torch.Tensor]:
        """Tower (every crop of every image in one batch), probe, selection and packing, and the record.

        crops: per image its [n, 3, H, W] pixel crops; grids: per image its high-resolution crop grid
        (rows, cols) or None; instructions: per image its CLIP text embedding (instruction-aware methods).
        Returns the packed images and the selected layer's features of all crops ([sum n, N, D]).
        """
        run_tower(torch.cat(crops, dim=0))
        features, saliency, keys, cls = self.probe.take_with_cls()  # type: ignore[union-attr]
        splits = [c.shape[0] for c in crops]
        instructions = instructions if instructions is not None else [None] * len(crops)
        images = [
            ImageCrops(f, s, k, g, pixels=c, cls=t, instruction=i)
            for f, s, k, g, c, t, i in zip(
                features.split(splits), saliency.split(splits), keys.split(splits), grids, crops, cls.split(splits), instructions
            )
        ]
        packed = prune_images(self.plan, images, project, text_space)
        self.record([p.count for p in packed], degenerate=sum(p.degenerate for p in packed))
        return packed, features

    def install_without_selection(self, encoder_owner: Any) -> bool:
        """In-LLM methods (the LM gets every visual token and drops some inside) and 'none' (only the counts
        are recorded, on ``encoder_owner.get_image_features``) select nothing at encoding: install them
        and return True; False for the pre-LLM methods, which the adapter installs itself."""
        if self.plan.method.stage == "llm":
            self._install_llm_stage()
            return True
        if self.plan.keeps_all:
            self._patches.set(encoder_owner, "get_image_features", self._record_stock_features)
            return True
        return False

    def _install_llm_stage(self) -> None:  # pragma: no cover - adapters with in-LLM methods override it
        raise PruningError(f"{type(self).__name__} cannot run in-LLM methods such as {self.plan.method.name}")

    def _record_stock_features(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def announce_prefill(self, input_ids, image_token_id: int, attention_mask, labels) -> None:
        """In-LLM methods: tell the stage where the visual tokens of the prompt about to run are."""
        if input_ids is None or input_ids.shape[1] < 2:
            return
        visual = input_ids == image_token_id
        if not bool(visual.any()):
            return
        if labels is not None:
            raise PruningError(
                f"{self.plan.method.name} drops positions inside the language model, so its logits do not line up "
                "with labels; compute losses without in-LLM pruning"
            )
        self.llm_stage.expect_prefill(visual, attention_mask)  # type: ignore[union-attr]

    # -- realised visual tokens -------------------------------------------------------------------
    def record(self, counts: list[int], degenerate: int = 0) -> None:
        """Note the visual tokens of each image, and how many of these images had a degenerate selection."""
        self._counts.extend(counts)
        self._degenerate += degenerate
        if degenerate and not self._warned_degenerate:
            self._warned_degenerate = True
            warnings.warn(
                f"{self.plan.method.name}: {degenerate} of {len(counts)} image(s) had a degenerate selection: the "
                "method's inputs gave it no preference among the tokens (e.g. all-zero saliency or features, or "
                "weights underflowing), so the lowest indices were kept. Check the vision features and the "
                "method's options; handle.take_degenerate() counts the affected images (warned once per handle)",
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
        """Detach the saliency probe and the in-LLM stage, whichever this handle installed."""
        if self.probe is not None:
            self.probe.remove()
        if self.llm_stage is not None:
            self.llm_stage.remove()

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
        budget = f"keep_ratio={self.plan.keep_ratio}" if self.plan.keep_ratio is not None else f"budget={self.plan.budget}"
        return f"{type(self).__name__}({self.plan.method!r}, {budget}, policy={self.plan.budget_policy}, {state})"
