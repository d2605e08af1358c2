"""Shrink the language model's input so that each image keeps exactly as many placeholders as tokens.

Processors expand every image to its full token count (576 for LLaVA-1.5, ~2340 for LLaVA-NeXT). After
pruning, image i contributes ``targets[i]`` tokens, so each run of image placeholders is cut to that
length and the rows are re-padded on the side the batch was padded on. The sequence, attention mask
and (derived) positions all shrink: masking without shrinking would not save any compute.
"""

from __future__ import annotations

import torch

from scope_eval.pruning import PruningError


def placeholder_runs(ids: torch.Tensor, image_token_id: int) -> list[tuple[int, int]]:
    """(start, end) of each maximal run of image placeholders in a 1-D id tensor."""
    is_image = (ids == image_token_id).to(torch.int8)
    edges = torch.diff(is_image, prepend=is_image.new_zeros(1), append=is_image.new_zeros(1))
    starts = torch.nonzero(edges == 1).flatten().tolist()
    ends = torch.nonzero(edges == -1).flatten().tolist()
    return list(zip(starts, ends))


def shrink_placeholders(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    image_token_id: int,
    targets: list[int],
    pad_token_id: int,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Cut the i-th placeholder run (in batch order) to ``targets[i]`` tokens; no-op when already so."""
    if attention_mask is None:
        attention_mask_in = torch.ones_like(input_ids)
    else:
        attention_mask_in = attention_mask
    rows, row_labels, image = [], [], 0
    changed = False
    for b in range(input_ids.shape[0]):
        valid = attention_mask_in[b].bool()
        ids = input_ids[b][valid]
        keep = torch.ones_like(ids, dtype=torch.bool)
        for start, end in placeholder_runs(ids, image_token_id):
            if image >= len(targets):
                raise PruningError(
                    f"the prompt has more image placeholder runs than images ({len(targets)}); "
                    "separate consecutive images with text"
                )
            length, target = end - start, targets[image]
            if length < target:
                raise PruningError(
                    f"image {image} has {length} placeholder tokens but {target} visual tokens are kept; "
                    "build the prompt with the model's processor"
                )
            if length > target:
                keep[start + target : end] = False
                changed = True
            image += 1
        rows.append(ids[keep])
        if labels is not None:
            row_labels.append(labels[b][valid][keep])
    if image != len(targets):
        raise PruningError(f"found {image} image placeholder runs for {len(targets)} images")
    if not changed:
        return input_ids, attention_mask, labels
    left = bool(attention_mask is not None and (attention_mask[:, 0] == 0).any())
    new_mask = _pad([torch.ones_like(r) for r in rows], 0, left)
    if attention_mask is not None:
        new_mask = new_mask.to(attention_mask.dtype)
    elif bool(new_mask.all()):
        new_mask = None  # rows still have equal lengths: keep the caller's "no mask"
    return _pad(rows, pad_token_id, left), new_mask, None if labels is None else _pad(row_labels, -100, left)


def _pad(rows: list[torch.Tensor], value: int, left: bool) -> torch.Tensor:
    width = max(r.shape[0] for r in rows)
    out = rows[0].new_full((len(rows), width), value)
    for b, row in enumerate(rows):
        if left:
            out[b, width - row.shape[0] :] = row
        else:
            out[b, : row.shape[0]] = row
    return out


def pad_token_id(config) -> int:
    """The id a LLaVA config pads with: its own pad id, its language model's, that model's EOS, else 0.

    Padded positions are masked out, so the id only has to exist in the vocabulary; the order here is
    the one generate() falls back through."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for candidate in (getattr(config, "pad_token_id", None), getattr(text, "pad_token_id", None), getattr(text, "eos_token_id", None)):
        if isinstance(candidate, int) and not isinstance(candidate, bool):
            return candidate
    return 0
