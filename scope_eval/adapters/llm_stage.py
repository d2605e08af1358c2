"""Pruning inside the language model: forward pre-hooks on a Llama-style decoder's layers.

The adapter tells ``LlmStage`` where the visual tokens of the next prefill are (``expect_prefill``).
On that prefill, the pre-hook of each drop layer l hands the method ``LlmTokens`` and shortens the
sequence to what it keeps; the pre-hook of every layer from the first drop on gathers that layer's
position embeddings, position ids and attention mask to the kept rows. Positions stay the ORIGINAL ones
(RoPE as if nothing had been dropped), as FastV's and DART's official code keep them, unless the method
``renumbers_positions`` (PyramidDrop's official code): then a layer after a drop sees positions 0..L'-1,
and while decoding each such layer's new tokens are shifted back by the tokens dropped before it (the
official decode-time decrement), i.e. they continue that layer's own numbering. Each layer's KV cache
then holds only the tokens that layer saw: layers before the first drop all of them.

Decoding continues on that cache. The decoder builds one mask for the full length (layer 0's cache,
which also sets the next position ids = the original ones); the pre-hooks give each pruned layer the
mask's columns of its own cached rows plus the new tokens. Under sdpa without padding the mask is None
and nothing needs gathering: the cache of each layer is exactly what it may attend to.

Batches: rows without padding and with equal visual-token counts are pruned row by row; padded batches
are refused (PruningError), since a per-row different drop would misalign the padded layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from scope_eval.pruning import PruningError
from scope_eval.pruning.base import check_picks
from scope_eval.pruning.llm_stage import LlmSchedule, LlmStageMethod, LlmTokens, Recycled


@dataclass
class LayerCounts:
    """Visual tokens of one sample (one image's share of its sequence) at every decoder layer."""

    per_layer: list[int]
    images: int = 1

    @property
    def layer_average(self) -> float:
        """Visual tokens averaged over all decoder layers (the default budget unit), per image."""
        return sum(self.per_layer) / len(self.per_layer) / self.images

    @property
    def after_layer(self) -> float:
        """Visual tokens per image seen by the layers from the first drop on, averaged over them."""
        first = next((i for i, n in enumerate(self.per_layer) if n != self.per_layer[0]), len(self.per_layer) - 1)
        later = self.per_layer[first:]
        return sum(later) / len(later) / self.images


def decoder_layers(decoder: nn.Module) -> nn.ModuleList:
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList) or getattr(decoder, "norm", None) is None:
        raise PruningError(
            f"in-LLM pruning needs a Llama-style decoder (.layers and .norm); {type(decoder).__name__} has none"
        )
    return layers


def refuse_padding(attention_mask: torch.Tensor | None) -> None:
    if attention_mask is not None and attention_mask.dim() == 2 and not bool(attention_mask.bool().all()):
        raise PruningError(
            "in-LLM pruning (fastv, pdrop, dart, sparsevlm) does not support padded batches: each row would drop different "
            "positions; run with batch size 1 (or rows of equal length without padding)"
        )


