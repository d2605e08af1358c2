"""Task names a sweep may use: the paper's lmms-eval tasks plus those of the package's include directory.

Checked without importing lmms-eval (about 7 s of import and task indexing), so that a typo in a sweep
config fails in milliseconds instead of after the first launch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import yaml

from ..lmms.tasks import TASKS_DIR
from .metrics import FILTER_SUFFIX, Benchmark, benchmarks_for_task

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
    metadata: tuple[tuple[str, object], ...] = ()  # the YAML's `metadata:` (display_name, scale, chance, headline)

    @property
    def meta(self) -> dict[str, object]:
        return dict(self.metadata)


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
            metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
            found[name] = TaskInfo(name, metrics, path, metadata=tuple(sorted(metadata.items(), key=lambda kv: str(kv[0]))))
        elif isinstance(data.get("group"), str):
            members = tuple(t if isinstance(t, str) else str(t.get("task")) for t in data.get("task") or ())
            found[data["group"]] = TaskInfo(data["group"], (), path, members)
    return found


def known_tasks(include_dir: Path = INCLUDE_DIR, extra_dirs: Sequence[Path] = ()) -> dict[str, TaskInfo]:
    """Every task a sweep may name: lmms-eval's paper tasks, the shipped include directory, then the user's
    include directories (`include_path` of a sweep config, `--include-path`)."""
    tasks = {name: TaskInfo(name, (), None) for name in PAPER_TASKS + VARIANT_TASKS}
    tasks.update(include_dir_tasks(include_dir))
    for folder in extra_dirs:
        tasks.update(include_dir_tasks(Path(folder).resolve()))
    return tasks


def yaml_metrics(task: str, include_dir: Path = INCLUDE_DIR, extra_dirs: Sequence[Path] = ()) -> tuple[str, ...]:
    info = known_tasks(include_dir, extra_dirs).get(task)
    return info.metrics if info else ()


def task_benchmarks(task: str, extra_dirs: Sequence[Path] = ()) -> tuple[Benchmark, ...]:
    """The benchmarks a task feeds: from its YAML's metadata when it has some, else sweeps.metrics' table."""
    info = known_tasks(INCLUDE_DIR, extra_dirs).get(task)
    return benchmarks_for_task(task, info.metrics if info else (), info.meta if info else None)


def expected_keys(task: str, extra_dirs: Sequence[Path] = ()) -> tuple[str, ...]:
    """Result keys that must be present (and numeric) for a run of `task` to count as finished."""
    keys: list[str] = []
    for benchmark in task_benchmarks(task, extra_dirs):
        keys.extend(m + FILTER_SUFFIX for m in benchmark.metrics if m + FILTER_SUFFIX not in keys)
    return tuple(keys)


def include_dirs_of(record: dict) -> tuple[Path, ...]:
    """The user's include directories a finished cell was made with (from its cell.json's config)."""
    folder = ((record or {}).get("config") or {}).get("include_path")
    return (Path(folder),) if isinstance(folder, str) and folder else ()
