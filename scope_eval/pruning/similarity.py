"""Tensor helpers shared by the methods: working precision, cosine similarity, ranking with fixed ties.

Zero vectors: a row whose norm is below ZERO_NORM (an all-zero feature vector in practice) is treated
as zero: cosine similarity 0 with every token, itself included. It covers nothing and is covered by
nothing, and no NaN can appear.

Similarities are computed with autocast switched off: a host may call the methods under autocast, and
half-precision similarities would break the float32 promise. The similarity matrix is made exactly what
cosine similarity is in exact arithmetic where a float32 matmul is not: symmetric (the matmul's two triangles can differ in the last bit) with an exact unit diagonal.
That keeps mathematically tied scores tied (e.g. two tokens that only cover each other), so the
lowest-index tie rule decides them rather than rounding noise. Entries of *different* rows computed from
identical feature rows can still differ in the last bit (the matmul's blocking); exact duplicates are
therefore only guaranteed to tie when the products are exact, as in the tests.
"""

from __future__ import annotations

import torch

ZERO_NORM = 1e-12
# Rows per block of the CPU Gram product; measured fastest for D = 1024 at N = 576 and 2880.
GRAM_BLOCK = 144


def working_precision(x: torch.Tensor) -> torch.Tensor:
    """``x`` as float32 at least: half-precision inputs (fp16/bf16) are upcast, float64 stays float64."""
    if x.dtype == torch.float64:
        return x
    return x.float()


def unit_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``x`` scaled to unit length in at least float32, and a [.., N] mask of the non-zero rows."""
    x = working_precision(x)
    norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    nonzero = norms >= ZERO_NORM
    scale = nonzero / norms.clamp_min(ZERO_NORM)  # 0 for zero rows: one multiply over x instead of a where
    return x * scale, nonzero.squeeze(-1)


def cosine_similarity(x: torch.Tensor) -> torch.Tensor:
    """[B, N, N] cosine similarity of the rows of ``x`` [B, N, D] in at least float32 (see module doc)."""
    unit, nonzero = unit_rows(x)
    with torch.autocast(device_type=x.device.type, enabled=False):
        sim = _symmetric_gram(unit)
    sim.diagonal(dim1=-2, dim2=-1).copy_(nonzero)
    return sim


def _symmetric_gram(unit: torch.Tensor) -> torch.Tensor:
    """unit @ unit^T, bitwise symmetric. On the CPU only the upper block triangle is multiplied (about 55%
    of the flops at N = 576 and 2880) and mirrored; diagonal blocks take max(block, block^T)."""
    n = unit.shape[-2]
    if unit.device.type != "cpu" or n <= GRAM_BLOCK:
        sim = unit @ unit.transpose(-1, -2)
        return torch.maximum(sim, sim.transpose(-1, -2))  # max is commutative: bitwise symmetric
    sim = unit.new_empty(*unit.shape[:-2], n, n)
    for start in range(0, n, GRAM_BLOCK):
        stop = min(start + GRAM_BLOCK, n)
        rows = unit[..., start:stop, :] @ unit[..., start:, :].transpose(-1, -2)  # [.., block, n - start]
        sim[..., start:, start:stop] = rows.transpose(-1, -2)
        sim[..., start:stop, start:] = rows
        diagonal = rows[..., : stop - start]
        sim[..., start:stop, start:stop] = torch.maximum(diagonal, diagonal.transpose(-1, -2))
    return sim


def cross_cosine_similarity(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[B, N, M] cosine similarity between the rows of ``x`` [B, N, D] and ``y`` [B, M, D]."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        return unit_rows(x)[0] @ unit_rows(y)[0].transpose(-1, -2)


def top_k_lowest_index(values: torch.Tensor, k: int) -> torch.Tensor:
    """[B, k] indices of the k largest entries of ``values`` [B, N], equal values taken lowest index first.

    ``torch.topk`` leaves the order of equal values unspecified; a stable descending sort does not.
    """
    return torch.sort(values, dim=-1, descending=True, stable=True).indices[:, :k]
