"""``qwen2_5_vl_scope``: lmms-eval's ``qwen2_5_vl`` (transformers Qwen2.5-VL) with pruning.

Built on the class ``--model qwen2_5_vl`` resolves to, the chat wrapper (messages from the task's
``doc_to_messages``); loading (bfloat16, as upstream), ``max_pixels`` / ``min_pixels`` and generation
are upstream's. Differences as for ``qwen2_vl_scope``: failed generations abort, each answer carries
its realised visual tokens and cost, ``clean()`` keeps the model.
"""

from __future__ import annotations

from lmms_eval.models.chat.qwen2_5_vl import Qwen2_5_VL as ChatQwen2_5_VL

from .common import PrunedWrapper


class Qwen2_5VlScope(PrunedWrapper, ChatQwen2_5_VL):
    is_simple = False
    model_id = "qwen2_5_vl_scope"
    upstream_class = ChatQwen2_5_VL
    adapter_options = ("saliency_layer",)  # the ViT block of SCOPE's saliency (docs/semantics.md)

    def __init__(self, **kwargs) -> None:
        self._load_upstream_and_prune(kwargs, processor_attribute="processor")

    def generate_until(self, requests):
        return self._generate_tracked(requests, super().generate_until)
