"""The contract of methods that prune INSIDE the language model (``stage = "llm"``: FastV, PDrop, DART, SparseVLM).

Such a method never sees a model either. Before decoder layer ``l`` of its schedule runs (0-based: layers
0..l-1 have processed every token), the adapter (scope_eval.adapters.llm_stage) hands it ``LlmTokens``:
the sequence entering layer l, where its visual tokens are, and callables that compute attention, keys
and the final norm from the model's weights. The method returns which visual tokens stay; from layer l on
the sequence, positions, mask and KV cache hold only those (earlier layers keep every token cached).

Budget: ``budget_unit="layer_average"`` (default) reads K as the visual tokens averaged over ALL decoder
layers, (sum over layers of the visual tokens that layer processes) / layers: the same language-model
work as a pre-LLM method keeping K tokens, and what the FastV/PDrop/SparseVLM rows "at 64" of the
VisionZip and SCOPE tables mean. ``budget_unit="after_layer"`` reads K as the visual tokens the layers
from the (first) drop on see, averaged over those layers (for a one-drop method: kept after the drop).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch

from .base import KeptTokens, PruningError, PruningMethod, VisualTokens
from .cost import DropWork

BUDGET_UNITS = ("layer_average", "after_layer")


@dataclass
class LlmTokens:
    """What an in-LLM method sees before its drop layer, for B sequences of L tokens.

    hidden:     [B, L, D] the hidden states entering the drop layer (output of the layer before).
    visual:     [B, n] positions in this sequence of the visual tokens still present, ascending.
    attention:  (which, query positions [B, q]) -> [B, H, q, L] float32 attention probabilities of those
                queries over the whole sequence (causal, softmax over the keys), recomputed from q/k
                projections with RoPE at the tokens' current positions (the original ones, or 0..L-1 after
                a drop when the method ``renumbers_positions``). which="before": what the layer
                before the drop computed (its own norm and projections, on its input); which="at": the drop
                layer's norm and projections applied to ``hidden``.
    keys:       (which) -> [B, L, H*d] keys after RoPE of that layer, heads side by side (model dtype).
    final_norm: the model's final norm (the one applied before the LM head).
    inputs:     [B, L0, D] the sequence entering decoder layer 0 (the LM input embeddings, nothing dropped).
    input_visual: [B, N] positions of the visual tokens in ``inputs``.
    """

    hidden: torch.Tensor
    visual: torch.Tensor
    attention: Callable[[str, torch.Tensor], torch.Tensor]
    keys: Callable[[str], torch.Tensor]
    final_norm: Callable[[torch.Tensor], torch.Tensor]
    inputs: torch.Tensor | None = None
    input_visual: torch.Tensor | None = None

    @property
    def last_query(self) -> torch.Tensor:
        """[B, 1] position of the last token (the last prompt token in a prefill)."""
        batch, length = self.hidden.shape[:2]
        return torch.full((batch, 1), length - 1, dtype=torch.long, device=self.hidden.device)


@dataclass
class Recycled:
    """What ``choose`` returns when a method also recycles dropped tokens (SparseVLM).

    kept:   [B, k] ascending indices into ``tokens.visual`` of the visual tokens that stay.
    merged: [B, c, D] new hidden states (model dtype), inserted right after the last kept visual token
            and counted as visual tokens from then on (a later drop may keep or drop them). They take
            the original position of that last kept visual token. The schedule's count is k + c.
    """

    kept: torch.Tensor
    merged: torch.Tensor


@dataclass(frozen=True)
class LlmSchedule:
    """Visual tokens per decoder layer: ``num_visual`` before ``layers[0]``, then ``keep[j]`` from ``layers[j]``."""

    layers: tuple[int, ...]
    keep: tuple[int, ...]
    num_visual: int
    num_layers: int

    def per_layer(self) -> list[int]:
        counts, current = [], self.num_visual
        for layer in range(self.num_layers):
            if layer in self.layers:
                current = self.keep[self.layers.index(layer)]
            counts.append(current)
        return counts

    def layer_average(self) -> float:
        return sum(self.per_layer()) / self.num_layers

    def after_layer(self) -> float:
        """Mean over the layers from the first drop on."""
        later = self.per_layer()[self.layers[0]:]
        return sum(later) / len(later)


def check_layers(layers: tuple[int, ...], num_layers: int | None = None, option: str = "layer") -> None:
    """Drop layers must be increasing, >= 1 (layer 0 needs the attention of a layer before it) and < depth."""
    if not layers or any(isinstance(x, bool) or not isinstance(x, int) for x in layers):
        raise PruningError(f"{option} must be whole decoder-layer indices (0-based), got {layers!r}")
    if list(layers) != sorted(set(layers)):
        raise PruningError(f"{option} must be strictly increasing, got {list(layers)}")
    if layers[0] < 1:
        raise PruningError(f"{option} {layers[0]}: tokens can be dropped before layer 1 at the earliest; use {option} >= 1")
    if num_layers is not None and layers[-1] >= num_layers:
        raise PruningError(
            f"{option} {layers[-1]} is beyond this language model's {num_layers} decoder layers (0..{num_layers - 1}); "
            f"pass {option} <= {num_layers - 1}"
        )


def one_drop_keep(budget: int, unit: str, layer: int, num_visual: int, num_layers: int) -> int:
    """Tokens kept from ``layer`` on so that the budget holds: for layer_average the largest R with
    (layer*N + (layers-layer)*R) / layers <= K, i.e. floor((layers*K - layer*N) / (layers-layer))."""
    if unit == "after_layer":
        return min(budget, num_visual)
    keep = (num_layers * budget - layer * num_visual) // (num_layers - layer)
    if keep < 1:
        least = math.ceil((layer * num_visual + (num_layers - layer)) / num_layers)
        raise PruningError(
            f"budget {budget} (budget_unit=layer_average) is below what layers 0..{layer - 1} already use: with "
            f"{num_visual} visual tokens there, the average over {num_layers} layers is at least {least}; "
            f"raise the budget to >= {least}, drop at an earlier layer, or pass budget_unit=after_layer"
        )
    return min(keep, num_visual)


@dataclass
class LlmStageMethod(PruningMethod):
    """Base of in-LLM methods: a schedule of drop layers and counts, and ``choose`` per drop."""

    stage: ClassVar[str] = "llm"
    budget_unit: str = "layer_average"  # K = visual tokens averaged over all layers, or "after_layer": after the drop

    def __post_init__(self) -> None:
        if self.budget_unit not in BUDGET_UNITS:
            raise PruningError(f"budget_unit must be one of {', '.join(BUDGET_UNITS)}, got {self.budget_unit!r}")
        check_layers(self.drop_layers(), option=self.layers_option)

    layers_option: ClassVar[str] = "layer"  # the option naming the drop layer(s), for messages

    def drop_layers(self) -> tuple[int, ...]:  # pragma: no cover - abstract
        raise NotImplementedError

    def renumbers_positions(self) -> bool:
        """True: after each drop the sequence's positions become 0..L'-1 (RoPE of later layers, later stages'
        scores and decoding use them; PyramidDrop's official code). False: every token keeps its original
        position (FastV's and DART's official code)."""
        return False

    def keep_counts(self, budget: int, num_visual: int, num_layers: int) -> tuple[int, ...]:  # pragma: no cover
        raise NotImplementedError

    def scoring_flops(self, work: DropWork) -> int | None:
        """Estimated FLOPs of scoring one drop (scope_eval/cost/flops.py conventions), or None."""
        return None

    def choose(self, tokens: LlmTokens, keep: int, stage: int) -> torch.Tensor | Recycled:  # pragma: no cover
        """[B, keep] ascending indices into ``tokens.visual`` of the visual tokens that stay (or ``Recycled``)."""
        raise NotImplementedError

    def schedule(self, budget: int, num_visual: int, num_layers: int) -> LlmSchedule:
        """The per-layer plan for a sequence with ``num_visual`` visual tokens; PruningError naming the fix."""
        layers = self.drop_layers()
        check_layers(layers, num_layers, self.layers_option)
        keep = tuple(self.keep_counts(budget, num_visual, num_layers))
        if any(k < 1 for k in keep) or list(keep) != sorted(keep, reverse=True) or keep[0] > num_visual:
            raise PruningError(
                f"{self.name}: budget {budget} gives the schedule {list(keep)} at layers {list(layers)}, which cannot "
                f"keep at least 1 visual token per stage; raise the budget or use earlier {self.layers_option}"
            )
        return LlmSchedule(layers, keep, num_visual, num_layers)

    def _select(self, tokens: VisualTokens, budget: int) -> KeptTokens:
        raise PruningError(
            f"method '{self.name}' prunes inside the language model (stage 'llm'); apply it with prune(model, "
            f"'{self.name}', budget) rather than calling select() on vision tokens"
        )


def last_query_scoring_flops(work: DropWork) -> int:
    """One query projection (2*d^2), the keys of the T tokens entering (2*T*d*d_kv) and the scores of one
    query over them (2*T*d); the norm and RoPE are not counted. FastV and PDrop score this way."""
    return 2 * work.hidden**2 + 2 * work.tokens * work.hidden * work.kv_width + 2 * work.tokens * work.hidden


def top_k_ascending(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """[B, keep] indices of the largest scores (equal scores: lower index first), sorted ascending.

    Ranked in the scores' own dtype, as the official codes rank (a float32 copy would split half-precision ties)."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    return order[:, :keep].sort(dim=-1).values


__all__ = ["BUDGET_UNITS", "LlmSchedule", "LlmStageMethod", "LlmTokens", "Recycled", "check_layers", "last_query_scoring_flops", "one_drop_keep", "top_k_ascending"]