class LlmStage:
    """Installs the in-LLM method of ``handle.plan`` on ``decoder``; ``remove()`` takes every hook off."""

    def __init__(self, handle: Any, decoder: nn.Module, max_visual: int | None):
        self.handle = handle
        self.method: LlmStageMethod = handle.plan.method
        self.plan = handle.plan
        self.decoder = decoder
        self.layers = decoder_layers(decoder)
        # Validate against this model now, before anything runs: the depth, and the budget at the most
        # visual tokens an image can bring (None: hosts whose images bring a varying count, e.g. Qwen2-VL,
        # where each prefill's schedule is checked when it comes).
        if max_visual is not None:
            self.method.schedule(self.plan.image_budget(max_visual), max_visual, len(self.layers))
        self._pending: tuple[torch.Tensor, int] | None = None  # (visual mask [B, L], images per row)
        self._mode = "off"  # "prefill", "decode" or "off" for the forward in progress
        self._cache: Any = None  # the cache object of the pruned prefill, continued by decoding
        self._full_length = 0
        self._rows: torch.Tensor | None = None  # [B, L'] original positions of the current sequence
        self._visual: torch.Tensor | None = None  # [B, n] positions of the visual tokens in the current sequence
        self._inputs: tuple[torch.Tensor, torch.Tensor] | None = None  # layer 0's input and its visual positions
        self._rows_at: dict[int, torch.Tensor] = {}  # layer -> its rows, for layers from the first drop on
        self._schedule: LlmSchedule | None = None
        self._counts: list[int] = []
        self._images = 1
        self._previous: tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]] | None = None
        self._hooks = [
            layer.register_forward_pre_hook(self._hook_for(index), with_kwargs=True)
            for index, layer in enumerate(self.layers)
        ]
        self._hooks.append(decoder.register_forward_hook(self._after_decoder))

    # -- called by the adapters ----------------------------------------------------------------------
    def expect_prefill(self, visual: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
        """The next decoder prefill of ``visual.shape[1]`` tokens has its visual tokens where ``visual`` [B, L] is True.

        Each run of consecutive visual tokens counts as one image (for the per-image records)."""
        refuse_padding(attention_mask)
        counts = visual.sum(dim=1)
        if not bool((counts == counts[0]).all()):
            raise PruningError(
                "in-LLM pruning needs the same number of visual tokens in every row of a batch; run with batch size 1"
            )
        starts = visual[:, :1].sum() + (visual[:, 1:] & ~visual[:, :-1]).sum()
        images = max(int(starts) // visual.shape[0], 1)
        self._pending = (visual, images) if int(counts[0]) > 0 else None

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        self._pending = self._cache = self._rows = self._visual = self._previous = self._inputs = None
        self._rows_at = {}

    # -- hooks -----------------------------------------------------------------------------------------
    def _hook_for(self, index: int):
        def before_layer(module: nn.Module, args: tuple, kwargs: dict):
            return self._before_layer(index, module, args, kwargs)

        return before_layer

    def _before_layer(self, index: int, layer: nn.Module, args: tuple, kwargs: dict):
        hidden = args[0] if args else kwargs["hidden_states"]
        if index == 0:
            # transformers 5.24 renamed the decoder layers' KV-cache argument past_key_values -> cache
            cache = kwargs.get("cache", kwargs.get("past_key_values"))
            self._start(hidden, cache)
        if self._mode == "decode":
            rows = self._rows_at.get(index)
            if rows is None:
                return None
            mask = kwargs.get("attention_mask")
            if mask is not None:
                kwargs["attention_mask"] = _mask_columns(mask, rows, self._full_length)
            if self.method.renumbers_positions():
                kwargs = self._shift_positions(kwargs, hidden, dropped=self._full_length - rows.shape[1])
            return args, kwargs
        if self._mode != "prefill":
            return None
        if index in self._schedule.layers:
            hidden = self._drop(index, hidden)
        self._counts.append(self._visual.shape[1])
        if self._rows_at or index in self._schedule.layers:
            rows = self._rows
            self._rows_at[index] = rows
            positions = rows
            if self.method.renumbers_positions():
                positions = torch.arange(rows.shape[1], device=rows.device).expand_as(rows)
            kwargs = _gather_inputs(kwargs, rows, positions, self._full_length)
        self._previous = (layer, hidden, kwargs["position_embeddings"])
        if args:
            args = (hidden, *args[1:])
        else:
            kwargs["hidden_states"] = hidden
        return args, kwargs

    def _start(self, hidden: torch.Tensor, cache: Any) -> None:
        pending, self._pending = self._pending, None
        cached = cache.get_seq_length(0) if cache is not None else 0
        if pending is not None and cached == 0 and hidden.shape[1] == pending[0].shape[1] and hidden.shape[1] > 1:
            visual, self._images = pending
            batch, length = visual.shape
            self._mode, self._cache, self._full_length = "prefill", cache, length
            self._rows = torch.arange(length, device=hidden.device).expand(batch, length)
            self._visual = torch.stack([row.nonzero().squeeze(1) for row in visual.to(hidden.device)])
            budget = self.plan.image_budget(self._visual.shape[1])  # a keep_ratio: of this prefill's visual tokens
            self._schedule = self.method.schedule(budget, self._visual.shape[1], len(self.layers))
            self._inputs = (hidden, self._visual)
            self._rows_at, self._counts = {}, []
        elif cache is not None and cache is self._cache and self._rows_at and cached >= self._full_length:
            self._mode = "decode"
        else:
            self._mode = "off"
            if cached == 0:  # a new sequence without (known) images: the last pruned cache is over
                self._cache, self._rows_at = None, {}

    def _drop(self, index: int, hidden: torch.Tensor) -> torch.Tensor:
        keep = self._schedule.keep[self._schedule.layers.index(index)]
        tokens = LlmTokens(
            hidden=hidden,
            visual=self._visual,
            attention=lambda which, queries: self._attention(which, index, hidden, queries),
            keys=lambda which: self._keys(which, index, hidden),
            final_norm=self.decoder.norm,
            inputs=self._inputs[0],
            input_visual=self._inputs[1],
        )
        chosen = self.method.choose(tokens, keep, self._schedule.layers.index(index))
        merged = None
        if isinstance(chosen, Recycled):
            chosen, merged = chosen.kept, chosen.merged
        selected = keep - (0 if merged is None else merged.shape[1])
        if chosen.shape != (hidden.shape[0], selected):
            raise AssertionError(f"{self.method.name} chose {tuple(chosen.shape)} tokens, expected {(hidden.shape[0], selected)}")
        check_picks(self.method.name, chosen, hidden.shape[0], self._visual.shape[1])
        retained = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        retained.scatter_(1, self._visual, False)
        retained.scatter_(1, self._visual.gather(1, chosen), True)
        current = torch.stack([row.nonzero().squeeze(1) for row in retained])  # [B, L'] into the current sequence
        new_position = retained.long().cumsum(dim=1) - 1
        self._visual = new_position.gather(1, self._visual.gather(1, chosen))
        self._rows = self._rows.gather(1, current)
        hidden = hidden.gather(1, current.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        return hidden if merged is None else self._insert_merged(hidden, merged)

    def _insert_merged(self, hidden: torch.Tensor, merged: torch.Tensor) -> torch.Tensor:
        """Put a recycling method's merged tokens right after each row's last kept visual token; they share
        its original position (RoPE, mask rows) and count as visual tokens from here on."""
        count = merged.shape[1]
        rows, visual, states = [], [], []
        for row in range(hidden.shape[0]):
            after = int(self._visual[row, -1]) + 1
            new = torch.arange(after, after + count, device=hidden.device)
            states.append(torch.cat([hidden[row, :after], merged[row].to(hidden.dtype), hidden[row, after:]]))
            rows.append(torch.cat([self._rows[row, :after], self._rows[row, after - 1].expand(count), self._rows[row, after:]]))
            visual.append(torch.cat([self._visual[row], new]))
        self._rows, self._visual = torch.stack(rows), torch.stack(visual)
        return torch.stack(states)

    def _shift_positions(self, kwargs: dict, hidden: torch.Tensor, dropped: int) -> dict:
        """Decode step under renumbered positions: this layer's new tokens sit ``dropped`` places earlier."""
        position_ids = kwargs.get("position_ids")
        rotary = getattr(self.decoder, "rotary_emb", None)
        if position_ids is None or rotary is None:
            raise PruningError(
                f"{self.method.name} positions=renumbered needs the decoder's position_ids and rotary_emb while "
                "decoding; this decoder does not pass them: use positions=original"
            )
        kwargs = dict(kwargs)
        kwargs["position_ids"] = position_ids - dropped
        kwargs["position_embeddings"] = rotary(hidden, position_ids=kwargs["position_ids"])
        return kwargs

    def _after_decoder(self, module: nn.Module, args: tuple, output: Any) -> None:
        if self._mode == "prefill":
            batch = self._rows.shape[0]
            record = LayerCounts(list(self._counts), self._images)
            self.handle.record_layers([record] * (batch * self._images))
        self._mode, self._previous, self._inputs = "off", None, None

    # -- what the method may ask for --------------------------------------------------------------------
    def _layer_inputs(self, which: str, index: int, hidden: torch.Tensor):
        if which == "at":
            # the drop layer's own input: the current sequence, before gathering, with the rows' embeddings
            layer = self.layers[index]
            cos, sin = self._previous[2]
            if cos.shape[1] != hidden.shape[1]:  # earlier drops: the previous layer's embeddings are for its rows
                raise AssertionError("position embeddings out of step with the hidden states")
            return layer, hidden, (cos, sin)
        if which == "before":
            layer, previous_hidden, embeddings = self._previous
            return layer, previous_hidden, embeddings
        raise ValueError(f"which must be 'before' or 'at', got {which!r}")

    def _projected(self, which: str, index: int, hidden: torch.Tensor, queries: torch.Tensor | None):
        layer, states, (cos, sin) = self._layer_inputs(which, index, hidden)
        attention = layer.self_attn
        normed = layer.input_layernorm(states)
        batch, length = normed.shape[:2]
        head_dim = attention.head_dim
        keys = attention.k_proj(normed).view(batch, length, -1, head_dim).transpose(1, 2)
        if queries is None:
            q = keys
        else:
            picked = normed.gather(1, queries.unsqueeze(-1).expand(-1, -1, normed.shape[-1]))
            q = attention.q_proj(picked).view(batch, queries.shape[1], -1, head_dim).transpose(1, 2)
            q_cos = cos.expand(batch, -1, -1).gather(1, queries.unsqueeze(-1).expand(-1, -1, cos.shape[-1]))
            q_sin = sin.expand(batch, -1, -1).gather(1, queries.unsqueeze(-1).expand(-1, -1, sin.shape[-1]))
            q, _ = apply_rotary_pos_emb(q, q, q_cos, q_sin)
        _, keys = apply_rotary_pos_emb(keys, keys, cos, sin)
        return attention, q, keys

    def _attention(self, which: str, index: int, hidden: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        attention, q, keys = self._projected(which, index, hidden, queries)
        keys = keys.repeat_interleave(q.shape[1] // keys.shape[1], dim=1)  # grouped-query attention
        logits = (q.float() @ keys.float().transpose(-1, -2)) * attention.scaling  # [B, H, q, L]
        key_index = torch.arange(keys.shape[2], device=keys.device)
        future = key_index.view(1, 1, 1, -1) > queries.view(queries.shape[0], 1, -1, 1)
        return torch.softmax(logits.masked_fill(future, float("-inf")), dim=-1)

    def _keys(self, which: str, index: int, hidden: torch.Tensor) -> torch.Tensor:
        _, _, keys = self._projected(which, index, hidden, None)
        return keys.transpose(1, 2).reshape(keys.shape[0], keys.shape[2], -1)


def _gather_rows(tensor: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``tensor`` [1 or B, L, ...] at ``rows`` [B, L'] along dim 1."""
    expanded = tensor.expand(rows.shape[0], *tensor.shape[1:])
    index = rows.view(*rows.shape, *([1] * (tensor.dim() - 2))).expand(*rows.shape, *tensor.shape[2:])
    return expanded.gather(1, index)


def _gather_inputs(kwargs: dict, rows: torch.Tensor, positions: torch.Tensor, full_length: int) -> dict:
    """A layer's inputs for the kept ``rows`` [B, L'] of the prefill, at ``positions`` [B, L'] (indices
    into the prefill's position embeddings: ``rows`` itself, or 0..L'-1 when renumbered)."""
    kwargs = dict(kwargs)
    cos, sin = kwargs["position_embeddings"]
    kwargs["position_embeddings"] = (_gather_rows(cos, positions), _gather_rows(sin, positions))
    if kwargs.get("position_ids") is not None:
        kwargs["position_ids"] = _gather_rows(kwargs["position_ids"], positions)
    mask = kwargs.get("attention_mask")
    if mask is not None:
        if mask.dim() == 4:  # [B or 1, 1, L, L]: the kept query rows, and the kept key columns
            mask = torch.stack([mask[min(b, mask.shape[0] - 1)][:, r][:, :, r] for b, r in enumerate(rows)])
        else:
            mask = _mask_columns(mask, rows, full_length)
        kwargs["attention_mask"] = mask
    return kwargs


def _mask_columns(mask: torch.Tensor, rows: torch.Tensor, full_length: int) -> torch.Tensor:
    """The key columns of a layer whose cache holds ``rows`` of the prefill, then every later token."""
    later = torch.arange(full_length, mask.shape[-1], device=mask.device)
    columns = [torch.cat([r.to(mask.device), later]) for r in rows]
    return torch.stack([mask[min(b, mask.shape[0] - 1)][..., c] for b, c in enumerate(columns)])


__all__ = ["LayerCounts", "LlmStage", "decoder_layers", "refuse_padding"]
