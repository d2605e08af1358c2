"""Attention received per merged token at one Qwen2-VL / Qwen2.5-VL ViT block, recomputed in chunks.

Qwen's vision tower has no CLS token, so SCOPE's CLS->patch saliency has no direct analogue. Ours
(docs/semantics.md#qwen2-vl-and-qwen25-vl): at one full-attention block, the softmax attention every
patch receives from the patches of its own image (softmax over keys, mean over heads, mean over the
image's query patches), summed over each 2x2 merge group (the group becomes one LM token).

The tower runs with whatever attention kernel it was loaded with (sdpa/flash return no weights). Forward
hooks capture the block's ``qkv`` output and the rotary embeddings and segment boundaries (``cu_seqlens``)
it was called with; the attention is then recomputed in float32 for that one block, a chunk of queries at
a time, so memory stays at about ``QUERY_CHUNK_ELEMENTS`` floats whatever the resolution (never heads x N^2).
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from scope_eval.pruning import PruningError

# Attention-logit elements per query chunk: 2**24 float32 = 64 MiB (plus the softmax's own copy).
QUERY_CHUNK_ELEMENTS = 1 << 24


def default_saliency_block(vision_config) -> int:
    """Qwen2.5-VL: the last full-attention block (its others attend within windows); Qwen2-VL: -2 (as CLIP -2)."""
    full = getattr(vision_config, "fullatt_block_indexes", None)
    if full:
        return int(full[-1])
    return vision_config.depth - 2


def check_saliency_block(vision_config, block: int) -> int:
    """``block`` (negative counts from the end) as a non-negative index of a full-attention block."""
    depth = vision_config.depth
    if isinstance(block, bool) or not isinstance(block, int) or not -depth <= block < depth:
        raise PruningError(f"saliency_layer must be a ViT block index in [-{depth}, {depth - 1}], got {block!r}")
    index = block % depth
    full = getattr(vision_config, "fullatt_block_indexes", None)
    if full is not None and index not in full:
        raise PruningError(
            f"saliency_layer {block} is ViT block {index}, a window-attention block of Qwen2.5-VL: the attention a "
            f"patch receives there is only local. Pick a full-attention block, one of {list(full)}"
        )
    return index


def attention_received(q: torch.Tensor, k: torch.Tensor, scale: float, chunk_elements: int = QUERY_CHUNK_ELEMENTS) -> torch.Tensor:
    """[n] mean over heads and queries of softmax(q k^T * scale) over keys, for q, k [H, n, d] (one image).

    Column sums are accumulated a chunk of queries at a time: peak extra memory ~ 2 * H * chunk * n floats.
    """
    heads, n, _ = q.shape
    chunk = max(1, chunk_elements // max(1, heads * n))
    received = torch.zeros(n, dtype=torch.float32, device=q.device)
    keys_t = k.float().transpose(-1, -2)
    for start in range(0, n, chunk):
        logits = (q[:, start : start + chunk].float() @ keys_t) * scale  # [H, c, n]
        received += torch.softmax(logits, dim=-1).sum(dim=(0, 1))
        del logits
    return received / (heads * n)


class QwenSaliencyProbe:
    """Hooks one ViT block of ``visual``; ``take(grid_thw)`` gives the saliency of each merged token, in
    the order the merger's output has (window order undone on Qwen2.5-VL)."""

    def __init__(self, visual: nn.Module, block_index: int):
        self.visual = visual
        self.merge_unit = visual.spatial_merge_size**2
        self.windowed = hasattr(visual, "fullatt_block_indexes")
        block = visual.blocks[block_index]
        attention = block.attn
        self.num_heads: int = attention.num_heads
        self.scale: float = attention.scaling
        # the rotary function of the tower's own modeling module (Qwen2-VL and Qwen2.5-VL each define one)
        self._rotate = sys.modules[type(attention).__module__].apply_rotary_pos_emb_vision
        self._qkv: torch.Tensor | None = None
        self._call: dict | None = None
        self._saliency: torch.Tensor | None = None
        self._handles = [
            attention.register_forward_pre_hook(self._store_call, with_kwargs=True),
            attention.qkv.register_forward_hook(self._store_qkv),
            # computed as the tower finishes, so timers around the tower count it as encoding
            visual.register_forward_hook(self._compute_at_tower_end, with_kwargs=True),
        ]

    def _store_call(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._call = {"cu_seqlens": kwargs.get("cu_seqlens"), "position_embeddings": kwargs.get("position_embeddings")}

    def _store_qkv(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        self._qkv = output.detach()

    def _compute_at_tower_end(self, module: nn.Module, args: tuple, kwargs: dict, output) -> None:
        grid_thw = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        self._saliency = self.compute(grid_thw)

    def take(self) -> torch.Tensor:
        """[sum N_merged] float32 saliency of the tower call just made (one value per LM token)."""
        if self._saliency is None:
            raise RuntimeError("the vision tower has not run since the saliency probe was installed")
        saliency, self._saliency = self._saliency, None
        return saliency

    def compute(self, grid_thw: torch.Tensor) -> torch.Tensor:
        """[sum N_merged] float32 saliency from the captured block call, for images of ``grid_thw``."""
        if self._qkv is None or self._call is None:
            raise RuntimeError("the vision tower has not run since the saliency probe was installed")
        qkv, call = self._qkv, self._call
        self._qkv = self._call = None
        length = qkv.shape[0]
        q, k, _ = qkv.reshape(length, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)  # [S, H, d] each
        cos, sin = call["position_embeddings"]
        q, k = self._rotate(q, k, cos, sin)
        q, k = q.transpose(0, 1), k.transpose(0, 1)  # [H, S, d]
        bounds = call["cu_seqlens"].tolist()
        per_patch = torch.cat(
            [attention_received(q[:, a:b], k[:, a:b], self.scale) for a, b in zip(bounds[:-1], bounds[1:])]
        )
        per_token = per_patch.view(-1, self.merge_unit).sum(dim=1)  # each 2x2 merge group: one LM token
        if self.windowed:  # the blocks ran in window order (merge-group granularity): back to raster order
            from transformers.vision_utils import get_vision_window_index

            window_index, _ = get_vision_window_index(
                grid_thw, spatial_merge_size=self.visual.spatial_merge_size, window_size=self.visual.window_size,
                patch_size=self.visual.patch_size,
            )
            per_token = per_token[torch.argsort(window_index.to(per_token.device))]
        return per_token

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._qkv = self._call = self._saliency = None


__all__ = ["QUERY_CHUNK_ELEMENTS", "QwenSaliencyProbe", "attention_received", "check_saliency_block", "default_saliency_block"]
