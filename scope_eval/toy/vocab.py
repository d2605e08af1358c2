"""The toy tokenizer's vocabulary and the LLaVA vicuna_v1 prompt it must cover.

Word-level: every word of the system prompt, the prompt suffixes and the question templates is one token,
so a question never falls back to `<unk>` (tests check the committed benchmark files against this).
"""

from __future__ import annotations

import re

from scope_eval.lmms.tasks.toy.scenes import COLOURS, SHAPES

# The original LLaVA codebase's conv_templates["vicuna_v1"] system prompt, verbatim: the HF chat template
# and the original path must produce the same text.
SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
SHORT_ANSWER_PROMPT = "\nAnswer the question using a single word or phrase."
YES_NO_SUFFIX = "Please answer yes or no."

SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>", "<image>")
NUMBER_WORDS = tuple(str(n) for n in range(10))
ANSWER_WORDS = ("yes", "no", "left", "right", "above", "below")
TEMPLATE_TEXT = (
    "USER: ASSISTANT: Is there a in the image? Is there an in this image? What color is the ? "
    "What shape is the object? How many are there? Are there in this image? Is the on the left of the ? "
    "Is the to the left or to the right of the ? Is the above or below the ? Is the ? objects"
)

# Word-level pre-tokenisation: runs of word characters, or runs of punctuation.
WORD_PATTERN = re.compile(r"\w+|[^\w\s]+")


def words_of(text: str) -> list[str]:
    return WORD_PATTERN.findall(text)


def vocabulary() -> list[str]:
    """Special tokens first (fixed ids 0-4), then the sorted words."""
    words: set[str] = set()
    for text in (SYSTEM_PROMPT, SHORT_ANSWER_PROMPT, YES_NO_SUFFIX, TEMPLATE_TEXT):
        words.update(words_of(text))
    words.update(COLOURS)
    words.update(SHAPES)
    words.update(f"{shape}s" for shape in SHAPES)
    words.update(NUMBER_WORDS)
    words.update(ANSWER_WORDS)
    return list(SPECIAL_TOKENS) + sorted(words)
