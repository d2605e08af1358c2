"""MM-Vet: scored per sample by lmms-eval's GPT judge; without its API key every score would be 0.

lmms-eval's mmvet utils build the judge client when imported (and fail without a key), so they are
imported only once the key is known to be there. ``process_docs`` runs when the task is loaded, before
any generation: a missing key stops the run there (exit status 1), not after hours of generation.

The judge model is a task option, ``metadata.judge_model`` in scope_mmvet.yaml (the paper's gpt-4-0613),
not lmms-eval's MODEL_VERSION environment variable: it is recorded with the task config, and every
sample records the model that actually answered (``eval_model``). GPT-judged scores move with the judge.
"""

from __future__ import annotations

import functools
import os
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
    """The GPT judge named in scope_mmvet.yaml (metadata.judge_model)."""
    lines = (Path(__file__).with_name("scope_mmvet.yaml")).read_text().splitlines()
    config = yaml.safe_load("\n".join(line for line in lines if "!function" not in line))
    return config["metadata"]["judge_model"]


def _judged_by_task_option(doc: dict, results: list[str]) -> dict:
    # upstream's process_results asks get_chat_response without a model (its MODEL_VERSION default): for
    # the duration of the call, the module's function is the same one bound to the task's judge
    upstream = _upstream()
    stock = upstream.get_chat_response
    upstream.get_chat_response = functools.partial(stock, model=judge_model())
    try:
        return upstream.mmvet_process_results(doc, results)
    finally:
        upstream.get_chat_response = stock


process_results = _judged_by_task_option


def aggregate(results: list) -> float:
    return _upstream().mmvet_aggregate_results(results)
