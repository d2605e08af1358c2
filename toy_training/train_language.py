"""Stage 2: train projector + language model on questions about the pool, with the vision tower frozen.

Layer -2 patch features of every pool image are computed once; each step samples scenes and fresh
questions. The loss covers the answer word and the `</s>` after it. Sequences are built exactly as the
HF processor builds them (checked at start-up), with K image placeholders: a short-sequence curriculum
(object-rich subsets of K = 48, then 144 tokens, then all 576) makes the lookup over image tokens easy to
find first, as measured in research/toy_recipe2.md.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from scope_eval.toy.model import NUM_PATCHES, VISION_FEATURE_LAYER
from scope_eval.toy.questions import (
    MME_CATEGORIES,
    POPE_STRATEGIES,
    Question,
    attribute_existence,
    colour_question,
    count_question,
    existence_negative,
    existence_positive,
    mme_pair,
    relation_question,
    shape_question,
)
from scope_eval.lmms.tasks.toy.scenes import Scene
from .train_vision import clipped_step, warmup_cosine
from .training_data import pixel_values
from scope_eval.toy.vocab import SHORT_ANSWER_PROMPT, SYSTEM_PROMPT


@dataclass
class LanguageStageConfig:
    # (steps, image tokens per sample, question mix) phases; the last phase uses all 576 tokens like
    # evaluation. One-attribute existence first, then colour-and-shape existence, then the full mixture:
    # in a mixture from the start, or with existence alone first, the lookup over image tokens was found
    # late or not at all (see the model card's training notes).
    curriculum: list[tuple[int, int, str]] = field(default_factory=lambda: [
        (600, 48, "attribute"), (2000, 48, "existence"), (800, 48, "all"), (400, 144, "all"), (1500, 576, "all")])
    batch_size: int = 16
    lr: float = 5e-4
    warmup: int = 50
    weight_decay: float = 0.01
    eval_every: int = 300


@torch.no_grad()
def featurize(tower, images: np.ndarray, batch_size: int = 32, dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """Layer -2 patch features (CLS dropped, LLaVA's "default" strategy) [N, 576, D]; float16 halves the
    cache of the language stage."""
    chunks = []
    for start in range(0, len(images), batch_size):
        hidden = tower(pixel_values=pixel_values(images[start : start + batch_size]), output_hidden_states=True)
        chunks.append(hidden.hidden_states[VISION_FEATURE_LAYER][:, 1:].to(dtype))
    return torch.cat(chunks)


QUESTION_MIXES = ("attribute", "existence", "all")


def sample_question(scene: Scene, rng: random.Random, mix: str = "all") -> Question | None:
    """The training mixture: mostly existence, then MME-style yes/no, attributes, counting, relations.
    mix="existence": POPE-style existence questions only; mix="attribute": one-attribute existence only."""
    if mix not in QUESTION_MIXES:
        raise ValueError(f"unknown question mix {mix!r}; expected one of {QUESTION_MIXES}")
    if mix == "attribute":
        return attribute_existence(scene, rng)
    roll = 0.0 if mix == "existence" else rng.random()
    if roll < 0.35:
        if rng.random() < 0.5:
            return existence_positive(scene, rng, "existence")
        return existence_negative(scene, rng, rng.choice(POPE_STRATEGIES))
    if roll < 0.55:
        pair = mme_pair(scene, rng, rng.choice(MME_CATEGORIES))
        return None if pair is None else rng.choice(pair)
    if roll < 0.70:
        return (colour_question if rng.random() < 0.5 else shape_question)(scene, rng)
    if roll < 0.88:
        return count_question(scene, rng)
    return relation_question(scene, rng)


def sample_pool_questions(scenes: list[Scene], rng: random.Random, count: int, mix: str) -> tuple[list[int], list[Question]]:
    """`count` (scene index, question) pairs drawn from the pool: random scenes, fresh questions of `mix`."""
    indices, questions = [], []
    while len(questions) < count:
        index = rng.randrange(len(scenes))
        question = sample_question(scenes[index], rng, mix)
        if question is not None:
            indices.append(index)
            questions.append(question)
    return indices, questions


def answer_loss(scored: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the answer word plus 0.2 x that of the `</s>` after it ([B, 2, vocab] logits)."""
    return F.cross_entropy(scored[:, 0], targets[:, 0]) + 0.2 * F.cross_entropy(scored[:, 1], targets[:, 1])


class PromptBuilder:
    """Token ids of "<s>{system} USER: <image>*K\\n{question}{suffix} ASSISTANT:" without re-tokenising the prefix."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.prefix = tokenizer(f"{SYSTEM_PROMPT} USER: ").input_ids  # starts with <s>
        self.image_token_id = tokenizer.convert_tokens_to_ids("<image>")
        self.eos_token_id = tokenizer.eos_token_id
        self.pad_token_id = tokenizer.pad_token_id

    def suffix(self, question: str) -> list[int]:
        return self.tokenizer(f"{question}{SHORT_ANSWER_PROMPT} ASSISTANT:", add_special_tokens=False).input_ids

    def prompt_ids(self, question: str, num_image_tokens: int) -> list[int]:
        return self.prefix + [self.image_token_id] * num_image_tokens + self.suffix(question)

    def check_against(self, processor, question: str) -> None:
        """Fail loudly if these ids differ from what the HF processor feeds the model at evaluation."""
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question + SHORT_ANSWER_PROMPT}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        expected = self.tokenizer(text.replace("<image>", "<image>" * NUM_PATCHES)).input_ids
        if expected != self.prompt_ids(question, NUM_PATCHES):
            raise RuntimeError("training prompt ids differ from the processor's chat template; fix PromptBuilder")


def keep_object_rich(patch_class: np.ndarray, patch_centre: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` ascending token indices: object centres first, other object tokens next, then random ones
    (per patch for LLaVA's 576 tokens, per 2x2 group for the toy Qwen2-VL's 144)."""
    total = len(patch_class)
    if count >= total:
        return np.arange(total)
    centres = np.flatnonzero(patch_centre > 0)
    others = np.setdiff1d(np.flatnonzero(patch_class > 0), centres)
    background = np.setdiff1d(np.arange(total), np.union1d(centres, others))
    ordered = np.concatenate([rng.permutation(centres), rng.permutation(others), rng.permutation(background)])
    return np.sort(ordered[:count])


def answer_logits(model, features: torch.Tensor, input_ids: torch.Tensor, image_start: int, attention_mask: torch.Tensor):
    """Logits of every position, with projected features written over the K image placeholders."""
    embeds = model.model.language_model.embed_tokens(input_ids)
    projected = model.model.multi_modal_projector(features)
    embeds = torch.cat([embeds[:, :image_start], projected, embeds[:, image_start + features.shape[1] :]], dim=1)
    hidden = model.model.language_model(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state
    return model.lm_head(hidden)


def make_batch(builder: PromptBuilder, questions: list[Question], num_image_tokens: int):
    """Right-padded ids of prompt + answer, the positions whose next token is scored, and the targets."""
    rows, score_positions, targets = [], [], []
    for question in questions:
        prompt = builder.prompt_ids(question.text, num_image_tokens)
        answer_id = builder.tokenizer.convert_tokens_to_ids(question.answer)
        rows.append(prompt + [answer_id])
        score_positions.append([len(prompt) - 1, len(prompt)])
        targets.append([answer_id, builder.eos_token_id])
    width = max(len(r) + 1 for r in rows)
    ids = torch.full((len(rows), width), builder.pad_token_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask, torch.tensor(score_positions), torch.tensor(targets)


@dataclass
class DevSet:
    """Held-out items (not the benchmark's) with their cached features, for monitoring only."""

    features: torch.Tensor  # [M, 576, D]
    questions: list[Question]
    patch_class: np.ndarray  # [M, 576], for the object-rich subsets of the short-sequence phases
    patch_centre: np.ndarray


@torch.no_grad()
def dev_accuracy(model, builder: PromptBuilder, dev: DevSet, num_tokens: int = NUM_PATCHES,
                 batch_size: int = 32) -> dict[str, float]:
    """Accuracy per category with `num_tokens` image tokens (object-rich subsets below 576, fixed seed)."""
    correct: dict[str, list[bool]] = {}
    pick = np.random.default_rng(0)
    for start in range(0, len(dev.questions), batch_size):
        questions = dev.questions[start : start + batch_size]
        rows = range(start, start + len(questions))
        kept = np.stack([keep_object_rich(dev.patch_class[i], dev.patch_centre[i], num_tokens, pick) for i in rows])
        features = dev.features[torch.tensor(list(rows))[:, None], torch.from_numpy(kept)].float()
        ids, mask, positions, targets = make_batch(builder, questions, num_tokens)
        logits = answer_logits(model, features, ids, len(builder.prefix), mask)
        predicted = logits[torch.arange(len(questions)), positions[:, 0]].argmax(-1)
        for question, guess, target in zip(questions, predicted, targets[:, 0]):
            correct.setdefault(question.category, []).append(bool(guess == target))
    return {k: float(np.mean(v)) for k, v in sorted(correct.items())}


def train_language_model(model, builder: PromptBuilder, pool_scenes: list[Scene], pool_features: torch.Tensor,
                         patch_class: np.ndarray, patch_centre: np.ndarray, config: LanguageStageConfig,
                         seed: int, dev: DevSet | None = None, log=print) -> None:
    torch.manual_seed(seed)
    rng, np_rng = random.Random(seed), np.random.default_rng(seed)
    params = list(model.model.language_model.parameters()) + list(model.model.multi_modal_projector.parameters()) \
        + list(model.lm_head.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    total_steps = sum(steps for steps, _, _ in config.curriculum)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, config.warmup, total_steps))
    image_start = len(builder.prefix)
    step, started, running = 0, time.time(), None
    model.train()
    for phase_steps, num_tokens, mix in config.curriculum:
        for _ in range(phase_steps):
            indices, questions = sample_pool_questions(pool_scenes, rng, config.batch_size, mix)
            kept = np.stack([keep_object_rich(patch_class[i], patch_centre[i], num_tokens, np_rng) for i in indices])
            features = pool_features[torch.tensor(indices)[:, None], torch.from_numpy(kept)].float()
            ids, mask, positions, targets = make_batch(builder, questions, num_tokens)
            logits = answer_logits(model, features, ids, image_start, mask)
            scored = logits[torch.arange(len(questions))[:, None], positions]
            loss = answer_loss(scored, targets)
            clipped_step(loss, optimizer, schedule, params)
            step += 1
            running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
            if dev is not None and (step % config.eval_every == 0 or step == total_steps):
                model.eval()
                accuracy = " ".join(f"{k}={v:.3f}" for k, v in dev_accuracy(model, builder, dev, num_tokens).items())
                model.train()
                log(f"[language] step {step}/{total_steps} K={num_tokens} {mix} loss={running:.3f} dev: {accuracy} "
                    f"({time.time() - started:.0f}s)")
    model.eval()
