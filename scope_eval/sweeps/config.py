"""Sweep configs: one YAML per paper table, validated on load into frozen dataclasses.

Layering: dataclass defaults < YAML < command-line overrides (`with_overrides`). Every mistake is a
`SweepConfigError` naming the file, the field and the fix.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..checkpoints import looks_like_local_path, model_arg_problem
from . import methods as method_catalog
from .metrics import benchmarks_for_task
from .tasks import INCLUDE_DIR, known_tasks

BACKENDS: tuple[str, ...] = ("llava_scope", "llava_hf_scope", "qwen2_vl_scope", "qwen2_5_vl_scope")
PAPER_MODELS: tuple[str, ...] = ("llava-1.5-7b", "llava-1.5-13b", "llava-next-7b", "llava-next-13b", "qwen2-vl-7b")
# Families whose visual tokens per image depend on the image size (Qwen's dynamic resolution): their
# pruning budgets are keep_ratios, and the table's budget column is the share of tokens kept (1 = all).
DYNAMIC_FAMILIES: tuple[str, ...] = ("qwen2-vl", "qwen2.5-vl")
FAMILY_BACKENDS: dict[str, tuple[str, ...]] = {"qwen2-vl": ("qwen2_vl_scope",), "qwen2.5-vl": ("qwen2_5_vl_scope",)}
# model_args the runner writes itself from other fields; a config must not set them under model_args.
RUNNER_MODEL_ARGS: dict[str, str] = {
    "pretrained": "model.pretrained",
    "method": "methods",
    "budget": "budgets",
    "keep_ratio": "keep_ratios",
    "budget_policy": "budget_policy",
    "seed": "seed",
    "batch_size": "batch_size",
}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

Scalar = str | int | float | bool


class SweepConfigError(ValueError):
    """A sweep config that cannot run; the message says where and how to fix it."""


@dataclass(frozen=True)
class ModelSpec:
    name: str  # used in tables and as the top folder of the runs
    backend: str  # llava_scope (original LLaVA codebase) | llava_hf_scope (HF checkpoints)
    pretrained: str  # hub id or local folder
    family: str  # llava-1.5 | llava-next | qwen2-vl | qwen2.5-vl
    paper: str | None = None  # which model of the paper's tables this reproduces, if any
    model_args: dict[str, Scalar] = field(default_factory=dict)  # extra lmms-eval model_args

    @property
    def visual_tokens(self) -> int | None:
        """Unpruned visual tokens of the largest image: the adapters' number for this family (None for the
        dynamic-resolution families, where it depends on each image and on max_pixels)."""
        from ..adapters.families import family_visual_tokens

        return None if self.family in DYNAMIC_FAMILIES else family_visual_tokens(self.family)


class KeepRatio(float):
    """A budget given as the share of each image's own visual tokens kept (model arg keep_ratio), as opposed
    to an int budget of tokens; a cell's folder is r<ratio>, its table budget the ratio."""

    def __repr__(self) -> str:
        return f"keep_ratio={float(self):g}"


@dataclass(frozen=True)
class MethodSpec:
    name: str
    options: dict[str, Scalar] = field(default_factory=dict)
    label: str = ""  # folder and table name; defaults to the name plus the options

    @property
    def keeps_all(self) -> bool:
        return method_catalog.keeps_all(self.name)


ISOLATIONS = ("worker", "process")
# How num_processes > 1 share a sweep (runner.py): each cell's documents split over the processes, or whole
# cells handed out to independent one-process workers.
PARALLELS = ("documents", "cells")


