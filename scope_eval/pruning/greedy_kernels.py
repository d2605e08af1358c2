"""The two exact implementations of SCOPE's greedy loop, sharing one arithmetic so they agree bit for bit.

Both work on a *quantised* similarity matrix: every entry rounded to a multiple of q = 2**-(51 - ceil(log2 N))
(2**-41 at N = 576, 2**-39 at N = 2880). Rounding only moves entries smaller than about 2**-17 (larger
float32 values already lie on that grid) and by at most q/2, far below float32's own rounding of S near 1
(2**-25). What it buys: every coverage gain

    g_j(T) = sum_i max(0, S_ij - c_i(T)) = sum_i max(S_ij, c_i) - sum_i c_i      (c_i >= 0)

is a sum of N multiples of q, each at most 1 in magnitude, so every partial sum is an integer multiple of q
below 2**52 q: float64 adds them *exactly*, in any order. The full in-place recomputation and the lazy
one-row-at-a-time evaluation, on CPU or GPU, batched or not, therefore produce the same float64 gains,
the same scores and the same picks, ties included (ties go to the lowest index: ``argmax`` returns the
first maximum; the lazy heap orders (-score, index)).

Row j of the similarity matrix is used as column j of S (the candidate's similarities to every token i);
the matrix is symmetric anyway (scope_eval.pruning.similarity).
"""

from __future__ import annotations

import heapq
import math

import numpy as np
import torch

# Most bytes of float64 work buffer the in-place loop allocates at once; larger batches run in chunks.
INPLACE_BUFFER_BYTES = 1 << 30
# How many stale heap entries the lazy loop re-scores in one vectorised numpy call.
LAZY_REFRESH_BATCH = 8


def similarity_quantum(num_tokens: int) -> float:
    """The grid q for N tokens: N / q stays below 2**52, so sums of N entries are exact in float64."""
    return 2.0 ** -(51 - math.ceil(math.log2(max(2, num_tokens))))


def quantise_similarity(similarity: torch.Tensor) -> torch.Tensor:
    """Round a [B, N, N] similarity matrix (in place) to multiples of ``similarity_quantum(N)``."""
    quantum = similarity_quantum(similarity.shape[-1])
    # Scaling by a power of two is exact in floating point, so only round_() changes values.
    return similarity.mul_(1.0 / quantum).round_().mul_(quantum)


def combined_scores(gains, weights, combine: str):
    """SCOPE score from coverage gains and weights a**alpha (torch tensors or numpy arrays alike)."""
    return gains * weights if combine == "multi" else gains + weights


def inplace_order(similarity: torch.Tensor, weights: torch.Tensor, k: int, combine: str) -> torch.Tensor:
    """[B, k] picks in greedy order; each step recomputes every gain inside one preallocated buffer.

    O(k * N^2) work, batched over images, no per-step allocation of N x N temporaries and no host
    synchronisation (argmax and gathers stay on the device), so it suits GPUs and small N.
    """
    batch, n, _ = similarity.shape
    images_per_chunk = max(1, INPLACE_BUFFER_BYTES // (2 * n * n * 8))
    chunks = [
        _inplace_chunk(similarity[start : start + images_per_chunk], weights[start : start + images_per_chunk], k, combine)
        for start in range(0, batch, images_per_chunk)
    ]
    return torch.cat(chunks)


def _inplace_chunk(similarity: torch.Tensor, weights: torch.Tensor, k: int, combine: str) -> torch.Tensor:
    batch, n, _ = similarity.shape
    # float64 copy (exact) so that max and sum run in one dtype; mixed-dtype ops are far slower on CPU.
    sim = similarity.to(torch.float64)
    buffer = torch.empty_like(sim)
    covered = sim.new_zeros(batch, n)
    covered_total = sim.new_zeros(batch, 1)
    picked = torch.zeros(batch, n, dtype=torch.bool, device=sim.device)
    order = torch.empty(batch, k, dtype=torch.long, device=sim.device)
    rows = torch.arange(batch, device=sim.device)
    for step in range(k):
        torch.maximum(sim, covered[:, None, :], out=buffer)
        gains = buffer.sum(dim=-1).sub_(covered_total)
        scores = combined_scores(gains, weights, combine).masked_fill_(picked, float("-inf"))
        pick = scores.argmax(dim=-1)
        order[:, step] = pick
        picked[rows, pick] = True
        torch.maximum(covered, sim[rows, pick], out=covered)
        covered_total = covered.sum(dim=-1, keepdim=True)
    return order


def lazy_order(similarity: torch.Tensor, weights: torch.Tensor, k: int, combine: str) -> torch.Tensor:
    """[B, k] picks in greedy order by exact lazy greedy (Minoux), one image at a time on the CPU.

    Valid because, with a and alpha fixed, every score only falls as the selected set grows (coverage
    gains are submodular; g * w and g + w are monotone in g, and so is their float rounding). A heap of
    (-bound, index) pops the largest bound, lowest index first; a stale bound is re-scored and pushed
    back, and a freshly scored entry on top is the exact greedy pick: every other entry has a smaller
    bound, or an equal bound and a larger index, so no stale bound equal to the best score can hide a
    lower-index tie. Needs the similarities on the host (one copy from a GPU).
    """
    device = similarity.device
    sim = similarity.detach().to("cpu").numpy()
    weights = weights.to("cpu").numpy()
    orders = [_lazy_one_image(sim[b], weights[b], k, combine) for b in range(sim.shape[0])]
    return torch.tensor(orders, dtype=torch.long, device=device).view(sim.shape[0], k)


def _lazy_one_image(sim: np.ndarray, weights: np.ndarray, k: int, combine: str) -> list[int]:
    initial_gains = np.maximum(sim, 0).sum(axis=1, dtype=np.float64)  # exact, as in the module doc
    heap = [(-score, j) for j, score in enumerate(combined_scores(initial_gains, weights, combine).tolist())]
    heapq.heapify(heap)
    scored_at = [0] * len(heap)  # the step at which each heap entry was last scored exactly
    covered = np.zeros(sim.shape[1], dtype=sim.dtype)
    covered_total = 0.0
    order: list[int] = []
    for step in range(k):
        while scored_at[heap[0][1]] != step:
            stale: list[int] = []
            while heap and len(stale) < LAZY_REFRESH_BATCH and scored_at[heap[0][1]] != step:
                stale.append(heapq.heappop(heap)[1])
            gains = np.maximum(sim[stale], covered).sum(axis=1, dtype=np.float64) - covered_total
            for j, score in zip(stale, combined_scores(gains, weights[stale], combine).tolist()):
                heapq.heappush(heap, (-score, j))
                scored_at[j] = step
        pick = heapq.heappop(heap)[1]
        order.append(pick)
        np.maximum(covered, sim[pick], out=covered)
        covered_total = float(covered.sum(dtype=np.float64))
    return order
