"""MM-Vet: scored per sample by lmms-eval's GPT judge; without its API key every score would be 0.

lmms-eval's mmvet utils build the judge client when imported (and fail without a key), so they are
imported only once the key is known to be there. ``process_docs`` runs when the task is loaded, before
any generation: a missing key stops the run there (exit status 1), not after hours of generation.

The judge model is a task option, ``metadata.judge_model`` (scope_mmvet.yaml ships the paper's gpt-4-0613),
not lmms-eval's MODEL_VERSION environment variable. The judge asked is the one of the task config in use
(a YAML that includes the shipped one and sets another judge gets that judge), read from the lmms-eval task
that calls ``process_results``; lmms-eval records that config with the results, and every sample records
the judge asked (``judge_model``) and the model that actually answered (``eval_model``). GPT-judged scores
move with the judge.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import yaml

from scope_eval.lmms.errors import RunAborted

# What lmms-eval's judge providers read, per API_TYPE (lmms-eval's own judge setting, default openai).
_JUDGE_CREDENTIALS = {"openai": ("OPENAI_API_KEY",), "azure": ("AZURE_API_KEY", "AZURE_ENDPOINT")}


def missing_judge_credentials() -> str | None:
    """Why the judge cannot score, or None when it can."""
    api_type = os.getenv("API_TYPE", "openai").lower()
    needed = _JUDGE_CREDENTIALS.get(api_type)
    if needed is None:
        return None if _upstream().server.is_available() else f"the {api_type} judge reports it is not available"
    missing = [name for name in needed if not os.getenv(name)]
    if not missing:
        return None
    return f"MM-Vet is scored by a GPT judge (API_TYPE={api_type}) and {', '.join(missing)} is not set"


def _upstream():
    from lmms_eval.tasks.mmvet import utils

    return utils


def process_docs(dataset):
    problem = missing_judge_credentials()
    if problem:
        raise RunAborted(f"{problem}; export it and run again (without it every answer would be scored 0)")
    return dataset


def doc_to_visual(doc: dict) -> list:
    return [] if doc["image"] is None else [doc["image"].convert("RGB")]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{doc['question']}{kwargs.get('post_prompt', '')}"


def judge_model() -> str:
    """The GPT judge named in the shipped scope_mmvet.yaml (metadata.judge_model)."""
    lines = (Path(__file__).with_name("scope_mmvet.yaml")).read_text().splitlines()
    config = yaml.safe_load("\n".join(line for line in lines if "!function" not in line))
    return config["metadata"]["judge_model"]


def judge_in_use(caller_depth: int = 6) -> str:
    """The judge of the task config lmms-eval is scoring with: ``metadata.judge_model`` of the task whose
    ``process_results`` called us (lmms-eval's ConfigurableTask.process_results is the caller; its
    process_results has no other channel to the config). Outside lmms-eval, the shipped YAML's judge."""
    frame = sys._getframe(1)
    for _ in range(caller_depth):
        frame = frame.f_back
        if frame is None:
            break
        config = getattr(frame.f_locals.get("self"), "config", None)
        if getattr(config, "process_results", None) is process_results:
            metadata = config.metadata if isinstance(config.metadata, dict) else {}
            if not metadata.get("judge_model"):
                raise RunAborted(
                    f"task {getattr(config, 'task', '?')} scores MM-Vet with a GPT judge but its config sets no "
                    "metadata.judge_model; set it in the task YAML (the paper's: gpt-4-0613)"
                )
            return str(metadata["judge_model"])
    return judge_model()


def _judged_by_task_option(doc: dict, results: list[str]) -> dict:
    # upstream's process_results asks get_chat_response without a model (its MODEL_VERSION default): for
    # the duration of the call, the module's function is the same one bound to the task's judge
    judge = judge_in_use()
    upstream = _upstream()
    stock = upstream.get_chat_response
    upstream.get_chat_response = functools.partial(stock, model=judge)
    try:
        scored = upstream.mmvet_process_results(doc, results)
    finally:
        upstream.get_chat_response = stock
    scored["gpt_eval_score"]["judge_model"] = judge  # asked; eval_model is the model that answered
    return scored


process_results = _judged_by_task_option


def aggregate(results: list) -> float:
    return _upstream().mmvet_aggregate_results(results)