@dataclass(frozen=True)
class SweepConfig:
    model: ModelSpec
    methods: tuple[MethodSpec, ...]
    budgets: tuple[int, ...]
    tasks: tuple[str, ...]
    keep_ratios: tuple[float, ...] = ()  # instead of budgets: each image keeps max(1, round(r * its tokens))
    description: str = ""
    budget_policy: str | None = None  # llava-next only; None = the plugin's default (per_crop)
    limit: int | float | None = None  # lmms-eval --limit: N docs, or a fraction in (0, 1)
    num_processes: int = 1
    # documents: every cell split over the num_processes ranks of one accelerate launch (data parallel);
    # cells: num_processes independent workers (one GPU each), each evaluating whole cells. See runner.py.
    parallel: str = "documents"
    batch_size: int = 1
    group_tasks: bool = False  # one lmms-eval process per (method, budget) for all tasks, see runner.py
    # worker: one process loads the model once and evaluates every cell on it; process: one lmms-eval
    # launch per cell (or per group_tasks group), for a method whose state cannot be restored. See runner.py.
    isolation: str = "worker"
    gen_kwargs: dict[str, Scalar] = field(default_factory=dict)
    seed: int = 0
    offline: bool = False
    # CPU threads of each lmms-eval process (OMP/MKL thread count of its torch); None = torch's default.
    # Tiny models on a shared CPU run far faster on one thread: the toy's vision tower took 29 ms on one
    # thread and 505 ms on two while another process kept the second core busy.
    cpu_threads: int | None = None
    data_dir: str | None = None  # local copies of the benchmarks, handed to the plugin
    include_path: str | None = None  # a folder of task YAMLs of one's own (lmms-eval's --include_path)
    # lmms-eval's own command-line options, passed through (seed, verbosity, wandb_args, ...): option -> value
    lmms_eval_args: dict[str, Scalar] = field(default_factory=dict)
    output: str = "./runs"
    source: str | None = None  # the YAML file it came from
    # (resolved path, as written) for every value written relative to the config file (./ or ../): the
    # runs use the resolved path, the records the written one (no machine's absolute path in results)
    written_paths: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def as_written(self, value: Any) -> Any:
        """``value`` (a string, or dicts / lists of them) with every resolved config-relative path put back
        as the config wrote it."""
        if isinstance(value, str):
            return dict(self.written_paths).get(value, value)
        if isinstance(value, dict):
            return {key: self.as_written(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.as_written(item) for item in value)
        return value


_TOP_KEYS = {f.name for f in dataclasses.fields(SweepConfig)} - {"source", "written_paths"}
_MODEL_KEYS = {f.name for f in dataclasses.fields(ModelSpec)}
_METHOD_KEYS = {f.name for f in dataclasses.fields(MethodSpec)}


def load_sweep(path: str | Path) -> SweepConfig:
    path = Path(path)
    if not path.is_file():
        raise SweepConfigError(f"sweep config '{path}' does not exist; pass a YAML such as configs/toy_llava15.yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SweepConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise SweepConfigError(f"{path}: a sweep config is a mapping with keys {', '.join(sorted(_TOP_KEYS))}")
    written: dict[str, str] = {}
    model = data.get("model")
    if isinstance(model, dict):
        checkpoint = _relative_to_config(path, model.get("pretrained"), written)
        if checkpoint != model.get("pretrained"):
            if not Path(checkpoint).is_dir():
                raise SweepConfigError(f"{path}: model.pretrained {model['pretrained']} -> {checkpoint} is not a folder")
            data["model"] = {**model, "pretrained": checkpoint}
    for key in PATH_KEYS:  # folders the config names: any relative path is relative to the config file
        if isinstance(data.get(key), str) and data[key] and not Path(data[key]).expanduser().is_absolute():
            resolved = str((path.parent / data[key]).resolve())
            written[resolved] = data[key]
            data[key] = resolved
    if isinstance(data.get("methods"), list):  # method options naming local files (cdpruner's text_encoder), likewise
        data["methods"] = [
            {**entry, "options": {key: _relative_to_config(path, value, written) for key, value in entry["options"].items()}}
            if isinstance(entry, dict) and isinstance(entry.get("options"), dict) else entry
            for entry in data["methods"]
        ]
    config = sweep_from_dict(data, where=str(path))
    return dataclasses.replace(config, written_paths=tuple(sorted(written.items())))


# Keys that always name local folders. One rule for a config's paths: relative means relative to the config
# file (model.pretrained and method options, which may also be hub ids, count as paths when they start with
# ./ or ../). Before this rule `output` was relative to the shell's folder; the shipped configs say ../runs.
PATH_KEYS = ("output", "include_path", "data_dir")


def _relative_to_config(path: Path, value: Any, written: dict[str, str]) -> Any:
    """A local path written relative (./ or ../) is relative to the config file, not to the cwd: made absolute
    (and noted in ``written``, resolved -> as written, for the records)."""
    if isinstance(value, str) and value.startswith(("./", "../")):
        resolved = str((path.parent / value).resolve())
        written[resolved] = value
        return resolved
    return value


def sweep_from_dict(data: Mapping[str, Any], where: str = "<config>") -> SweepConfig:
    _reject_unknown(data, _TOP_KEYS, where)
    for required in ("model", "methods", "tasks"):
        if required not in data:
            raise SweepConfigError(f"{where}: missing '{required}'")
    model = _parse_model(data["model"], f"{where}: model")
    methods = _parse_methods(data["methods"], f"{where}: methods")
    fields = {key: value for key, value in data.items() if key not in ("model", "methods")}
    fields["budgets"] = tuple(_as_list(data.get("budgets"), f"{where}: budgets", "budgets: [192, 128, 64]"))
    fields["keep_ratios"] = tuple(_as_list(data.get("keep_ratios"), f"{where}: keep_ratios", "keep_ratios: [0.25, 0.1]"))
    fields["tasks"] = tuple(_as_list(data["tasks"], f"{where}: tasks", "tasks: [gqa, mme]"))
    for key in ("gen_kwargs",):
        fields[key] = _as_mapping(data.get(key), f"{where}: {key}", "gen_kwargs: {max_new_tokens: 16}")
    fields["lmms_eval_args"] = _as_mapping(data.get("lmms_eval_args"), f"{where}: lmms_eval_args", "lmms_eval_args: {verbosity: DEBUG}")
    config = SweepConfig(model=model, methods=methods, source=where if where != "<config>" else None, **fields)
    validate(config, where)
    return config


def with_overrides(config: SweepConfig, **overrides: Any) -> SweepConfig:
    """Apply command-line overrides (None means 'not given') and validate again."""
    given = {key: value for key, value in overrides.items() if value is not None}
    if "pretrained" in given:
        checkpoint = normalise_checkpoint(given.pop("pretrained"))
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, pretrained=checkpoint))
    if "methods" in given:
        given["methods"] = select_methods(config, given["methods"])
    if "keep_ratios" in given and "budgets" not in given:  # ratios given on the command line replace the budgets
        given["budgets"] = ()
    elif "budgets" in given and "keep_ratios" not in given:
        given["keep_ratios"] = ()
    if given.get("isolation") == "process" and "parallel" not in given:  # one lmms-eval launch per cell: only its
        given["parallel"] = "documents"  # own data parallelism applies, whatever the config file chose
    if "include_path" in given:  # from the command line: relative to the shell's folder
        given["include_path"] = str(Path(given["include_path"]).expanduser().resolve())
    for key in ("budgets", "keep_ratios", "tasks"):
        if key in given:
            given[key] = tuple(given[key])
    config = dataclasses.replace(config, **given)
    validate(config, "command line")
    return config


