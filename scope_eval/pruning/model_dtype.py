"""``selection_dtype``: select in float32 (ours, the default) or in the model's own dtype (the official code).

The official SCOPE, DivPrune and VisionZip code compute their similarities, gains and merges in the
vision tower's dtype (float16 on the GPU); ours computes in float32 at least, with exact sums, so that
mathematically tied scores stay tied. ``selection_dtype="model"`` reproduces the official arithmetic:
everything in the dtype of the features the host passes (the tower's output), no symmetrisation, no
exact accumulation. On half-precision features the picks can then differ from float32's (see
docs/official_differences.md for the measured overlap).
"""

from __future__ import annotations

import torch

from .base import PruningError
from .similarity import ZERO_NORM

SELECTION_DTYPES = ("float32", "model")


def check_selection_dtype(method: str, value: object) -> str:
    if value not in SELECTION_DTYPES:
        raise PruningError(
            f"{method}: selection_dtype must be one of {', '.join(SELECTION_DTYPES)}, got {value!r}; "
            "'model' computes in the features' dtype as the official code does, 'float32' is ours"
        )
    return value  # type: ignore[return-value]


def unit_rows_in_dtype(x: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` over their norm, in ``x``'s dtype (zero rows stay zero instead of becoming NaN)."""
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(ZERO_NORM)


def cosine_in_dtype(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """[B, N, M] cosine similarity of the rows of ``x`` and ``y`` (default ``x``), computed in ``x``'s dtype."""
    unit_x = unit_rows_in_dtype(x)
    unit_y = unit_x if y is None else unit_rows_in_dtype(y.to(x.dtype))
    with torch.autocast(device_type=x.device.type, enabled=False):
        return unit_x @ unit_y.transpose(-1, -2)


def scope_order_in_dtype(
    features: torch.Tensor, saliency: torch.Tensor | None, k: int, alpha: float, combine: str
) -> torch.Tensor:
    """[B, k] SCOPE's greedy picks (first pick first), every quantity in the features' dtype.

    The same rule as scope_eval.pruning.greedy (gain_j = sum_i max(0, S_ij - c_i), times or plus a_j**alpha,
    argmax), written as the official loop computes it: the gains recomputed from the similarity matrix
    at every step and summed in the model's dtype.
    """
    batch, n, _ = features.shape
    dtype, device = features.dtype, features.device
    similarity = cosine_in_dtype(features)
    if alpha == 0 or saliency is None:
        weights = torch.ones(batch, n, dtype=dtype, device=device)
    else:
        weights = saliency.to(dtype) ** alpha
    covered = torch.zeros(batch, n, 1, dtype=dtype, device=device)
    picked = torch.zeros(batch, n, dtype=torch.bool, device=device)
    rows = torch.arange(batch, device=device)
    order = torch.empty(batch, k, dtype=torch.long, device=device)
    for step in range(k):
        gains = (similarity.masked_fill(picked[:, None, :], 0) - covered).clamp_min(0).sum(dim=1)
        scores = gains * weights if combine == "multi" else gains + weights
        best = scores.masked_fill(picked, float("-inf")).argmax(dim=-1)
        order[:, step] = best
        picked[rows, best] = True
        covered = torch.maximum(covered, similarity[rows, best][:, :, None])
    return order
