"""Train the toy LLaVA from scratch on generated scenes (CPU, seeded, reproducible).

    python -m toy_training.train --work-dir runs/toy_train            # every stage, then export
    python -m toy_training.train --work-dir runs/toy_train --stage language   # reuse a trained tower

Stage 1 trains the vision tower (train_vision.py). Stage 2 freezes it, caches layer -2 features of the
pool once, and trains projector + language model on questions about the pool (train_language.py).
Stage "next" turns the result into the LLaVA-NeXT toy and fine-tunes it on any-resolution inputs
(next_variant.py). Artifacts of each stage go to --work-dir so a later stage can be re-run alone;
stage "export" writes float16 `save_pretrained` directories (default: the shipped scope_eval/toy/weights/).
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from scope_eval.toy.benchmark import build_count, build_gqa, build_mme, build_pope
from scope_eval.toy.model import TOY_KINDS, WEIGHTS_DIR, build_processor, build_toy_llava
from .next_variant import NextStageConfig, background_token, finetune_next, next_from_llava15
from scope_eval.toy.questions import Question
from scope_eval.lmms.tasks.toy.scenes import Scene, render
from .train_language import DevSet, LanguageStageConfig, PromptBuilder, featurize, train_language_model
from .train_vision import VisionStageConfig, train_vision_tower
from .training_data import ScenePool, build_pool, patch_targets

DEV_SEED = 77  # the monitoring set; the benchmark files use other seeds (benchmark.TOY_TASKS)


def log_to(path: Path):
    def log(message: str) -> None:
        print(message, flush=True)
        with path.open("a") as handle:
            handle.write(message + "\n")

    return log


def start_run(args: argparse.Namespace):
    """Threads, the work folder and its train.log (the arguments as its first line); returns the logger."""
    torch.set_num_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    log = log_to(args.work_dir / "train.log")
    log(f"[args] {json.dumps({k: str(v) for k, v in vars(args).items()})}")
    return log


def load_or_build_pool(work_dir: Path, size: int, seed: int, log) -> ScenePool:
    cache = work_dir / f"pool_{size}_seed{seed}.pkl"
    if cache.exists():
        with cache.open("rb") as handle:
            return pickle.load(handle)
    started = time.time()
    pool = build_pool(size, seed)
    with cache.open("wb") as handle:
        pickle.dump(pool, handle, protocol=pickle.HIGHEST_PROTOCOL)
    log(f"[data] pool of {size} scenes (seed {seed}) in {time.time() - started:.0f}s")
    return pool


def build_dev_set(tower, seed: int) -> DevSet:
    """Items drawn like the benchmark's, from another seed, so monitoring never touches the test files."""
    items = []
    for offset, (name, builder) in enumerate((("pope", build_pope), ("gqa", build_gqa), ("count", build_count),
                                              ("mme", build_mme))):
        built = builder(random.Random(seed + offset))
        # whole pairs (POPE/MME put an image's yes and no question next to each other): half of the pairs
        items += [(name, item) for index, item in enumerate(built) if (index // 2) % 2 == 0]
    scenes = [Scene.from_dict(item["scene"]) for _, item in items]
    images = np.stack([np.asarray(render(scene)) for scene in scenes])
    questions = [Question(item["question"], item["answer"], name) for name, item in items]
    targets = [patch_targets(scene) for scene in scenes]
    return DevSet(featurize(tower, images), questions, np.stack([t[0] for t in targets]), np.stack([t[1] for t in targets]))


def load_or_featurize(work_dir: Path, tower, pool: ScenePool, count: int, log) -> torch.Tensor:
    """Layer -2 features of the first `count` pool images (the language stage only asks about those)."""
    cache = work_dir / f"pool_features_{count}.pt"
    if cache.exists():
        return torch.load(cache)
    started = time.time()
    features = featurize(tower, pool.images[:count])
    torch.save(features, cache)
    log(f"[language] featurized {count} pool images in {time.time() - started:.0f}s")
    return features


def parse_phase(text: str) -> tuple[int, int, str]:
    try:
        size, mix = text.split(":") if ":" in text else (text, "all")
        steps, tokens = size.split("x")
        return int(steps), int(tokens), mix
    except ValueError:
        raise SystemExit(f"bad --phases entry {text!r}; expected STEPSxTOKENS:MIX, e.g. 1000x48:existence") from None


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m toy_training.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, required=True, help="stage artifacts and logs go here")
    parser.add_argument("--stage", choices=("all", "vision", "language", "next", "export"), default="all")
    parser.add_argument("--seed", type=int, default=0, help="model initialisation and batch order")
    parser.add_argument("--data-seed", type=int, default=1000, help="seed of the training scene pool")
    parser.add_argument("--pool-size", type=int, default=5000)
    parser.add_argument("--language-pool-size", type=int, default=3000,
                        help="how many pool images the language stage featurizes and asks about")
    parser.add_argument("--vision-steps", type=int, default=VisionStageConfig.steps)
    parser.add_argument("--vision-batch", type=int, default=VisionStageConfig.batch_size)
    parser.add_argument("--phases", default=",".join(f"{s}x{k}:{m}" for s, k, m in LanguageStageConfig().curriculum),
                        help="language-stage curriculum: comma-separated STEPSxTOKENS:MIX (MIX: attribute|existence|all)")
    parser.add_argument("--lr", type=float, default=LanguageStageConfig.lr)
    parser.add_argument("--warmup", type=int, default=LanguageStageConfig.warmup)
    parser.add_argument("--continue-language", action="store_true",
                        help="start the language stage from <work-dir>/llava15 instead of a fresh initialisation")
    parser.add_argument("--next-steps", type=int, default=NextStageConfig.steps,
                        help="fine-tuning steps of the LLaVA-NeXT toy on any-resolution inputs (0: none)")
    parser.add_argument("--export-dir", type=Path, default=WEIGHTS_DIR,
                        help="where --stage export/all writes the float16 save_pretrained dirs")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; on a shared CPU more than 1 can be many times slower (OpenMP waits)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    log = start_run(args)
    pool = load_or_build_pool(args.work_dir, args.pool_size, args.data_seed, log)
    model, processor = build_toy_llava("llava15", seed=args.seed)
    tower_path = args.work_dir / "vision_tower.pt"
    if args.stage in ("all", "vision"):
        config = VisionStageConfig(steps=args.vision_steps, batch_size=args.vision_batch)
        log(f"[vision] config {asdict(config)}")
        train_vision_tower(model.model.vision_tower, pool, config, seed=args.seed, log=log)
        torch.save(model.model.vision_tower.state_dict(), tower_path)
    if args.stage in ("all", "language"):
        if args.continue_language:
            model = AutoModelForImageTextToText.from_pretrained(args.work_dir / "llava15", dtype=torch.float32)
            log(f"[language] continuing from {args.work_dir / 'llava15'}")
        model.model.vision_tower.load_state_dict(torch.load(tower_path))
        model.model.vision_tower.requires_grad_(False)
        features = load_or_featurize(args.work_dir, model.model.vision_tower, pool, args.language_pool_size, log)
        dev = build_dev_set(model.model.vision_tower, DEV_SEED)
        builder = PromptBuilder(processor.tokenizer)
        builder.check_against(processor, dev.questions[0].text)
        phases = [parse_phase(phase) for phase in args.phases.split(",")]
        config = LanguageStageConfig(curriculum=phases, lr=args.lr, warmup=args.warmup)
        log(f"[language] config {asdict(config)}")
        count = len(features)
        train_language_model(model, builder, pool.scenes[:count], features, pool.patch_class[:count],
                             pool.patch_centre[:count], config,
                             seed=args.seed, dev=dev, log=log)
        model.save_pretrained(args.work_dir / "llava15")
        processor.save_pretrained(args.work_dir / "llava15")
        log(f"[language] saved {args.work_dir / 'llava15'}")
    if args.stage in ("all", "next"):
        train_next(args, pool, log)
    if args.stage in ("all", "export"):
        for kind in TOY_KINDS:
            export_float16(args.work_dir / kind, args.export_dir / kind)
            log(f"[export] {args.work_dir / kind} -> {args.export_dir / kind}")
    return 0


def train_next(args: argparse.Namespace, pool: ScenePool, log) -> None:
    model15 = AutoModelForImageTextToText.from_pretrained(args.work_dir / "llava15", dtype=torch.float32)
    features = torch.load(args.work_dir / f"pool_features_{args.language_pool_size}.pt")
    newline = background_token(model15, features[:200], pool.patch_class[:200])
    model = next_from_llava15(model15, newline)
    if args.next_steps > 0:
        config = NextStageConfig(steps=args.next_steps)
        log(f"[next] config {asdict(config)}")
        finetune_next(model, config, seed=args.seed, log=log)
    model.save_pretrained(args.work_dir / "llava_next")
    build_processor("llava_next").save_pretrained(args.work_dir / "llava_next")
    log(f"[next] saved {args.work_dir / 'llava_next'}")


def export_float16(source: Path, target: Path) -> None:
    """The shipped copy: float16 tensors (half the bytes) under a config that declares float32, so a
    plain from_pretrained (dtype "auto" or unset) upcasts to float32, which CPUs compute well."""
    model = AutoModelForImageTextToText.from_pretrained(source, dtype=torch.float32)
    model.to(torch.float16).save_pretrained(target)
    AutoProcessor.from_pretrained(source).save_pretrained(target)
    config_path = target / "config.json"
    config = json.loads(config_path.read_text())
    for section in (config, config.get("text_config", {}), config.get("vision_config", {})):
        if "dtype" in section:
            section["dtype"] = "float32"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    # Loading records where the files came from; a shipped copy must not claim to be "local" anywhere else.
    tokenizer_path = target / "tokenizer_config.json"
    tokenizer_config = json.loads(tokenizer_path.read_text())
    for key in ("is_local", "local_files_only"):
        tokenizer_config.pop(key, None)
    tokenizer_path.write_text(json.dumps(tokenizer_config, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
