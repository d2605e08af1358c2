"""lmms-eval's task index, built once per sweep output folder instead of once per process.

Every lmms-eval ``TaskManager`` indexes each task YAML it can see when it is built: about 1,900 files in
lmms-eval 0.7 plus the include path, parsed by the pure-Python YAML loader, about 3 s of CPU. The sweep
worker builds one per process, so `make regress` (4 sweeps, 2 processes each) paid it 8 times.

``CachedTaskManager`` is lmms-eval's ``TaskManager`` whose index is read from a file in ``cache_dir`` when
one was written for exactly the same files, and is built by lmms-eval and written there otherwise. The
file is named after everything the index is read from: the lmms-eval version, the folders indexed, and
each indexed YAML file's path, size and modification time; a changed, added or removed YAML gives a new
name, so a stale index is never read. Not seen: an edit to a file that a task YAML ``include:``s from
outside the indexed folders (delete ``cache_dir`` to rebuild).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

from lmms_eval import tasks as lmms_tasks
from lmms_eval.tasks import TaskManager

# as lmms-eval's TaskManager._get_task_and_group skips them
_SKIPPED_FOLDERS = ("__pycache__", ".ipynb_checkpoints")


def indexed_folders(include_path: str | list[str] | None, include_defaults: bool) -> list[str]:
    """The folders a TaskManager indexes, in its order: lmms-eval's own tasks, then the include path."""
    folders = [os.path.dirname(os.path.abspath(lmms_tasks.__file__)) + "/"] if include_defaults else []
    if include_path is not None:
        folders += [include_path] if isinstance(include_path, (str, os.PathLike)) else list(include_path)
    return [str(folder) for folder in folders]


def index_key(folders: list[str]) -> str:
    """A name for the index of these folders that changes with any indexed YAML file (about 30 ms)."""
    digest = hashlib.sha256(f"lmms-eval {version('lmms_eval')}\n".encode())
    for folder in folders:
        digest.update(f"folder {os.path.abspath(folder)}\n".encode())
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(name for name in dirs if name not in _SKIPPED_FOLDERS)
            for name in sorted(files):
                if name.endswith(".yaml"):
                    path = os.path.join(root, name)
                    stat = os.stat(path)
                    digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


class CachedTaskManager(TaskManager):
    """lmms-eval's TaskManager, its task index kept in ``cache_dir`` (see the module docstring)."""

    def __init__(self, *args: Any, cache_dir: str | Path, **kwargs: Any):
        self.cache_dir = Path(cache_dir)
        self.index_was_cached = False
        super().__init__(*args, **kwargs)

    def initialize_tasks(self, include_path: str | list[str] | None = None, include_defaults: bool = True) -> dict:
        cache_file = self.cache_dir / f"{index_key(indexed_folders(include_path, include_defaults))}.json"
        try:
            index = json.loads(cache_file.read_text())
            self.index_was_cached = True
            return index
        except (OSError, ValueError):  # not written yet, or cut short: build it
            pass
        index = super().initialize_tasks(include_path=include_path, include_defaults=include_defaults)
        text = json.dumps(index)
        if json.loads(text) == index:  # kept only where the file gives back exactly this index
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            handle, scratch = tempfile.mkstemp(dir=self.cache_dir, prefix=".writing-", suffix=".json")
            with os.fdopen(handle, "w") as out:
                out.write(text)
            os.chmod(scratch, 0o644)  # mkstemp's 0600 would hide it from other users of a shared output folder
            os.replace(scratch, cache_file)  # atomic: a reader sees the whole index or none
        return index
