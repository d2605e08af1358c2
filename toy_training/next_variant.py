"""The toy LLaVA-NeXT: the trained toy LLaVA-1.5's tower, projector and language model, plus LLaVA-NeXT's
any-resolution input (base view + high-resolution crops, `image_newline` after each row of crop tokens),
optionally fine-tuned briefly on that input format.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch
from transformers import LlavaNextForConditionalGeneration

from scope_eval.toy.model import PATCH_SIZE, build_processor, toy_config
from scope_eval.toy.questions import Question
from scope_eval.lmms.tasks.toy.scenes import NON_SQUARE_SIZES, SceneOptions, generate_scene, render
from .train_language import sample_question
from .train_vision import clipped_step, warmup_cosine
from scope_eval.toy.vocab import SHORT_ANSWER_PROMPT


def next_from_llava15(model15, newline: torch.Tensor) -> LlavaNextForConditionalGeneration:
    """A LlavaNext model with `model15`'s weights; `newline` ([hidden]) initialises image_newline."""
    tokenizer = build_processor("llava15").tokenizer
    model = LlavaNextForConditionalGeneration(toy_config("llava_next", tokenizer))
    missing, unexpected = model.load_state_dict(model15.state_dict(), strict=False)
    if unexpected or [k for k in missing if "image_newline" not in k]:
        raise RuntimeError(f"LLaVA-1.5 -> NeXT weight copy incomplete: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        model.model.image_newline.copy_(newline)
    return model.eval()


@torch.no_grad()
def background_token(model15, features: torch.Tensor, patch_class) -> torch.Tensor:
    """The projected mean background patch: an image_newline the LM reads as 'nothing here'."""
    background = features[torch.from_numpy(patch_class == 0)].float().mean(0)
    return model15.model.multi_modal_projector(background[None])[0]


@dataclass
class NextStageConfig:
    steps: int = 120
    batch_size: int = 4
    lr: float = 3e-4
    warmup: int = 10
    log_every: int = 20


def _next_training_scene(rng: random.Random):
    if rng.random() < 0.5:
        width, height = rng.choice(NON_SQUARE_SIZES)
        options = SceneOptions(width=width, height=height, small_count=(2, 7), large_count=(0, 2),
                               distinct_classes=rng.random() < 0.7)
    else:
        options = SceneOptions(small_count=(1, 6), distinct_classes=rng.random() < 0.7, grid=PATCH_SIZE)
    return generate_scene(rng, options)


def finetune_next(model: LlavaNextForConditionalGeneration, config: NextStageConfig, seed: int, log=print) -> None:
    """Projector + LM (+ image_newline) on NeXT-format inputs, tower frozen; loss on answer and `</s>`."""
    processor = build_processor("llava_next")
    tokenizer = processor.tokenizer
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model.model.vision_tower.requires_grad_(False)
    params = [p for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, config.warmup, config.steps))
    started, running = time.time(), None
    model.train()
    for step in range(config.steps):
        scenes, questions = [], []
        while len(questions) < config.batch_size:
            scene = _next_training_scene(rng)
            question: Question | None = sample_question(scene, rng)
            if question is not None:
                scenes.append(scene)
                questions.append(question)
        texts = []
        for question in questions:
            messages = [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question.text + SHORT_ANSWER_PROMPT}]},
                {"role": "assistant", "content": [{"type": "text", "text": question.answer}]},
            ]
            texts.append(processor.apply_chat_template(messages))
        tokenizer.padding_side = "right"
        inputs = processor(images=[render(s) for s in scenes], text=texts, return_tensors="pt", padding=True)
        tokenizer.padding_side = "left"
        labels = torch.full_like(inputs.input_ids, -100)
        lengths = inputs.attention_mask.sum(1)
        rows = torch.arange(len(questions))
        labels[rows, lengths - 2] = inputs.input_ids[rows, lengths - 2]  # the answer word
        labels[rows, lengths - 1] = inputs.input_ids[rows, lengths - 1]  # </s>
        loss = model(**inputs, labels=labels).loss
        clipped_step(loss, optimizer, schedule, params)
        running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            log(f"[next] step {step + 1}/{config.steps} loss={running:.3f} ({time.time() - started:.0f}s)")
    model.eval()
