"""Pruning options given as lmms-eval ``--model_args`` (``method=scope,budget=64,alpha=1.0``).

They are split off before the upstream wrapper sees the arguments (its ``__init__`` asserts it got no
unknown ones) and validated up front, so a typo fails before the model is loaded, naming the valid keys.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from scope_eval.adapters.families import visual_tokens_per_image
from scope_eval.checkpoints import looks_like_local_path
from scope_eval.pruning import METHODS, PruningError, method_options
from scope_eval.pruning.plan import BUDGET_POLICIES, PruningPlan

# lmms-eval adds these itself (create_from_arg_string); they are not model_args a user types.
_INJECTED = ("batch_size", "max_batch_size", "device")


def wrapper_parameters(wrapper_class: type) -> set[str]:
    """The keyword arguments an upstream lmms-eval wrapper's ``__init__`` accepts by name."""
    parameters = inspect.signature(wrapper_class.__init__).parameters.values()
    return {p.name for p in parameters if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def split_model_args(model_id: str, kwargs: dict[str, Any], wrapper_args: set[str]) -> tuple[PruningPlan, dict[str, Any]]:
    """(the validated pruning plan, the remaining arguments for the upstream wrapper). Raises PruningError.

    The plan is built here once, before the weights load, and handed to prune() as it is."""
    method = kwargs.get("method")
    if method is None:
        raise PruningError(
            f"{model_id} needs method=<name> in --model_args, one of: {', '.join(_method_names())} "
            "(method=none evaluates the unpruned model; the paper's setting is method=scope,budget=64)"
        )
    if not isinstance(method, str) or method not in _method_names():
        raise PruningError(f"{model_id}: unknown pruning method {method!r}; choose one of: {', '.join(_method_names())}")
    own_keys = {"method", "budget", "keep_ratio", "budget_policy"} | _all_method_option_names()
    upstream = {key: value for key, value in kwargs.items() if key not in own_keys}
    unknown = sorted(set(upstream) - wrapper_args - set(_INJECTED))
    if unknown:
        raise PruningError(
            f"{model_id}: unknown model_args {', '.join(unknown)}. Pruning arguments: method, budget or keep_ratio, budget_policy "
            f"({'|'.join(BUDGET_POLICIES)}) and the method's options ({_describe_options(method)}); "
            f"model arguments: {', '.join(sorted(wrapper_args))}"
        )
    check_checkpoint(model_id, upstream)
    options = {key: kwargs[key] for key in _all_method_option_names() if key in kwargs}
    # the budget's type and lower bound and the method's own limits (e.g. visionzip contextual <= budget)
    # now; the upper bound once prune() sees the loaded model
    plan = PruningPlan.build(
        method, _number(kwargs.get("budget")), kwargs.get("budget_policy", "per_crop"),
        keep_ratio=_number(kwargs.get("keep_ratio")), **options,
    )
    check_llm_schedule(model_id, plan.method, plan.budget, upstream.get("pretrained"))
    return plan, upstream


def check_llm_schedule(model_id: str, method: Any, budget: int | None, pretrained: Any) -> None:
    """In-LLM methods: a drop layer beyond the model's depth, or a budget the layers before the drop already
    exceed, fails here, before the weights load, from the checkpoint's config.json alone.

    Checked with one crop's visual tokens (the fewest an image brings): a LLaVA-NeXT image with more crops
    can still fail at run time under budget_unit=layer_average, with the same message. Skipped when the
    config cannot be read without loading (a hub id not in the local cache).
    """
    if getattr(method, "stage", "vision") != "llm" or budget is None or not isinstance(pretrained, str):
        return
    from transformers.utils import cached_file

    try:
        # the local cache only: the check must not wait on the network (a hub id not cached is skipped)
        path = cached_file(pretrained, "config.json", _raise_exceptions_for_missing_entries=False, local_files_only=True)
    except (OSError, ValueError):
        return
    if path is None:
        return
    config = json.loads(Path(path).read_text())
    text = config.get("text_config") or config  # llava-hf nests the LM; the original codebase does not
    vision = config.get("vision_config") or {}
    num_layers = text.get("num_hidden_layers")
    if not isinstance(num_layers, int):
        return
    per_crop = visual_tokens_per_image({"vision_config": vision})  # one crop: the fewest an image brings
    try:
        method.schedule(budget, per_crop, num_layers)
    except PruningError as error:
        raise PruningError(f"{model_id} ({pretrained}, {num_layers} decoder layers): {error}") from None


def check_checkpoint(model_id: str, upstream: dict[str, Any]) -> None:
    """A local checkpoint path that is not a folder, caught before anything loads: transformers would answer
    "Repo id must be in the form 'repo_name'..." (it falls back to reading the path as a hub id)."""
    pretrained = upstream.get("pretrained")
    if isinstance(pretrained, str) and looks_like_local_path(pretrained):
        if not Path(pretrained).expanduser().is_dir():
            raise PruningError(
                f"{model_id}: pretrained={pretrained} is not a folder; give the folder of a local checkpoint, "
                "or a hub id such as liuhaotian/llava-v1.5-7b (no ',' or '=' in either: lmms-eval splits model_args on them)"
            )


def _number(value: Any) -> Any:
    """Model args are text to a caller building them itself: "64" / "64.0" as a number, anything else as it
    is (PruningPlan.build says what is wrong with it). lmms-eval itself parses budget=64.0 to the float."""
    if isinstance(value, str):
        text = value.strip()
        for convert in (int, float):
            try:
                return convert(text)
            except ValueError:
                continue
    return value


def _method_names() -> list[str]:
    method_options("none")  # importing the registry's methods fills METHODS
    return sorted(METHODS)


def _all_method_option_names() -> set[str]:
    return {option for name in _method_names() for option in method_options(name)}


def _describe_options(method: str) -> str:
    options = method_options(method)
    return ", ".join(f"{key}={value!r}" for key, value in options.items()) or f"'{method}' has none"
