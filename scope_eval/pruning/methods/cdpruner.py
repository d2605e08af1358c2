"""``cdpruner``: CDPruner's conditional diversity, a DPP over the tokens weighted by instruction relevance."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import KeptTokens, PruningError, PruningMethod, SelectionWork, VisualTokens, all_finite
from ..model_dtype import check_selection_dtype, cosine_in_dtype
from ..registry import register
from ..similarity import cosine_similarity, cross_cosine_similarity

# The official min-max normalisation adds this to the numerator (CDPruner/llava/model/llava_arch.py:160),
# so that the least relevant token keeps a tiny positive weight instead of a zero row in the kernel.
RELEVANCE_FLOOR = 1e-6
# A marginal gain d^2 at or below this means the kernel's rank is exhausted: sqrt(d^2) would be 0 or NaN.
EXHAUSTED_GAIN = 1e-10


@register
@dataclass
class CDPrunerMethod(PruningMethod):
    """CDPruner (arXiv 2506.10967, NeurIPS 2025; github.com/Theia-4869/CDPruner), as its official code computes.

    Kernel L = diag(r) S diag(r): S is the cosine similarity of the *projected* tokens, r the relevance
    of each token to the instruction: the mean over the instruction's 77-token CLIP segments of the
    NEGATIVE cosine between the token's CLIP joint-space embedding (``VisualTokens.text_space``) and the
    segment's CLIP text embedding (``VisualTokens.instruction``), min-max normalised over every row of
    the call jointly (all crops of a LLaVA-NeXT image). The budget T tokens are the greedy MAP of the
    DPP (Chen et al. 2018's fast Cholesky-style update), returned in spatial order.

    The official loop has no stopping rule: past the kernel's numerical rank it takes sqrt of a
    non-positive gain and returns fewer than T tokens. Ours fills the remaining picks with the most
    relevant unpicked tokens (lowest index on ties) and marks the row degenerate, so exactly T come back.

    ``text_encoder``: the CLIP checkpoint (path or hub id, model + tokenizer) whose text tower embeds the
    instruction and whose visual projection maps the vision features into the joint space; the official
    code uses the vision tower's own checkpoint (openai/clip-vit-large-patch14-336 for LLaVA-1.5/NeXT).
    The method never loads it: the adapters do, and pass the results in ``VisualTokens``.
    ``selection_dtype="model"`` computes the token similarity in the projected tokens' dtype before the
    float32 kernel, as officially.
    """

    name = "cdpruner"
    display_name = "CDPruner"
    report_rank = 70
    needs_instruction = True

    text_encoder: str | None = None  # CLIP checkpoint (folder or hub id) embedding the instruction; required
    selection_dtype: str = "float32"  # "model": compute in the features' dtype, as the official code does

    def __post_init__(self) -> None:
        self.selection_dtype = check_selection_dtype(self.name, self.selection_dtype)
        if self.text_encoder is not None and not isinstance(self.text_encoder, str):
            raise PruningError(f"cdpruner: text_encoder must be a path or hub id of a CLIP model, got {self.text_encoder!r}")

    def selection_flops(self, work: SelectionWork) -> int:
        """Projection of all N tokens, similarity 2*N^2*d in the projected space, then K greedy DPP steps
        whose Cholesky updates sum to about K^2*N (the CLIP text tower and joint-space map not counted)."""
        similarity = work.projector_flops() + 2 * work.tokens**2 * work.text_width
        return work.groups * (similarity + work.keep**2 * work.tokens)

    def _select(self, tokens: VisualTokens, budget: int) -> KeptTokens:
        projected = tokens.projected()
        if not all_finite(projected):
            raise PruningError("cdpruner: the projected visual tokens contain NaN or inf; check the projector")
        if self.selection_dtype == "model":
            similarity = cosine_in_dtype(projected).float()
        else:
            similarity = cosine_similarity(projected)
        relevance = instruction_relevance(tokens.text_space(tokens.features), tokens.instruction)
        kernel = relevance.unsqueeze(2) * similarity * relevance.unsqueeze(1)
        picks, exhausted = greedy_dpp_map(kernel, budget, fallback=relevance)
        return KeptTokens(indices=picks.sort(dim=-1).values, degenerate=exhausted)


def instruction_relevance(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """[B, N] relevance in (0, 1]: mean over segments of -cos(image token, segment), min-max over ALL rows.

    image_embeds [B, N, C]; text_embeds [B, M, C] (one instruction's M segments per row). When every
    token is equally relevant (zero spread; the official code divides by zero there) all weights are 1.
    """
    negative = -cross_cosine_similarity(image_embeds.float(), text_embeds.float()).mean(dim=-1)
    smallest, largest = torch.aminmax(negative)
    spread = largest - smallest
    if not spread > 0:
        return torch.ones_like(negative)
    return (negative - smallest + RELEVANCE_FLOOR) / spread


def greedy_dpp_map(kernel: torch.Tensor, k: int, fallback: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """([B, k] picks in order, [B] bool exhausted) of the greedy MAP of the DPP with ``kernel`` [B, N, N].

    Each step picks argmax_j d_j^2 (first index on ties), the gain of log det L_{S + j}, and updates
    every d_j^2 by the new Cholesky column e = (L_j - sum_t c_tj c_t) / d_j. Once a row's largest gain is
    <= EXHAUSTED_GAIN its remaining picks follow ``fallback`` [B, N] (largest first, lowest index on ties).
    """
    batch, n, _ = kernel.shape
    rows = torch.arange(batch, device=kernel.device)
    columns = kernel.new_zeros(k, batch, n)  # c_t: the Cholesky factor's rows
    gains = kernel.diagonal(dim1=1, dim2=2).clone()  # d_j^2
    picked = torch.zeros(batch, n, dtype=torch.bool, device=kernel.device)
    exhausted = torch.zeros(batch, dtype=torch.bool, device=kernel.device)
    picks = torch.empty(batch, k, dtype=torch.long, device=kernel.device)
    for step in range(k):
        best = gains.argmax(dim=-1)  # the first maximal index, as officially (max(dim) is slow on a busy CPU)
        best_gain = gains[rows, best]
        exhausted |= ~(best_gain > EXHAUSTED_GAIN)
        pick = best
        if exhausted.any():
            # argmax takes the first maximum: the most relevant unpicked token, lowest index on ties
            pick = torch.where(exhausted, fallback.masked_fill(picked, float("-inf")).argmax(dim=-1), best)
        picks[:, step] = pick
        picked[rows, pick] = True
        if step + 1 < k:
            previous = columns[:step, rows, pick]  # [step, B]: c_t at the pick
            residual = kernel[rows, pick] - torch.einsum("tb,tbn->bn", previous, columns[:step])
            scale = torch.where(exhausted, torch.zeros_like(best_gain), best_gain.clamp_min(EXHAUSTED_GAIN).rsqrt())
            update = residual * scale.unsqueeze(-1)
            columns[step] = update
            gains -= update.square()
        gains[rows, pick] = float("-inf")
    return picks, exhausted
