"""``llava_hf_scope``: lmms-eval's chat ``llava_hf`` (transformers LLaVA-1.5 / LLaVA-NeXT) with pruning.

Everything but the pruning is upstream's: loading, chat template, generation settings. Differences:
a failed ``generate()`` aborts the run instead of becoming an empty answer, each answer carries its
realised visual tokens, and ``clean()`` keeps the model.
"""

from __future__ import annotations

from lmms_eval.models.chat.llava_hf import LlavaHf as ChatLlavaHf

from .common import PrunedWrapper


class LlavaHfScope(PrunedWrapper, ChatLlavaHf):
    is_simple = False
    model_id = "llava_hf_scope"
    upstream_class = ChatLlavaHf

    def __init__(self, **kwargs) -> None:
        self._load_upstream_and_prune(kwargs, processor_attribute="_image_processor")

    def generate_until(self, requests):
        return self._generate_tracked(requests, super().generate_until)
