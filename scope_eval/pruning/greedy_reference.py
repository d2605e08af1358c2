"""Two slow versions of SCOPE's greedy, kept as yardsticks (not used by the methods).

``reference_scope_select``: float64 throughout, one image at a time, written straight from the formula of
docs/semantics.md#scope; the tests compare the fast implementations with it. Float64 rounding (about 1e-16)
would split scores that are equal in exact arithmetic (two tokens that only cover each other are
common), so scores within float64 rounding of the best count as ties, lowest index first, as the formula
says: a gain sums N terms of magnitude <= 1, so it is off by far less than GAIN_ROUNDING * N, and a score
by that times the largest weight ("multi") or by that alone ("add").
``naive_scope_select``: the straightforward per-step expression in float32, in the style of the paper's released code
(fresh masked copies of the N x N matrix at every step); ``scope-eval bench-selection`` times
the fast implementations against it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import check_budget
from .greedy import scope_weights
from .similarity import unit_rows

GAIN_ROUNDING = 1e-14


def reference_scope_select(
    features: torch.Tensor, saliency: torch.Tensor | None, k: int, alpha: float = 1.0, combine: str = "multi"
) -> torch.Tensor:
    """LongTensor [B, k], ascending: the plain greedy in float64."""
    weights = scope_weights(features, saliency, alpha, combine)
    k = check_budget(k, features.shape[1], what="k")
    picks = [_reference_one_image(features[b], weights[b], k, combine) for b in range(features.shape[0])]
    return torch.tensor(picks, dtype=torch.long, device=features.device).view(-1, k).sort(dim=-1).values


def _reference_one_image(features: torch.Tensor, weights: torch.Tensor, k: int, combine: str) -> list[int]:
    unit, _ = unit_rows(features.to(torch.float64))
    sim = unit @ unit.T  # sim[i, j] = S_ij
    coverage = torch.zeros(sim.shape[0], dtype=torch.float64, device=sim.device)  # c_i(empty) = 0
    tie_tolerance = GAIN_ROUNDING * sim.shape[0] * (float(weights.max()) if combine == "multi" else 1.0)
    selected: list[int] = []
    for _ in range(k):
        gains = (sim - coverage[:, None]).clamp(min=0).sum(dim=0)  # g_j = sum_i max(0, S_ij - c_i)
        scores = gains * weights if combine == "multi" else gains + weights
        scores[selected] = float("-inf")
        tied = scores >= scores.max() - tie_tolerance
        best = int(tied.nonzero()[0])  # the lowest index among the (numerically) best
        selected.append(best)
        coverage = torch.maximum(coverage, sim[:, best])
    return selected


def naive_scope_select(
    features: torch.Tensor, saliency: torch.Tensor | None, k: int, alpha: float = 1.0, combine: str = "multi"
) -> torch.Tensor:
    """LongTensor [B, k], ascending: batched float32, fresh N x N temporaries at every step."""
    weights = scope_weights(features, saliency, alpha, combine).to(torch.float32)
    k = check_budget(k, features.shape[1], what="k")
    unit = F.normalize(features.float(), dim=-1)
    sim = unit @ unit.transpose(1, 2)  # sim[b, i, j] = S_ij, the plain matmul
    batch, n, _ = sim.shape
    chosen = torch.zeros(batch, n, dtype=torch.bool, device=sim.device)
    coverage = torch.zeros(batch, n, dtype=sim.dtype, device=sim.device)
    rows = torch.arange(batch, device=sim.device)
    picks = []
    for _ in range(k):
        candidates = sim.masked_fill(chosen[:, None, :], 0.0)
        gains = (candidates - coverage[:, :, None]).clamp(min=0).sum(dim=1)
        scores = (gains * weights if combine == "multi" else gains + weights).masked_fill(chosen, float("-inf"))
        best = scores.argmax(dim=-1)
        picks.append(best)
        chosen[rows, best] = True
        coverage = torch.maximum(coverage, sim[rows, :, best])
    return torch.stack(picks, dim=1).sort(dim=-1).values