def select_methods(config: SweepConfig, wanted: list[str]) -> tuple[MethodSpec, ...]:
    """Methods chosen on the command line: the config's entries with that name or label keep their
    options; a registered method the config does not list runs with its default options."""
    listed = [m for m in config.methods if m.name in wanted or m.label in wanted]  # in the config's order
    unlisted = [
        _parse_method(name, f"--method {name}") for name in wanted if not any(name in (m.name, m.label) for m in listed)
    ]
    return tuple(listed + unlisted)


def validate(config: SweepConfig, where: str) -> None:
    model = config.model
    if not config.methods:
        raise SweepConfigError(f"{where}: methods is empty; list at least one, e.g. [none, scope]")
    labels = [m.label for m in config.methods]
    duplicated = sorted({label for label in labels if labels.count(label) > 1})
    if duplicated:
        raise SweepConfigError(f"{where}: methods listed twice: {', '.join(duplicated)}; give variants a distinct 'label'")
    _check_pretrained(model, where)
    if config.budget_policy is not None and model.family != "llava-next":
        raise SweepConfigError(f"{where}: budget_policy applies to llava-next models only; remove it for {model.family}")
    if config.budgets and config.keep_ratios:
        raise SweepConfigError(f"{where}: give budgets (tokens per image) or keep_ratios (share of each image's tokens), not both")
    if model.family in DYNAMIC_FAMILIES and config.budgets:
        raise SweepConfigError(
            f"{where}: {model.family} images bring a number of visual tokens that depends on their size; give keep_ratios "
            f"(e.g. keep_ratios: [0.25, 0.1]) instead of budgets"
        )
    if model.family in FAMILY_BACKENDS and model.backend not in FAMILY_BACKENDS[model.family]:
        raise SweepConfigError(f"{where}: family {model.family} runs on backend {' or '.join(FAMILY_BACKENDS[model.family])}, not {model.backend}")
    if model.family not in FAMILY_BACKENDS and model.backend not in ("llava_scope", "llava_hf_scope"):
        raise SweepConfigError(f"{where}: backend {model.backend} does not run {model.family} models")
    if any(not m.keeps_all for m in config.methods) and not (config.budgets or config.keep_ratios):
        raise SweepConfigError(f"{where}: budgets is empty but pruning methods are listed; add e.g. budgets: [192, 128, 64]")
    _reject_duplicates("budgets", config.budgets, where)
    _reject_duplicates("keep_ratios", config.keep_ratios, where)
    for ratio in config.keep_ratios:
        if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not 0.0 < float(ratio) <= 1.0:
            raise SweepConfigError(f"{where}: keep_ratios holds {ratio!r}; each must be a share in (0, 1], e.g. 0.25")
    for method in config.methods:  # every cell's plan, validated as the run will build it, before any run
        for ratio in () if method.keeps_all else config.keep_ratios:
            problem = method_catalog.check_ratio_plan(method.name, method.options, float(ratio))
            if problem:
                raise SweepConfigError(f"{where}: method {method.label} at keep_ratio {ratio!r}: {problem}")
        for budget in () if method.keeps_all else config.budgets:
            problem = method_catalog.check_plan(
                method.name, method.options, budget, config.budget_policy or "per_crop", model.visual_tokens, model.backend, model.pretrained
            )
            if problem:
                raise SweepConfigError(f"{where}: method {method.label} at budget {budget!r}: {problem}")
    if config.include_path is not None and not Path(config.include_path).is_dir():
        raise SweepConfigError(f"{where}: include_path {config.include_path} is not a folder of task YAMLs (relative paths are relative to the config file)")
    if config.include_path is not None and config.data_dir is not None:
        raise SweepConfigError(f"{where}: include_path and data_dir cannot be combined yet; sweep your own tasks and the local paper copies separately")
    _check_lmms_eval_args(config.lmms_eval_args, where)
    _check_tasks(config.tasks, where, own_task_dirs(config))
    if config.limit is not None:
        limit = config.limit
        whole = isinstance(limit, numbers.Integral) and not isinstance(limit, bool) and limit >= 1
        fraction = isinstance(limit, float) and 0.0 < limit < 1.0
        if not (whole or fraction):
            raise SweepConfigError(f"{where}: limit must be a number of documents >= 1 or a fraction in (0, 1), got {limit!r}")
    if not _positive_int(config.num_processes):
        raise SweepConfigError(f"{where}: num_processes must be a whole number >= 1, got {config.num_processes!r}")
    if config.batch_size != 1:
        raise SweepConfigError(
            f"{where}: batch_size must be 1 for LLaVA models (the paper's protocol; lmms-eval's LLaVA wrappers assume it), "
            f"got {config.batch_size!r}"
        )
    if isinstance(config.seed, bool) or not isinstance(config.seed, numbers.Integral) or config.seed < 0:
        raise SweepConfigError(f"{where}: seed must be a whole number >= 0, got {config.seed!r}")
    for key, value in config.gen_kwargs.items():
        _check_arg_value(f"{where}: gen_kwargs.{key}", value)
    if config.cpu_threads is not None and (
        isinstance(config.cpu_threads, bool) or not isinstance(config.cpu_threads, numbers.Integral) or config.cpu_threads < 1
    ):
        raise SweepConfigError(f"{where}: cpu_threads must be a whole number >= 1 (or left out), got {config.cpu_threads!r}")
    if config.isolation not in ISOLATIONS:
        raise SweepConfigError(f"{where}: isolation must be one of {', '.join(ISOLATIONS)}, got {config.isolation!r} "
                               "(worker: one model load per sweep; process: one lmms-eval launch per cell)")  # fmt: skip
    if config.parallel not in PARALLELS:
        raise SweepConfigError(f"{where}: parallel must be one of {', '.join(PARALLELS)}, got {config.parallel!r} "
                               "(documents: each cell split over the processes; cells: whole cells spread over them)")  # fmt: skip
    if config.parallel == "cells" and config.isolation != "worker":
        raise SweepConfigError(f"{where}: parallel: cells needs isolation: worker (whole cells are handed to sweep workers); "
                               "with isolation: process use parallel: documents")  # fmt: skip
    for flag in ("offline", "group_tasks"):
        if not isinstance(getattr(config, flag), bool):
            raise SweepConfigError(f"{where}: {flag} must be true or false, got {getattr(config, flag)!r}")
    if config.data_dir is not None:
        _check_data_dir(config, where)
    if not isinstance(config.output, str) or not config.output:
        raise SweepConfigError(f"{where}: output must be a folder path such as ./runs")


