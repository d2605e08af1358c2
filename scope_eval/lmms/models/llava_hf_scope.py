"""``llava_hf_scope``: lmms-eval's chat ``llava_hf`` (transformers LLaVA-1.5 / LLaVA-NeXT) with pruning.

Everything but the pruning is upstream's: loading, chat template, generation settings. Differences:
a failed ``generate()`` aborts the run instead of becoming an empty answer, each answer carries its
realised visual tokens, and ``clean()`` keeps the model.
"""

from __future__ import annotations

from lmms_eval.models.chat.llava_hf import LlavaHf as ChatLlavaHf

from scope_eval.lmms.errors import abort_on_error
from scope_eval.lmms.options import wrapper_parameters

from .common import PrunedWrapper


class LlavaHfScope(PrunedWrapper, ChatLlavaHf):
    is_simple = False
    model_id = "llava_hf_scope"

    def __init__(self, **kwargs) -> None:
        plan, upstream = self.cell_plan(kwargs)
        with abort_on_error(f"{self.model_id}: loading {upstream.get('pretrained', 'the default checkpoint')}"):
            super().__init__(**upstream)
        self._start_pruning(self.model, plan, processor=self._image_processor)

    @classmethod
    def cell_plan(cls, kwargs):
        return cls._split_args(kwargs, wrapper_parameters(ChatLlavaHf))

    def generate_until(self, requests):
        return self._generate_tracked(requests, super().generate_until)
