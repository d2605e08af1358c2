"""MMMU prompts that do not depend on which path ran before in the same process.

lmms-eval's ``mmmu.utils`` keeps one module-level task config whose ``metadata.interleaved_format``
flag ``mmmu_doc_to_messages`` (the chat path) switches on and never off. ``mmmu_doc_to_text`` reads that
flag, so after one chat-path prompt every later simple-path prompt in the process loses its numbered
``<image 1>`` references (they become ``<image>``). Our task passes ``interleaved_format: false`` (the
paper's prompts) explicitly on the simple path and restores the flag after the chat path.
"""

from __future__ import annotations

from lmms_eval.tasks.mmmu import utils as upstream


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    with _InterleavedFlag(False):
        return upstream.mmmu_doc_to_text(doc, lmms_eval_specific_kwargs)


def doc_to_messages(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> list:
    with _InterleavedFlag(False):  # upstream switches it on for its own prompt; it is put back afterwards
        return upstream.mmmu_doc_to_messages(doc, lmms_eval_specific_kwargs)


class _InterleavedFlag:
    """Sets upstream's module-level flag for the duration of one call and restores its previous value."""

    def __init__(self, value: bool):
        self.value = value

    def __enter__(self) -> None:
        metadata = upstream.config["metadata"]
        self.previous = metadata.get("interleaved_format", False)
        metadata["interleaved_format"] = self.value

    def __exit__(self, *exc_info: object) -> None:
        upstream.config["metadata"]["interleaved_format"] = self.previous
