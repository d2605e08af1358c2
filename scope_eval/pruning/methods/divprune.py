"""``divprune``: DivPrune's max-min diversity selection."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import KeptTokens, PruningError, PruningMethod, SelectionWork, VisualTokens, all_finite
from ..registry import register
from ..model_dtype import check_selection_dtype, cosine_in_dtype
from ..similarity import cosine_similarity

SPACES = ("projected", "features")
# Largest spread of an image's pairwise cosine distances that still counts as "all equal" (float32
# rounding of identical rows): then every max-min pick is a tie and the lowest index wins.
TIED_DISTANCE_SPREAD = 1e-5


@register
@dataclass
class DivPruneMethod(PruningMethod):
    """DivPrune (Alvar et al., CVPR 2025, https://arxiv.org/abs/2503.02175): max-min diversity.

    On the cosine distance d = 1 - S between tokens: first the token whose nearest neighbour is farthest
    (largest min_{j != i} d_ij), then repeatedly the token whose distance to the nearest already kept one
    is largest; ties lowest index. ``on="projected"`` (default, as the SCOPE paper applies it) works on the
    multimodal projector's outputs, ``"features"`` on the vision features. A zero vector has distance 1
    to everything (see scope_eval.pruning.similarity). Budget: visual tokens kept per image/crop.
    ``selection_dtype="model"`` computes the distances in the tokens' dtype as the official code does
    (scope_eval.pruning.model_dtype); default float32.
    """

    name = "divprune"
    display_name = "DivPrune"
    report_rank = 50

    on: str = "projected"  # diversity measured after the projector ("projected") or on the tower's "features"
    selection_dtype: str = "float32"  # "model": compute in the features' dtype, as the official code does

    def __post_init__(self) -> None:
        self.selection_dtype = check_selection_dtype(self.name, self.selection_dtype)
        if self.on not in SPACES:
            raise PruningError(f"divprune: on must be one of {', '.join(SPACES)}, got {self.on!r}")

    def selection_flops(self, work: SelectionWork) -> int:
        """on='projected' (default): projection of all N tokens, similarity 2*N^2*d in that space, then
        K updates of the N minimum distances (2*K*N); on='features': similarity 2*N^2*D, no projection."""
        if self.on == "projected":
            similarity = work.projector_flops() + 2 * work.tokens**2 * work.text_width
        else:
            similarity = 2 * work.tokens**2 * work.vision_width
        return work.groups * (similarity + 2 * work.keep * work.tokens)

    def _select(self, tokens: VisualTokens, budget: int) -> KeptTokens:
        space = tokens.projected() if self.on == "projected" else tokens.features
        if not all_finite(space):
            raise PruningError("divprune: the projected visual tokens contain NaN or inf; check the projector")
        similarity = cosine_in_dtype(space) if self.selection_dtype == "model" else cosine_similarity(space)
        distance = 1.0 - similarity
        return KeptTokens(
            indices=max_min_diverse(distance, budget).sort(dim=-1).values, degenerate=all_distances_tied(distance)
        )


def all_distances_tied(distance: torch.Tensor) -> torch.Tensor:
    """[B] bool: every off-diagonal distance equal (identical or all-zero tokens): index order decides."""
    diagonal = torch.eye(distance.shape[-1], dtype=torch.bool, device=distance.device)
    largest = distance.masked_fill(diagonal, float("-inf")).amax(dim=(1, 2))
    smallest = distance.masked_fill(diagonal, float("inf")).amin(dim=(1, 2))
    return (largest - smallest).float() <= TIED_DISTANCE_SPREAD


def max_min_diverse(distance: torch.Tensor, k: int) -> torch.Tensor:
    """[B, k] picks in order from a [B, N, N] distance matrix by the max-min rule above."""
    batch, n, _ = distance.shape
    rows = torch.arange(batch, device=distance.device)
    nearest = distance.masked_fill(torch.eye(n, dtype=torch.bool, device=distance.device), float("inf"))
    first = nearest.min(dim=-1).values.argmax(dim=-1)  # argmax: first maximum, i.e. lowest index
    to_kept = distance[rows, first].clone()  # distance of every token to its nearest kept token
    picks = [first]
    for _ in range(k - 1):
        to_kept[rows, picks[-1]] = float("-inf")
        pick = to_kept.argmax(dim=-1)
        picks.append(pick)
        torch.minimum(to_kept, distance[rows, pick], out=to_kept)
    return torch.stack(picks, dim=1)
