"""The contract every pruning method implements.

A method sees one batch of images (or LLaVA-NeXT crops) at a time, never a model. The model adapters
(scope_eval.adapters) collect the inputs below at the vision layer the LLaVA config selects, call
``method.select(tokens, budget)`` and feed only what it returns through the projector into the
language model.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field, replace
from typing import Callable, ClassVar

import torch

from .cost import SelectionWork


class PruningError(ValueError):
    """Bad pruning input (budget, method, options, features). The message names the fix."""


@dataclass
class VisualTokens:
    """Everything a method may use, for B images or crops of N tokens each.

    features:  [B, N, D] hidden states of the selected vision layer, CLS dropped (pre-projector).
    saliency:  [B, N] attention of the CLS query over the N patch keys in that same layer, softmax over
               the N+1 keys, summed over heads. None when the host cannot provide it.
    keys:      [B, N, Dk] that layer's attention keys of the patch tokens, averaged over heads (Dk = head
               size, 64 for CLIP ViT-L: VisionZip's similarity metric), or None.
    cls:       [B, D] that layer's hidden state of the CLS token (pre-projector), or None. VisionZip keeps it.
    project:   the host's multimodal projector (token-wise), for methods that work on projected tokens.
    image_keys: one integer per image/crop (row of features) identifying its INPUT, e.g. a hash of its pixels,
               or None. Passed only to methods with needs_image_keys (random seeds from it): unlike the
               features, the input's bits do not change with the host's kernels or thread count.
    instruction: [B, M, C] CLIP text-tower embeddings of the prompt's instruction, its M 77-token segments,
               one instruction per row (crops of one image repeat it), or None. Passed only to methods with
               needs_instruction (cdpruner), together with
    text_space: maps features [B, N, D] into that CLIP joint space [B, N, C] (post-LayerNorm + visual
               projection of the same CLIP checkpoint), or None.
    """

    features: torch.Tensor
    saliency: torch.Tensor | None = None
    keys: torch.Tensor | None = None
    project: Callable[[torch.Tensor], torch.Tensor] | None = None
    cls: torch.Tensor | None = None
    image_keys: list[int] | None = None
    instruction: torch.Tensor | None = None
    text_space: Callable[[torch.Tensor], torch.Tensor] | None = None
    _projected: torch.Tensor | None = field(default=None, repr=False)

    @property
    def batch(self) -> int:
        return self.features.shape[0]

    @property
    def num_tokens(self) -> int:
        return self.features.shape[1]

    def projected(self) -> torch.Tensor:
        """[B, N, D_text] projected tokens, computed once on first use."""
        if self._projected is None:
            if self.project is None:
                raise PruningError("this method needs the projected tokens, but the host passed no projector")
            self._projected = self.project(self.features)
        return self._projected


@dataclass
class KeptTokens:
    """What a method keeps, per image/crop.

    indices: [B, k] indices into N of the original tokens kept, ascending (spatial order).
    merged:  [B, m, D] new tokens in the pre-projector feature space (merging methods), placed after the
             kept ones, or None.
    prefix:  [B, p, D] tokens placed before the kept ones (VisionZip's CLS token, from VisualTokens.cls),
             or None. The number of visual tokens reaching the LM is p + k + m.
    degenerate: [B] bool, True where the input gave the method no preference among too many tokens, so
             the lowest-index tie rule chose (some of) the kept tokens: all-zero saliency or features, or
             weights that underflow. None when the method does not check (see PruningMethod.select).
    """

    indices: torch.Tensor
    merged: torch.Tensor | None = None
    prefix: torch.Tensor | None = None
    degenerate: torch.Tensor | None = None

    @property
    def count(self) -> int:
        extra = sum(0 if t is None else t.shape[1] for t in (self.merged, self.prefix))
        return self.indices.shape[1] + extra


def check_budget(budget: object, available: int, *, what: str = "budget") -> int:
    """Validate a visual-token budget against the tokens available; return it as an int.

    A whole-number float (64.0; lmms-eval parses ``budget=64.0`` so) means that integer, and the int is
    what every caller passes on. True/False are refused: bool is an int subclass, so True would silently
    mean a budget of 1 token.
    """
    if isinstance(budget, bool):
        raise PruningError(
            f"{what} must be a whole number of visual tokens kept per image, got {budget!r}; "
            "pass an integer such as 64 (True/False are not budgets)"
        )
    if not isinstance(budget, numbers.Integral) and not (
        isinstance(budget, numbers.Real) and float(budget).is_integer()
    ):
        raise PruningError(
            f"{what} must be a whole number of visual tokens kept per image, got {budget!r}; "
            f"pass an integer such as 64 (not a fraction of the tokens)"
        )
    budget = int(budget)
    if budget < 1:
        raise PruningError(f"{what} must be at least 1 visual token, got {budget}; use method 'none' to keep all")
    if budget > available:
        raise PruningError(
            f"{what} {budget} is larger than the {available} visual tokens available; "
            f"pass a budget <= {available}, or method 'none' to keep every token"
        )
    return budget


def check_features(tokens: VisualTokens) -> None:
    """Reject NaN/inf features and saliency instead of returning a silently wrong selection."""
    if tokens.features.ndim != 3:
        raise PruningError(f"features must be [B, N, D], got shape {tuple(tokens.features.shape)}")
    if not all_finite(tokens.features):
        raise PruningError("visual features contain NaN or inf; check the vision tower's dtype/weights")
    if tokens.saliency is not None:
        if tokens.saliency.shape != tokens.features.shape[:2]:
            raise PruningError(
                f"saliency must be [B, N] = {tuple(tokens.features.shape[:2])}, got {tuple(tokens.saliency.shape)}"
            )
        if not all_finite(tokens.saliency):
            raise PruningError("CLS saliency contains NaN or inf; check the vision tower's attention")


def check_picks(method: str, indices: torch.Tensor, rows: int, num_tokens: int) -> None:
    """The contract on a method's kept indices: [rows, k] integers, each row strictly ascending (so
    distinct) and in [0, num_tokens). A plugin breaking it would otherwise feed the LM repeated or shifted
    patches with the right count. Three reductions over [B, k]: cheap next to any selection."""
    if indices.dtype not in (torch.int64, torch.int32) or indices.ndim != 2 or indices.shape[0] != rows:
        raise AssertionError(
            f"method '{method}' broke the method contract: indices must be an integer tensor [{rows}, k], "
            f"got {indices.dtype} {tuple(indices.shape)}"
        )
    if indices.numel() == 0:
        return
    ascending = bool((indices[:, 1:] > indices[:, :-1]).all())
    smallest, largest = int(indices.min()), int(indices.max())
    if not ascending or smallest < 0 or largest >= num_tokens:
        row = next((r for r in range(rows) if not bool((indices[r, 1:] > indices[r, :-1]).all())), 0)
        raise AssertionError(
            f"method '{method}' broke the method contract: kept indices must be distinct, ascending and in "
            f"[0, {num_tokens}); got min {smallest}, max {largest}, row {row} starts {indices[row, :8].tolist()}. "
            "Fix the method's _select (sort the picks, drop repeats), or uninstall the plugin that provides it"
        )


def all_finite(x: torch.Tensor) -> bool:
    """True when no entry is NaN or inf. min and max propagate NaN, and are far cheaper than isfinite().all()."""
    if x.numel() == 0:
        return True
    smallest, largest = torch.aminmax(x)
    return bool(torch.isfinite(smallest) & torch.isfinite(largest))


@dataclass
class PruningMethod:
    """Base class: one dataclass per method, registered by name in scope_eval.pruning.registry.

    Subclasses set ``name`` and implement ``_select``; the base validates inputs and the budget so that
    a budget means the same thing for every method: visual tokens kept per image/crop.
    """

    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""  # how reports and plots name it (default: name)
    report_rank: ClassVar[int] = 1000  # its row position in report tables and plot legends (lower first)
    stage: ClassVar[str] = "vision"  # "llm": prunes inside the language model (scope_eval.pruning.llm_stage)
    needs_saliency: ClassVar[bool] = False
    needs_keys: ClassVar[bool] = False  # uses VisualTokens.keys when the host has them
    needs_cls: ClassVar[bool] = False  # uses VisualTokens.cls when the host has it
    needs_image_keys: ClassVar[bool] = False  # True: the host passes VisualTokens.image_keys
    needs_instruction: ClassVar[bool] = False  # True: the host passes VisualTokens.instruction and text_space
    keeps_all: ClassVar[bool] = False  # True only for 'none'

    def select(self, tokens: VisualTokens, budget: int | None) -> KeptTokens:
        """The model-free entry point: validates ``budget`` (check_budget, check_fits), then selects."""
        check_features(tokens)
        if self.keeps_all:
            if budget is not None:
                raise PruningError(f"method '{self.name}' keeps every token and takes no budget; drop the budget")
        elif budget is None:
            raise PruningError(f"method '{self.name}' needs a budget (visual tokens kept per image)")
        else:
            budget = check_budget(budget, tokens.num_tokens)
            self.check_fits(budget)
        return self._run_checked(tokens, budget)

    def run(self, tokens: VisualTokens, budget: int | None) -> KeptTokens:
        """Selection for a budget that is already validated (a PruningPlan at the edge): what the adapters call.

        Only the input is checked here: finite features, the inputs the method needs, and that this
        image or crop has at least ``budget`` tokens (a property of the input, not of the budget).
        """
        check_features(tokens)
        return self._run_checked(tokens, budget)

    def _run_checked(self, tokens: VisualTokens, budget: int | None) -> KeptTokens:
        """The selection itself, once ``check_features`` has passed (``select`` and ``run`` call it)."""
        if self.keeps_all:
            return self._select(tokens, tokens.num_tokens)
        if budget > tokens.num_tokens:
            raise PruningError(
                f"budget {budget} is larger than the {tokens.num_tokens} visual tokens this image brings; "
                f"pass a budget <= {tokens.num_tokens}, or method 'none' to keep every token"
            )
        if self.needs_instruction and (tokens.instruction is None or tokens.text_space is None):
            raise PruningError(
                f"method '{self.name}' needs the instruction's CLIP text embedding and the CLIP joint-space map; "
                "the host provided none (the HF adapters do, given text_encoder= and processor=)"
            )
        if self.needs_saliency and tokens.saliency is None:
            raise PruningError(f"method '{self.name}' needs the CLS saliency, but the host provided none")
        if tokens.batch == 0:  # no images: the empty selection, for every method alike
            return KeptTokens(indices=torch.empty(0, budget, dtype=torch.long, device=tokens.features.device))
        # Selection never needs gradients. A host running with autograd on (a plain model(**inputs))
        # hands over features that require grad, which numpy conversions and out= kernels refuse.
        with torch.no_grad():
            kept = self._select(_detached(tokens), budget)
        if kept.count != budget:
            raise AssertionError(f"{self.name} returned {kept.count} tokens for budget {budget}")
        check_picks(self.name, kept.indices, tokens.batch, tokens.num_tokens)
        if budget == tokens.num_tokens:  # every token kept: no tie could change the selection
            kept.degenerate = None
        return kept

    @classmethod
    def label(cls) -> str:
        return cls.display_name or cls.name

    def selection_flops(self, work: SelectionWork) -> int | None:
        """Estimated FLOPs of one ``select`` call on ``work`` (scope_eval/cost/flops.py conventions), or None
        when the method gives no estimate. Each method prices its own algorithm; the bench adds it up."""
        return None

    def check_fits(self, budget: int) -> None:
        """Raise PruningError (naming the fix) if this method's options cannot work with ``budget``.

        Called with a validated budget by ``select`` and by PruningPlan.build (scope_eval.pruning.plan), so a bad combination fails
        before a model is loaded. Default: every budget fits.
        """

    def check_policy(self, budget_policy: str) -> None:
        """Raise PruningError (naming the fix) if an option of this method has no meaning under ``budget_policy``
        (PruningPlan.build calls it), so that an option is never ignored without a word. Default: none."""

    def for_crops(self, budget: int, num_crops: int) -> tuple["PruningMethod", int]:
        """(method, budget per crop) for a budget split over an image's crops (LLaVA-NeXT, per_crop policy).

        Default floor(budget / num_crops) each, so num_crops * floor(budget / num_crops) tokens reach the
        LM. A method may override it to reproduce its authors' split (visionzip ``crop_split='official'``).
        """
        return self, budget // num_crops

    def _select(self, tokens: VisualTokens, budget: int) -> KeptTokens:  # pragma: no cover - abstract
        raise NotImplementedError


def _detached(tokens: VisualTokens) -> VisualTokens:
    """``tokens`` with its tensors cut from the autograd graph (other fields carried over as they are)."""
    return replace(
        tokens,
        features=tokens.features.detach(),
        saliency=None if tokens.saliency is None else tokens.saliency.detach(),
        keys=None if tokens.keys is None else tokens.keys.detach(),
    )