def method_label(name: str, options: Mapping[str, Scalar]) -> str:
    parts = [name] + [f"{key}{_format_value(value)}" for key, value in sorted(options.items())]
    return "_".join(parts)


def _parse_model(data: Any, where: str) -> ModelSpec:
    if not isinstance(data, dict):
        raise SweepConfigError(f"{where}: must be a mapping with keys {', '.join(sorted(_MODEL_KEYS))}")
    _reject_unknown(data, _MODEL_KEYS, where)
    for required in ("name", "backend", "pretrained", "family"):
        if not isinstance(data.get(required), str) or not data[required]:
            raise SweepConfigError(f"{where}: '{required}' is required (a string)")
    if not _SAFE_NAME.match(data["name"]):
        raise SweepConfigError(f"{where}: name '{data['name']}' must use only letters, digits, '.', '_' and '-' (it names folders)")
    if data["backend"] not in BACKENDS:
        raise SweepConfigError(f"{where}: backend '{data['backend']}' is not one of {', '.join(BACKENDS)}")
    from ..adapters.families import FAMILIES

    if data["family"] not in FAMILIES and data["family"] not in DYNAMIC_FAMILIES:
        raise SweepConfigError(f"{where}: family '{data['family']}' is not one of {', '.join([*FAMILIES, *DYNAMIC_FAMILIES])}")
    if data.get("paper") is not None and data["paper"] not in PAPER_MODELS:
        raise SweepConfigError(f"{where}: paper '{data['paper']}' is not one of {', '.join(PAPER_MODELS)} (or leave it out)")
    model_args = _as_mapping(data.get("model_args"), f"{where}: model_args", "model_args: {device: cpu, dtype: float32}")
    for key, value in model_args.items():
        if key in RUNNER_MODEL_ARGS:
            raise SweepConfigError(f"{where}: model_args.{key} is set by the runner; use '{RUNNER_MODEL_ARGS[key]}' instead")
        _check_arg_value(f"{where}: model_args.{key}", value)
    if model_args.get("device_map") == "cpu" and "device" not in model_args:
        raise SweepConfigError(
            f"{where}: model_args.device_map is cpu but device is not set, so lmms-eval's wrapper still asks for a "
            f"GPU; add device: cpu to model_args"
        )
    return ModelSpec(**{**data, "pretrained": normalise_checkpoint(data["pretrained"]), "model_args": model_args})


