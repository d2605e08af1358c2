"""``qwen2_vl_scope``: lmms-eval's ``qwen2_vl`` (transformers Qwen2-VL, simple path) with pruning.

Everything but the pruning is upstream's: loading, the system prompt, the JPEG data-URL image path,
``max_pixels`` / ``min_pixels`` (they decide each image's visual tokens N, and so K under keep_ratio),
generation settings. Differences: a failed ``generate()`` aborts the run instead of becoming an empty
answer, each answer carries its realised visual tokens and cost, and ``clean()`` keeps the model.
"""

from __future__ import annotations

from lmms_eval.models.simple.qwen2_vl import Qwen2_VL

from .common import PrunedWrapper


class Qwen2VlScope(PrunedWrapper, Qwen2_VL):
    is_simple = True
    model_id = "qwen2_vl_scope"
    upstream_class = Qwen2_VL
    adapter_options = ("saliency_layer",)  # the ViT block of SCOPE's saliency (docs/semantics.md)

    def __init__(self, **kwargs) -> None:
        self._load_upstream_and_prune(kwargs, processor_attribute="processor")

    def generate_until(self, requests):
        return self._generate_tracked(requests, super().generate_until)
