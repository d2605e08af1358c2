"""``sparsevlm``: SparseVLM (Zhang et al., 2024), text-guided pruning with token recycling inside the language model.

The version behind the published numbers that the VisionZip and SCOPE tables copy: Gumpest/SparseVLMs at
its October 2024 code (commit b72c5d6, "v1"). Its later versions (v1.5 with fixed count lists, v2.0 /
SparseVLM+) are other methods under the same name and are not offered here.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import torch

from ..base import PruningError
from ..cost import DropWork
from ..llm_stage import LlmSchedule, LlmStageMethod, LlmTokens, Recycled, top_k_ascending
from ..registry import register

DENSITY_NOISE = 1e-6  # the official clustering adds uniform noise of this size to the densities to split ties


@register
@dataclass
class SparseVlmMethod(LlmStageMethod):
    """Drops visual tokens before each decoder layer of ``layers`` (0-based), rated by the text, recycling some.

    Raters (once per prompt, on the language model's input embeddings): the text tokens after the image
    whose column of softmax_text(V @ T^T), averaged over the visual tokens V, exceeds that row's mean
    (all of them when none does, e.g. a single text token).
    At a drop before layer l: the attention layer l-1 computes (its own norm and q/k, RoPE at the original
    positions), averaged over heads, from the raters' rows to the visual columns, averaged over the raters,
    scores the visual tokens; the top k stay. Recycling: of the dropped tokens, the int(0.3 * dropped) + 1
    with the highest scores are clustered (DPC-kNN on their hidden states entering layer l) into
    int(that / 10) + 1 clusters; each cluster's mean is inserted after the kept visual tokens and counts
    as a visual token from then on (a later drop may keep or drop it again).

    Counts: the official v1 keeps k = min(int(rank * scale + bias), n - 1) at each stage, with rank the
    matrix rank of the rater-to-visual attention (in practice the number of raters, the same at every
    stage). Here the same k holds at every stage, min(k, n - 1) of the n present, but k is the largest
    whose realised schedule (recycled tokens included) meets the budget unit, as for FastV and PDrop;
    see docs/semantics.md#sparsevlm and docs/official_differences_llm.md.

    Default ``layers`` (3, 7, 16, 20) are the official pruning layers [2, 6, 15, 19] + 1: the official
    code prunes the OUTPUT of layer 2 with layer 2's attention, i.e. layers from 3 on see the kept tokens.
    The clustering's tie-breaking noise is drawn from a generator seeded with the CRC-32 of the clustered
    hidden states (the official code draws from the global RNG), so a run is deterministic.
    """

    name = "sparsevlm"
    display_name = "SparseVLM"
    report_rank = 100
    layers_option = "layers"
    layers: tuple[int, ...] = (3, 7, 16, 20)
    recycle: bool = True
    recycle_ratio: float = 0.3
    cluster_divisor: int = 10

    def __post_init__(self) -> None:
        self.layers = _layer_tuple(self.layers)
        if not isinstance(self.recycle, bool):
            raise PruningError(f"sparsevlm: recycle must be true or false, got {self.recycle!r}")
        if isinstance(self.recycle_ratio, bool) or not isinstance(self.recycle_ratio, (int, float)) or not 0 <= self.recycle_ratio < 1:
            raise PruningError(f"sparsevlm: recycle_ratio must be a number in [0, 1) (official 0.3), got {self.recycle_ratio!r}")
        if isinstance(self.cluster_divisor, bool) or not isinstance(self.cluster_divisor, int) or self.cluster_divisor < 2:
            raise PruningError(f"sparsevlm: cluster_divisor must be a whole number >= 2 (official 10), got {self.cluster_divisor!r}")
        super().__post_init__()

    def drop_layers(self) -> tuple[int, ...]:
        return self.layers

    # -- counts -------------------------------------------------------------------------------------------
    def stage_counts(self, kept: int, present: int) -> tuple[int, int]:
        """(selected, merged) at one stage where ``present`` visual tokens are scored and the rule keeps ``kept``."""
        selected = min(kept, present - 1)
        if not self.recycle:
            return selected, 0
        recycled = int((present - selected) * self.recycle_ratio) + 1
        return selected, int(recycled / self.cluster_divisor) + 1

    def totals(self, kept: int, num_visual: int) -> tuple[int, ...]:
        """Visual tokens after each drop (recycled ones included) when every stage keeps ``kept``."""
        counts, present = [], num_visual
        for _ in self.layers:
            selected, merged = self.stage_counts(kept, present)
            present = selected + merged
            counts.append(present)
        return tuple(counts)

    def _measure(self, kept: int, num_visual: int, num_layers: int) -> float:
        schedule = LlmSchedule(self.layers, self.totals(kept, num_visual), num_visual, num_layers)
        return schedule.after_layer() if self.budget_unit == "after_layer" else schedule.layer_average()

    def keep_counts(self, budget: int, num_visual: int, num_layers: int) -> tuple[int, ...]:
        if num_visual < 2:
            raise PruningError(f"sparsevlm needs at least 2 visual tokens to drop any, got {num_visual}")
        if self._measure(1, num_visual, num_layers) > budget:
            least = self._measure(1, num_visual, num_layers)
            raise PruningError(
                f"sparsevlm: budget {budget} (budget_unit={self.budget_unit}) cannot be reached with layers "
                f"{list(self.layers)} on {num_layers} layers and {num_visual} visual tokens (keeping 1 token per stage, "
                f"with its recycled ones, already averages {least:.1f}); raise the budget, use earlier layers, or "
                "budget_unit=after_layer"
            )
        low, high = 1, num_visual - 1  # the measure never decreases with k: bisect for the largest that fits
        while low < high:
            middle = (low + high + 1) // 2
            if self._measure(middle, num_visual, num_layers) <= budget:
                low = middle
            else:
                high = middle - 1
        return self.totals(low, num_visual)

    def _split(self, keep: int, present: int) -> tuple[int, int]:
        """The (selected, merged) of a stage whose schedule count is ``keep`` with ``present`` tokens scored."""
        for kept in range(min(keep, present - 1), -1, -1):
            selected, merged = self.stage_counts(kept, present)
            if selected + merged == keep:
                return selected, merged
        raise AssertionError(f"sparsevlm: no stage keeps {keep} of {present} visual tokens")  # schedule() made it

    # -- selection ------------------------------------------------------------------------------------------
    def scoring_flops(self, work: DropWork) -> int:
        """Upper bound: every text token a rater (queries 2*Q*d^2, keys 2*T*d*d_kv, scores 2*Q*T*d, and the
        raters' V @ T^T on the input embeddings 2*N*Q*d), plus the clustering's n x n distances (3*n^2*d) of
        n = 0.3 * dropped + 1 tokens."""
        text = max(work.tokens - work.visual, 1)
        recycled = int((work.visual - work.kept) * self.recycle_ratio) + 1 if self.recycle else 0
        return (
            2 * text * work.hidden**2 + 2 * work.tokens * work.hidden * work.kv_width + 2 * text * work.tokens * work.hidden
            + 2 * work.visual * text * work.hidden + 3 * recycled**2 * work.hidden
        )

    def raters(self, tokens: LlmTokens) -> list[torch.Tensor]:
        """Per row, the positions in the CURRENT sequence of the rater text tokens (chosen on the input embeddings)."""
        if tokens.inputs is None or tokens.input_visual is None:
            raise PruningError("sparsevlm needs the language model's input embeddings (LlmTokens.inputs); this host does not pass them")
        positions = []
        for row in range(tokens.hidden.shape[0]):
            visual = tokens.input_visual[row]
            text = tokens.inputs[row, int(visual[-1]) + 1:]
            if text.shape[0] == 0:
                raise PruningError("sparsevlm rates the image with the text after it, and this prompt has none after the image")
            relevance = torch.softmax(tokens.inputs[row, visual] @ text.transpose(0, 1), dim=-1).mean(dim=0)  # [T]
            chosen = (relevance > relevance.mean()).nonzero().squeeze(1)
            if chosen.numel() == 0:  # all equal (one text token, say): the official code rates with none (NaN scores)
                chosen = torch.arange(text.shape[0], device=text.device)
            start = int(tokens.visual[row, -1]) + 1
            if tokens.hidden.shape[1] - start != text.shape[0]:
                raise AssertionError("sparsevlm: the text after the image changed length between the input and this layer")
            positions.append(start + chosen)
        return positions

    def choose(self, tokens: LlmTokens, keep: int, stage: int) -> torch.Tensor | Recycled:
        batch, length = tokens.hidden.shape[:2]
        present = tokens.visual.shape[1]
        selected, merged_count = self._split(keep, present)
        raters = self.raters(tokens)
        first_text = int(tokens.visual[:, -1].min()) + 1
        queries = torch.arange(first_text, length, device=tokens.hidden.device).expand(batch, -1)
        attention = tokens.attention("before", queries).mean(dim=1)  # [B, Q, L], heads averaged
        scores = torch.stack([
            attention[row, raters[row] - first_text][:, tokens.visual[row]].mean(dim=0) for row in range(batch)
        ])  # [B, n]: attention the raters pay each visual token
        kept = top_k_ascending(scores, selected)
        if merged_count == 0:
            return kept
        merged = torch.stack([self._recycle(tokens, row, kept[row], scores[row], merged_count) for row in range(batch)])
        return Recycled(kept, merged)

    def _recycle(self, tokens: LlmTokens, row: int, kept: torch.Tensor, scores: torch.Tensor, clusters: int) -> torch.Tensor:
        dropped_mask = torch.ones(scores.shape[0], dtype=torch.bool, device=scores.device)
        dropped_mask[kept] = False
        dropped = dropped_mask.nonzero().squeeze(1)  # ascending, as the official policy==0 positions
        recycled = int(dropped.shape[0] * self.recycle_ratio) + 1
        best = torch.sort(scores[dropped], descending=True, stable=True).indices[:recycled]  # the official topk order
        states = tokens.hidden[row, tokens.visual[row, dropped[best]]]  # [n, D] entering the drop layer
        return cluster_and_merge(states, clusters)


def cluster_and_merge(states: torch.Tensor, clusters: int) -> torch.Tensor:
    """[clusters, D] means of ``states`` [n, D] grouped by density-peak clustering with k-nearest neighbours.

    Density of a token: exp(-mean squared distance to its ``clusters`` nearest tokens, itself included),
    distances divided by sqrt(D), plus noise in [0, 1e-6) to split ties. Its delta: the distance to the
    nearest token of higher density (the largest distance of all for the densest). Centres: the top
    ``clusters`` of delta * density; every token joins its nearest centre (a centre itself); output in
    centre order. Computed in float32, the means cast back to the states' dtype. The noise comes from a
    generator seeded with the CRC-32 of the states' float32 bytes: the same input, the same clusters.
    """
    values = states.float()
    count = values.shape[0]
    # exact differences (not the ||x||^2 + ||y||^2 - 2xy shortcut, which leaves a token a nonzero distance to itself)
    distance = torch.cdist(values, values, compute_mode="donot_use_mm_for_euclid_dist") / math.sqrt(values.shape[1])
    nearest = torch.topk(distance, k=clusters, dim=-1, largest=False).values
    density = torch.exp(-(nearest**2).mean(dim=-1))
    seed = zlib.crc32(values.detach().cpu().contiguous().numpy().tobytes())
    noise = torch.rand(count, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    density = density + noise.to(density.device) * DENSITY_NOISE
    higher = density.unsqueeze(0) > density.unsqueeze(1)  # [i, j]: j is denser than i
    delta = torch.where(higher, distance, distance.max()).min(dim=-1).values
    centres = torch.sort(delta * density, descending=True, stable=True).indices[:clusters]
    assignment = distance[centres].argmin(dim=0)  # nearest centre, the first on equal distances
    assignment[centres] = torch.arange(clusters, device=values.device)
    sums = torch.zeros(clusters, values.shape[1], device=values.device).index_add_(0, assignment, values)
    sizes = torch.bincount(assignment, minlength=clusters).unsqueeze(1)
    return (sums / sizes).to(states.dtype)


def _layer_tuple(value) -> tuple[int, ...]:
    """Drop layers from a tuple, a YAML list, one int, or model_args text such as ``3-7-16-20``."""
    if isinstance(value, str):
        try:
            return tuple(int(part) for part in value.replace(";", "-").split("-") if part.strip())
        except ValueError:
            raise PruningError(f"sparsevlm: layers must be decoder-layer indices such as 3-7-16-20, got {value!r}") from None
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    return tuple(value) if isinstance(value, list) else value