def _parse_methods(data: Any, where: str) -> tuple[MethodSpec, ...]:
    if not isinstance(data, list):
        raise SweepConfigError(f"{where}: must be a list, e.g. [none, scope, {{name: scope, options: {{alpha: 0.5}}}}]")
    return tuple(_parse_method(entry, f"{where}[{index}]") for index, entry in enumerate(data))


def _parse_method(entry: Any, where: str) -> MethodSpec:
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise SweepConfigError(f"{where}: a method is a name or a mapping {{name, options, label}}, got {entry!r}")
    _reject_unknown(entry, _METHOD_KEYS, where)
    name = entry["name"]
    options = _as_mapping(entry.get("options"), f"{where}: options", "options: {alpha: 0.5}")
    options = {key: _list_as_model_arg(value) for key, value in options.items()}
    problem = method_catalog.check(name, options)
    if problem:
        raise SweepConfigError(f"{where}: {problem}")
    for key, value in options.items():
        _check_arg_value(f"{where}: options.{key}", value)
    if entry.get("label") is None and not _SAFE_NAME.match(method_label(name, options)):
        shown = ", ".join(f"{key}={value}" for key, value in options.items())
        raise SweepConfigError(
            f"{where}: {name} with {shown} needs a name for its folder and table row, and its options cannot make one "
            f"(only letters, digits, '.', '_' and '-'); add `label: <name>` to this entry, e.g. label: {name}"
        )
    label = entry.get("label") or method_label(name, options)
    if not isinstance(label, str) or not _SAFE_NAME.match(label):
        raise SweepConfigError(f"{where}: label {label!r} must use only letters, digits, '.', '_' and '-' (it names folders)")
    return MethodSpec(name=name, options=options, label=label)


