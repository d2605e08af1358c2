"""``random``: uniformly random tokens, seeded and reproducible on any machine."""

from __future__ import annotations

import hashlib
import numbers
from dataclasses import dataclass

import torch

from ..base import KeptTokens, PruningError, PruningMethod, SelectionWork, VisualTokens
from ..registry import register


@register
@dataclass
class RandomMethod(PruningMethod):
    """Keeps ``budget`` tokens drawn uniformly without replacement (the random baseline).

    Deterministic on any machine: each image/crop gets its own generator, seeded from ``seed``, its token
    count and the host's ``image_keys`` entry for it, a hash of that crop's pixel values
    (scope_eval.adapters.core.pixel_keys). The pixels are the model's input, so the draw does not depend on
    the vision tower's arithmetic (CPU matmul kernels, thread count, GPU), on the model's float dtype (the
    hash rounds pixels to bfloat16), on the call order, on the other images of its batch, or on how a run
    is split across processes. Before, the seed came from the bits of the computed features, and a second
    machine with the same lock drew other tokens (issue 11: Toy-POPE F1 of random@64 read 33.33 there
    against a baseline of 53.66). tests/test_determinism.py moves every feature by one ulp and requires
    the same draw; the old feature-seeded draw changes under that noise.

    A caller that passes no ``image_keys`` (a direct call on a feature tensor, no model) has only the
    features as input: they are hashed instead, which is reproducible only for bit-identical features.
    Budget: visual tokens kept per image/crop.
    """

    name = "random"
    display_name = "random"
    report_rank = 80
    needs_image_keys = True

    seed: int = 0  # mixed with each image's pixels: the same image gets the same draw anywhere

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise PruningError(f"random: seed must be an integer, got {self.seed!r}")
        self.seed = int(self.seed)

    def selection_flops(self, work: SelectionWork) -> int:
        return 0  # a seeded draw

    def _select(self, tokens: VisualTokens, budget: int) -> KeptTokens:
        keys = tokens.image_keys
        if keys is not None and len(keys) != tokens.batch:
            raise PruningError(
                f"random: {len(keys)} image_keys for {tokens.batch} images/crops; pass one key per row of features"
            )
        inputs = keys if keys is not None else [_feature_bytes(image) for image in tokens.features]
        picks = [
            torch.randperm(tokens.num_tokens, generator=self._generator_for(source, tokens.num_tokens))[:budget]
            for source in inputs
        ]
        indices = torch.stack(picks).sort(dim=-1).values
        return KeptTokens(indices=indices.to(tokens.features.device))

    def _generator_for(self, source: int | bytes, num_tokens: int) -> torch.Generator:
        digest = hashlib.blake2b(digest_size=8)
        digest.update(f"{self.seed}|{num_tokens}|".encode())
        digest.update(source if isinstance(source, bytes) else f"key:{int(source)}".encode())
        return torch.Generator().manual_seed(int.from_bytes(digest.digest(), "little") >> 1)


def _feature_bytes(image: torch.Tensor) -> bytes:
    """The features as the input of a model-free call: shape, dtype and raw bytes."""
    header = f"features:{tuple(image.shape)}|{image.dtype}|".encode()
    return header + image.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes()
