"""lmms-eval's task index kept on disk for a sweep's later worker processes (scope_eval.lmms.task_index)."""

from __future__ import annotations

import json

import pytest
from lmms_eval.tasks import TaskManager

from scope_eval.lmms.task_index import CachedTaskManager
from scope_eval.sweeps.tasks import INCLUDE_DIR

TASK = """task: {name}
dataset_path: json
dataset_kwargs: {{data_files: items.json}}
test_split: train
output_type: generate_until
doc_to_text: question
doc_to_target: answer
metric_list:
  - {{metric: exact_match, aggregation: mean, higher_is_better: true}}
"""


def _index(manager: TaskManager) -> dict:
    return manager._task_index


def test_a_cached_index_equals_lmms_evals_own_and_the_second_manager_reads_it(tmp_path, monkeypatch):
    built = CachedTaskManager("ERROR", include_path=str(INCLUDE_DIR), cache_dir=tmp_path / "cache")
    assert not built.index_was_cached and len(list((tmp_path / "cache").glob("*.json"))) == 1
    plain = TaskManager("ERROR", include_path=str(INCLUDE_DIR))
    assert _index(built) == _index(plain) and built.all_tasks == plain.all_tasks  # lmms-eval's own tasks and ours

    def no_indexing(self, task_dir):  # the second manager must not parse any YAML
        raise AssertionError(f"indexed {task_dir} again")

    monkeypatch.setattr(TaskManager, "_get_task_and_group", no_indexing)
    read = CachedTaskManager("ERROR", include_path=str(INCLUDE_DIR), cache_dir=tmp_path / "cache")
    assert read.index_was_cached
    assert _index(read) == _index(plain) and read.all_tasks == plain.all_tasks
    assert read.match_tasks(["scope_toy_pope", "gqa"]) == plain.match_tasks(["scope_toy_pope", "gqa"])


def test_an_added_changed_or_removed_task_yaml_is_never_read_from_a_stale_index(tmp_path):
    tasks, cache = tmp_path / "tasks", tmp_path / "cache"
    tasks.mkdir()
    (tasks / "first.yaml").write_text(TASK.format(name="my_first"))

    def names() -> list[str]:
        manager = CachedTaskManager("ERROR", include_path=str(tasks), include_defaults=False, cache_dir=cache)
        assert _index(manager) == _index(TaskManager("ERROR", include_path=str(tasks), include_defaults=False))
        return manager.all_tasks

    assert names() == ["my_first"]
    assert names() == ["my_first"]  # read back
    (tasks / "second.yaml").write_text(TASK.format(name="my_second"))
    assert names() == ["my_first", "my_second"]
    (tasks / "first.yaml").write_text(TASK.format(name="my_renamed"))
    assert names() == ["my_renamed", "my_second"]
    (tasks / "second.yaml").unlink()
    assert names() == ["my_renamed"]


@pytest.mark.parametrize("content", ["", "{not json", json.dumps({"other": 1})[:5]])
def test_a_cut_short_cache_file_is_rebuilt(tmp_path, content):
    tasks, cache = tmp_path / "tasks", tmp_path / "cache"
    tasks.mkdir()
    (tasks / "first.yaml").write_text(TASK.format(name="my_first"))
    CachedTaskManager("ERROR", include_path=str(tasks), include_defaults=False, cache_dir=cache)
    (cache_file,) = cache.glob("*.json")
    cache_file.write_text(content)
    again = CachedTaskManager("ERROR", include_path=str(tasks), include_defaults=False, cache_dir=cache)
    assert not again.index_was_cached and again.all_tasks == ["my_first"]
    assert json.loads(cache_file.read_text()) == _index(again)