def _list_as_model_arg(value: Any) -> Any:
    """A YAML list of whole numbers (pdrop ``layers: [2, 8, 16]``) in the one form lmms-eval model_args carry
    a list in, ``2-8-16`` (a comma would split the argument); anything else as it is."""
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return "-".join(str(v) for v in value)
    return value


def normalise_checkpoint(pretrained: str) -> str:
    """A local checkpoint folder as its canonical absolute path (no trailing '/', symlinks resolved), so
    that one folder written two ways is one model; a hub id is returned as given."""
    if not isinstance(pretrained, str) or not pretrained:
        return pretrained
    folder = Path(pretrained).expanduser()
    return str(folder.resolve()) if folder.is_dir() else pretrained


def _check_pretrained(model: ModelSpec, where: str) -> None:
    pretrained = model.pretrained
    problem = model_arg_problem(pretrained)
    if problem:
        raise SweepConfigError(
            f"{where}: model.pretrained {pretrained!r} {problem}; rename or symlink the checkpoint folder to a path without it"
        )
    if looks_like_local_path(pretrained) and not Path(pretrained).expanduser().is_dir():
        raise SweepConfigError(
            f"{where}: model.pretrained {pretrained} is not a folder; give an existing checkpoint folder or a hub id "
            f"such as liuhaotian/llava-v1.5-7b"
        )
    tokens = None if model.visual_tokens is None else _checkpoint_visual_tokens(Path(pretrained).expanduser() / "config.json")
    if tokens is not None and tokens != model.visual_tokens:
        raise SweepConfigError(
            f"{where}: the checkpoint {pretrained} gives {tokens} visual tokens per image, but family {model.family} "
            f"has {model.visual_tokens}; set model.family to the checkpoint's"
        )


def _checkpoint_visual_tokens(config_file: Path) -> int | None:
    """Unpruned visual tokens of a local LLaVA checkpoint, from its config.json (None when unknowable)."""
    from ..adapters.families import visual_tokens_per_image

    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or "vision_config" not in config and "mm_vision_tower" not in config:
        return None
    try:
        return visual_tokens_per_image(config)
    except (ValueError, TypeError, SyntaxError):
        return None


