"""``random``: uniformly random tokens, seeded and reproducible."""

from __future__ import annotations

import hashlib
import numbers
from dataclasses import dataclass

import torch

from ..base import KeptTokens, PruningError, PruningMethod, VisualTokens
from ..registry import register


@register
@dataclass
class RandomMethod(PruningMethod):
    """Keeps ``budget`` tokens drawn uniformly without replacement (the random baseline).

    Each image gets its own generator, seeded from ``seed`` and a hash of that image's features (bytes,
    shape and dtype). So the draw for an image does not depend on the call order, on the other images of
    its batch, or on how a run is split across processes. Caveat: it depends on the features' exact bits,
    so a host that computes bit-different features for the same image (another dtype, or GPU kernels
    that change with the batch size) draws differently. Budget: visual tokens kept per image/crop.
    """

    name = "random"

    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise PruningError(f"random: seed must be an integer, got {self.seed!r}")
        self.seed = int(self.seed)

    def _select(self, tokens: VisualTokens, budget: int) -> KeptTokens:
        picks = [
            torch.randperm(tokens.num_tokens, generator=self._generator_for(image))[:budget]
            for image in tokens.features
        ]
        indices = torch.stack(picks).sort(dim=-1).values
        return KeptTokens(indices=indices.to(tokens.features.device))

    def _generator_for(self, image: torch.Tensor) -> torch.Generator:
        digest = hashlib.blake2b(digest_size=8)
        digest.update(f"{self.seed}|{tuple(image.shape)}|{image.dtype}".encode())
        digest.update(image.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes())
        return torch.Generator().manual_seed(int.from_bytes(digest.digest(), "little") >> 1)
