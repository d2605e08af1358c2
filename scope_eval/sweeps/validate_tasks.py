"""Check every task YAML of an include directory the way lmms-eval will load it.

Per YAML: the full load (``include:`` chains, ``!function`` targets imported), the schema (lmms-eval's
``TaskConfig``), the fields a generate task needs, and the data: local files present, or a hub
dataset (reported, and looked up only with ``check_hub``). Also: duplicate task names, and names that
a built-in lmms-eval task already has (lmms-eval would silently run its own).
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

_LOCAL_BUILDERS = {"parquet", "json", "csv", "arrow", "text", "pandas"}
_OUTPUT_TYPES = {"generate_until", "generate_until_multi_round", "loglikelihood", "multiple_choice"}


@dataclass
class TaskCheck:
    path: Path
    name: str = "?"
    kind: str = "task"  # task | group | python task | skipped
    data: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_directory(directory: Path, check_hub: bool = False) -> list[TaskCheck]:
    directory = Path(directory)
    if not directory.is_dir():
        return [TaskCheck(directory, problems=[f"{directory} is not a directory"])]
    checks = [validate_yaml(path, check_hub) for path in sorted(directory.rglob("*.yaml")) if "__pycache__" not in path.parts]
    _flag_name_clashes(checks)
    return checks


def validate_yaml(path: Path, check_hub: bool = False) -> TaskCheck:
    from lmms_eval import utils as lmms_utils

    check = TaskCheck(path)
    try:
        outline = lmms_utils.load_yaml_config(str(path), mode="simple")
    except Exception as error:  # noqa: BLE001 - any load failure is the finding
        check.problems.append(f"cannot read YAML: {type(error).__name__}: {error}")
        return check
    if "class" in outline:
        check.kind, check.name = "python task", str(outline.get("task"))
    elif isinstance(outline.get("task"), list):
        check.kind, check.name = "group", str(outline.get("group"))
    elif isinstance(outline.get("task"), str):
        check.name = outline["task"]
    else:
        check.kind, check.data = "skipped", "no task: key (lmms-eval ignores this file)"
        return check
    try:
        config = lmms_utils.load_yaml_config(str(path), mode="full")
    except Exception as error:  # noqa: BLE001
        check.problems.append(f"!function target not importable: {type(error).__name__}: {_cause(error)}")
        return check
    if check.kind == "task":
        _check_schema(config, check)
        check.data = _check_data(config, check, check_hub)
    return check


def _check_schema(config: dict, check: TaskCheck) -> None:
    from lmms_eval.api.task import TaskConfig

    try:
        TaskConfig(**config)
    except TypeError as error:
        check.problems.append(f"not a valid lmms-eval task config: {error}")
        return
    if config.get("output_type", "generate_until") not in _OUTPUT_TYPES:
        check.problems.append(f"output_type {config.get('output_type')!r} is not one of {sorted(_OUTPUT_TYPES)}")
    if not (config.get("test_split") or config.get("validation_split")):
        check.problems.append("no test_split or validation_split: lmms-eval would have no documents to evaluate")
    if config.get("doc_to_text") is None and config.get("doc_to_messages") is None:
        check.problems.append("no doc_to_text (or doc_to_messages): the model would get no prompt")
    metrics = config.get("metric_list")
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, dict) and "metric" in m for m in metrics):
        check.problems.append("metric_list must be a non-empty list of {metric: ..., aggregation: ...} entries")


def _check_data(config: dict, check: TaskCheck, check_hub: bool) -> str:
    path = config.get("dataset_path")
    kwargs = config.get("dataset_kwargs") or {}
    split = config.get("test_split") or config.get("validation_split")
    if not path:
        check.problems.append("no dataset_path")
        return "none"
    extra = _local_sources_in_kwargs(config, check)
    if kwargs.get("load_from_disk"):
        _check_saved(Path(path), split, check)
        return f"save_to_disk {path}" + extra
    if path in _LOCAL_BUILDERS:
        files = _data_files(kwargs.get("data_files"))
        if not files:
            check.problems.append(f"dataset_path {path} needs dataset_kwargs.data_files")
        missing = [f for f in files if not glob.glob(f)]
        if missing:
            check.problems.append(f"data file(s) not found: {', '.join(missing)}")
        return f"local {path}: {len(files)} file(s)" + extra
    if Path(path).is_dir():
        return f"local folder {path}" + extra
    if not check_hub:
        return f"hub {path} (not checked offline)" + extra
    try:
        from huggingface_hub import HfApi

        HfApi().dataset_info(path)
    except Exception as error:  # noqa: BLE001
        check.problems.append(f"hub dataset {path} not reachable: {type(error).__name__}: {error}")
    return f"hub {path}" + extra


def _local_sources_in_kwargs(config: dict, check: TaskCheck) -> str:
    """Second data sources named in lmms_eval_specific_kwargs (GQA's images): check local ones."""
    found = []
    for value in ((config.get("lmms_eval_specific_kwargs") or {}).get("default") or {}).values():
        if not isinstance(value, dict):
            continue
        if "parquet" in value:
            missing = [f for f in value["parquet"] if not Path(f).is_file()]
            if missing:
                check.problems.append(f"parquet file(s) not found: {', '.join(missing)}")
            found.append(f"{len(value['parquet'])} parquet file(s)")
        elif "load_from_disk" in value:
            _check_saved(Path(value["load_from_disk"]), value.get("split"), check)
            found.append(f"save_to_disk {value['load_from_disk']}")
        elif "hub" in value:
            found.append(f"hub {value['hub']}")
    return f"; also {', '.join(found)}" if found else ""


def _check_saved(folder: Path, split: str | None, check: TaskCheck) -> None:
    if not (folder / "dataset_dict.json").is_file():
        check.problems.append(f"{folder} is not a DatasetDict.save_to_disk folder (no dataset_dict.json)")
    elif split and not (folder / split).is_dir():
        check.problems.append(f"{folder} has no split '{split}'")


def _data_files(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if isinstance(value, dict):
        return [f for v in value.values() for f in _data_files(v)]
    return []


def _flag_name_clashes(checks: list[TaskCheck]) -> None:
    builtin = _builtin_task_names()
    seen: dict[str, Path] = {}
    for check in checks:
        if check.kind == "skipped":
            continue
        if check.name in builtin:
            check.problems.append(f"'{check.name}' is a built-in lmms-eval task; lmms-eval would run its own, not this file")
        if check.name in seen:
            check.problems.append(f"task name '{check.name}' is also defined in {seen[check.name]}")
        seen.setdefault(check.name, check.path)


def _builtin_task_names() -> set[str]:
    import lmms_eval.tasks

    names = set()
    pattern = re.compile(r"^(?:task|group):\s*[\"']?([\w\-.]+)", re.MULTILINE)
    for path in Path(lmms_eval.tasks.__file__).parent.rglob("*.yaml"):
        names.update(pattern.findall(path.read_text(errors="ignore")))
    return names


def _cause(error: BaseException) -> str:
    cause = error.__cause__ or error.__context__
    return f"{error} ({type(cause).__name__}: {cause})" if cause else str(error)


def print_checks(checks: list[TaskCheck], console: Console) -> None:
    table = Table("task", "kind", "data", "result", show_lines=False)
    for check in checks:
        result = "[green]ok[/green]" if check.ok else "[red]" + "; ".join(check.problems) + "[/red]"
        table.add_row(check.name, check.kind, check.data, result)
    console.print(table)
    failed = sum(not check.ok for check in checks)
    console.print(f"{len(checks)} YAML file(s), {failed} with problems" if checks else "no task YAML found")


__all__ = ["TaskCheck", "print_checks", "validate_directory", "validate_yaml"]