def _as_list(value: Any, where: str, example: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SweepConfigError(f"{where}: must be a list, got {value!r}; write e.g. {example}")
    return value


def _as_mapping(value: Any, where: str, example: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SweepConfigError(f"{where}: must be a mapping of name: value, got {value!r}; write e.g. {example}")
    return dict(value)


def own_task_dirs(config: SweepConfig) -> tuple[Path, ...]:
    """The user's folders of task YAMLs (include_path), searched beside the plugin's own tasks."""
    return (Path(config.include_path),) if config.include_path else ()


def _check_tasks(tasks: Any, where: str, include_dirs: tuple[Path, ...] = ()) -> None:
    if not isinstance(tasks, tuple) or not tasks or not all(isinstance(t, str) for t in tasks):
        raise SweepConfigError(f"{where}: tasks must be a non-empty list of lmms-eval task names")
    known = known_tasks(INCLUDE_DIR, include_dirs)
    unknown = [task for task in tasks if task not in known]
    if unknown:
        searched = ", ".join(str(d) for d in (INCLUDE_DIR, *include_dirs))
        raise SweepConfigError(
            f"{where}: unknown task(s) {', '.join(unknown)}; known: {', '.join(sorted(known))} "
            f"(tasks of {searched} included; a folder of your own task YAMLs goes in include_path: or --include-path)"
        )
    _reject_duplicates("tasks", tasks, where)
    for task in tasks:
        if known[task].subtasks:
            raise SweepConfigError(
                f"{where}: '{task}' is a group; a cell is one task, so list its tasks instead: {', '.join(known[task].subtasks)}"
            )
        try:
            benchmarks_for_task(task, known[task].metrics, known[task].meta)
        except KeyError as error:
            raise SweepConfigError(f"{where}: {error.args[0]}; fix the task YAML's metric_list or metadata") from None


def _check_data_dir(config: SweepConfig, where: str) -> None:
    if not Path(config.data_dir).is_dir():
        raise SweepConfigError(f"{where}: data_dir {config.data_dir} is not a folder; it holds the local benchmark copies (DATA/MME, ...)")
    known = known_tasks(INCLUDE_DIR)
    hub_only = [task for task in config.tasks if known[task].yaml_path is None]
    if hub_only:
        raise SweepConfigError(
            f"{where}: {', '.join(hub_only)} are lmms-eval's built-in tasks, which always read the hub; "
            f"with data_dir use the plugin's scope_<name> tasks (e.g. scope_gqa), which it points at the local copies"
        )


# lmms-eval options the runner sets itself (from other fields), and those that change the numbers
RUNNER_LMMS_EVAL_ARGS = {
    "model": "model.backend", "model_args": "model.model_args", "tasks": "tasks", "batch_size": "batch_size",
    "log_samples": "(always on)", "output_path": "output", "include_path": "include_path", "limit": "limit",
    "gen_kwargs": "gen_kwargs",
}  # fmt: skip
RESULT_NEUTRAL_LMMS_EVAL_ARGS = frozenset({"verbosity", "wandb_args", "hf_hub_log_args", "wandb_log_samples", "show_config", "timezone"})


def _check_lmms_eval_args(args: Mapping[str, Any], where: str) -> None:
    for key, value in args.items():
        name = str(key)
        if name.lstrip("-") in RUNNER_LMMS_EVAL_ARGS:
            name = name.lstrip("-")
            raise SweepConfigError(f"{where}: lmms_eval_args.{key} is set by the runner; use '{RUNNER_LMMS_EVAL_ARGS[name]}' instead")
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise SweepConfigError(f"{where}: lmms_eval_args.{key}: write lmms-eval's option name without dashes, e.g. verbosity")
        if not isinstance(value, (str, int, float, bool)):
            raise SweepConfigError(f"{where}: lmms_eval_args.{key} must be a single value (string, number or boolean), got {value!r}")


def _reject_duplicates(name: str, values: tuple[Any, ...], where: str) -> None:
    if len(set(values)) != len(values):
        raise SweepConfigError(f"{where}: {name} {list(values)} contain duplicates")


def _check_arg_value(where: str, value: Any) -> None:
    if not isinstance(value, (str, int, float, bool)):
        raise SweepConfigError(f"{where}: must be a single value (string, number or boolean), got {value!r}")
    problem = model_arg_problem(value) if isinstance(value, str) else None
    if problem:
        raise SweepConfigError(f"{where}: {value!r} {problem}; give a value without it (a path: rename or symlink it)")


def _reject_unknown(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SweepConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _positive_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def _format_value(value: Scalar) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
