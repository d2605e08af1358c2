"""Task names a sweep may use: the paper's lmms-eval tasks plus those of the package's include directory.

Checked without importing lmms-eval (about 7 s of import and task indexing), so that a typo in a sweep
config fails in milliseconds instead of after the first launch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from ..lmms.tasks import TASKS_DIR

# Built-in lmms-eval 0.7.3 tasks behind the paper's tables (research/paper_tables.md section 7), plus the
# key-free and quick variants that measure the same benchmarks.
PAPER_TASKS: tuple[str, ...] = (
    "gqa",
    "mmbench_en_dev",
    "mme",
    "pope",
    "scienceqa_img",
    "textvqa_val",
    "seedbench",
    "mmvet",
    "mmmu_val",
    "vqav2_val",
)
VARIANT_TASKS: tuple[str, ...] = (
    "mmbench_en_dev_static",
    "gqa_lite",
    "mmbench_en_dev_lite",
    "textvqa_val_lite",
    "vqav2_val_lite",
)

# Shipped by the lmms-eval plugin; passed to lmms-eval with --include_path.
INCLUDE_DIR: Path = TASKS_DIR


@dataclass(frozen=True)
class TaskInfo:
    name: str
    metrics: tuple[str, ...]  # metric names in the YAML's metric_list, in order (empty for groups)
    yaml_path: Path | None  # None for built-in lmms-eval tasks
    subtasks: tuple[str, ...] = ()  # set for a group


class _TaggedLoader(yaml.SafeLoader):
    """Reads lmms-eval task YAMLs without resolving their `!function module.fn` tags."""


_TaggedLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def read_task_yaml(path: Path) -> dict:
    """One task YAML with its `include:` chain merged underneath (as lmms-eval does)."""
    with path.open() as handle:
        data = yaml.load(handle, Loader=_TaggedLoader) or {}
    if not isinstance(data, dict):
        return {}
    included = data.get("include")
    if isinstance(included, str) and (path.parent / included).is_file():
        data = {**read_task_yaml(path.parent / included), **data}
    return data


@lru_cache(maxsize=8)
def include_dir_tasks(include_dir: Path = INCLUDE_DIR) -> dict[str, TaskInfo]:
    """Task and group names defined by the YAML files under `include_dir` (recursively)."""
    found: dict[str, TaskInfo] = {}
    if not include_dir.is_dir():
        return found
    for path in sorted(include_dir.rglob("*.yaml")):
        data = read_task_yaml(path)
        name = data.get("task")
        if isinstance(name, str):
            metrics = tuple(
                entry["metric"] for entry in data.get("metric_list") or () if isinstance(entry, dict) and "metric" in entry
            )
            found[name] = TaskInfo(name, metrics, path)
        elif isinstance(data.get("group"), str):
            members = tuple(t if isinstance(t, str) else str(t.get("task")) for t in data.get("task") or ())
            found[data["group"]] = TaskInfo(data["group"], (), path, members)
    return found


def known_tasks(include_dir: Path = INCLUDE_DIR) -> dict[str, TaskInfo]:
    tasks = {name: TaskInfo(name, (), None) for name in PAPER_TASKS + VARIANT_TASKS}
    tasks.update(include_dir_tasks(include_dir))
    return tasks


def yaml_metrics(task: str, include_dir: Path = INCLUDE_DIR) -> tuple[str, ...]:
    info = include_dir_tasks(include_dir).get(task)
    return info.metrics if info else ()
