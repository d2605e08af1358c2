"""Pruning options given as lmms-eval ``--model_args`` (``method=scope,budget=64,alpha=1.0``).

They are split off before the upstream wrapper sees the arguments (its ``__init__`` asserts it got no
unknown ones) and validated up front, so a typo fails before the model is loaded, naming the valid keys.
"""

from __future__ import annotations

import inspect
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scope_eval.adapters.core import BUDGET_POLICIES, PruningPlan
from scope_eval.checkpoints import looks_like_local_path
from scope_eval.pruning import METHODS, PruningError, check_budget, method_options

# lmms-eval adds these itself (create_from_arg_string); they are not model_args a user types.
_INJECTED = ("batch_size", "max_batch_size", "device")


@dataclass(frozen=True)
class PruningSpec:
    """What to prune with, as the model_args asked for it."""

    method: str
    budget: int | None = None
    budget_policy: str = "per_crop"
    options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        parts = [f"method={self.method}"]
        if self.budget is not None:
            parts.append(f"budget={self.budget}")
        parts.append(f"budget_policy={self.budget_policy}")
        parts.extend(f"{key}={value}" for key, value in sorted(self.options.items()))
        return ", ".join(parts)


def wrapper_parameters(wrapper_class: type) -> set[str]:
    """The keyword arguments an upstream lmms-eval wrapper's ``__init__`` accepts by name."""
    parameters = inspect.signature(wrapper_class.__init__).parameters.values()
    return {p.name for p in parameters if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def split_model_args(model_id: str, kwargs: dict[str, Any], wrapper_args: set[str]) -> tuple[PruningSpec, dict[str, Any]]:
    """(pruning spec, the remaining arguments for the upstream wrapper). Raises PruningError."""
    method = kwargs.get("method")
    if method is None:
        raise PruningError(
            f"{model_id} needs method=<name> in --model_args, one of: {', '.join(_method_names())} "
            "(method=none evaluates the unpruned model; the paper's setting is method=scope,budget=64)"
        )
    if not isinstance(method, str) or method not in _method_names():
        raise PruningError(f"{model_id}: unknown pruning method {method!r}; choose one of: {', '.join(_method_names())}")
    own_keys = {"method", "budget", "budget_policy"} | _all_method_option_names()
    upstream = {key: value for key, value in kwargs.items() if key not in own_keys}
    unknown = sorted(set(upstream) - wrapper_args - set(_INJECTED))
    if unknown:
        raise PruningError(
            f"{model_id}: unknown model_args {', '.join(unknown)}. Pruning arguments: method, budget, budget_policy "
            f"({'|'.join(BUDGET_POLICIES)}) and the method's options ({_describe_options(method)}); "
            f"model arguments: {', '.join(sorted(wrapper_args))}"
        )
    check_checkpoint(model_id, upstream)
    options = {key: kwargs[key] for key in _all_method_option_names() if key in kwargs}
    budget = kwargs.get("budget")
    if budget is not None:  # the type and lower bound now; the upper bound once the model is loaded
        budget = parse_budget(budget)
    spec = PruningSpec(method, budget, kwargs.get("budget_policy", "per_crop"), options)
    # validates before any loading, the method's own limits included (e.g. visionzip contextual <= budget)
    plan = PruningPlan.build(spec.method, spec.budget, spec.budget_policy, **spec.options)
    check_llm_schedule(model_id, plan.method, spec.budget, upstream.get("pretrained"))
    return spec, upstream


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
        path = cached_file(pretrained, "config.json", _raise_exceptions_for_missing_entries=False)
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
    per_crop = (vision.get("image_size", 336) // vision.get("patch_size", 14)) ** 2
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


def parse_budget(value: Any) -> int:
    """A model_args budget as an int: 64, 64.0 or the text "64" / "64.0"; True, "true", 2.5 fail clearly.

    lmms-eval parses ``budget=64.0`` to the float 64.0 and ``budget=True`` to the bool True; a caller
    building the arguments itself may pass the text.
    """
    if isinstance(value, str):
        text = value.strip()
        for convert in (int, float):
            try:
                value = convert(text)
                break
            except ValueError:
                continue
    return check_budget(value, available=sys.maxsize)


def _method_names() -> list[str]:
    method_options("none")  # importing the registry's methods fills METHODS
    return sorted(METHODS)


def _all_method_option_names() -> set[str]:
    return {option for name in _method_names() for option in method_options(name)}


def _describe_options(method: str) -> str:
    options = method_options(method)
    return ", ".join(f"{key}={value!r}" for key, value in options.items()) or f"'{method}' has none"
