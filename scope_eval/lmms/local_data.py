"""Local copies of the paper's benchmarks, and the include directory that points the tasks at them.

The data folder (``--data-dir``) holds one folder per benchmark named like its hub repo
(``DATA/MME``, ``DATA/GQA``, ...), containing either
- the repo's parquet files, as ``hf download lmms-lab-encoder/MME --repo-type dataset --local-dir DATA/MME``
  leaves them (``<config>/<split>-*.parquet`` or ``data/<split>-*.parquet``; any ``<split>*.parquet``
  below the folder, or below ``<config>/`` when the benchmark names a config), or
- a ``DatasetDict.save_to_disk`` folder with the split (``DATA/MME/dataset_dict.json``; for a
  benchmark with a config also ``DATA/<repo>/<config>/dataset_dict.json``).

A task YAML cannot read a command-line option, so ``write_tasks_dir`` writes a directory of YAMLs with
the paths filled in: each ``scope_<name>.yaml`` includes the shipped one and replaces only where the
data comes from. Task names stay the same, so the same ``--tasks`` run on the hub or on local copies
depending only on the ``--include_path`` given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from .benchmarks import BENCHMARKS, Benchmark, DataSource
from .tasks import TASKS_DIR


@dataclass(frozen=True)
class LocalCopy:
    """Where one split of one dataset config is on disk."""

    parquet_files: tuple[Path, ...] = ()
    saved_dir: Path | None = None  # a DatasetDict.save_to_disk folder

    def describe(self) -> str:
        if self.saved_dir is not None:
            return f"save_to_disk folder {self.saved_dir}"
        if len(self.parquet_files) == 1:
            return f"parquet file {self.parquet_files[0]}"
        return f"{len(self.parquet_files)} parquet files under {os.path.commonpath(self.parquet_files)}"

    def task_overrides(self, split: str) -> dict:
        """The YAML keys that make lmms-eval load this copy."""
        if self.saved_dir is not None:
            return {"dataset_path": str(self.saved_dir), "dataset_name": None, "dataset_kwargs": {"load_from_disk": True}}
        files = [str(path) for path in self.parquet_files]
        return {"dataset_path": "parquet", "dataset_name": None, "dataset_kwargs": {"data_files": {split: files}}}

    def image_source(self, split: str) -> dict:
        """The same copy as a ``gqa_images`` source (see scope_eval/lmms/tasks/paper/gqa.py)."""
        if self.saved_dir is not None:
            return {"load_from_disk": str(self.saved_dir), "split": split}
        return {"parquet": [str(path) for path in self.parquet_files]}


def find_copy(data_dir: Path, source: DataSource) -> LocalCopy | None:
    root = Path(data_dir) / source.folder
    if not root.is_dir():
        return None
    candidates = [root / source.config, root] if source.config else [root]
    for folder in candidates:
        if (folder / "dataset_dict.json").is_file() and (folder / source.split).is_dir():
            return LocalCopy(saved_dir=folder.resolve())
    base = root / source.config if source.config and (root / source.config).is_dir() else root
    files = sorted({*base.rglob(f"{source.split}-*.parquet"), *base.rglob(f"{source.split}.parquet")})
    return LocalCopy(parquet_files=tuple(path.resolve() for path in files)) if files else None


@dataclass(frozen=True)
class BenchmarkCopy:
    benchmark: Benchmark
    data: LocalCopy | None
    images: LocalCopy | None = None

    @property
    def complete(self) -> bool:
        return self.data is not None and (self.benchmark.images is None or self.images is not None)

    def describe(self) -> str:
        if self.data is None:
            return f"missing: expected {self.benchmark.source.folder}/ ({_layout_hint(self.benchmark.source)})"
        if self.benchmark.images is not None and self.images is None:
            return f"missing images: expected {self.benchmark.images.folder}/ ({_layout_hint(self.benchmark.images)})"
        text = self.data.describe()
        return text if self.images is None else f"{text}; images: {self.images.describe()}"


def find_copies(data_dir: Path) -> list[BenchmarkCopy]:
    if not Path(data_dir).is_dir():
        raise FileNotFoundError(f"data folder {data_dir} does not exist")
    copies = []
    for bench in BENCHMARKS:
        images = find_copy(data_dir, bench.images) if bench.images else None
        copies.append(BenchmarkCopy(bench, find_copy(data_dir, bench.source), images))
    return copies


def local_task_config(copy: BenchmarkCopy) -> dict:
    """A task YAML's content: the shipped ``scope_<name>`` with the data source replaced."""
    bench = copy.benchmark
    config: dict = {"include": str(bench.yaml_path), "task": bench.task}
    config.update(copy.data.task_overrides(bench.source.split))
    if copy.images is not None:
        shipped = yaml.load(bench.yaml_path.read_text(), Loader=_IgnoreFunctions)
        kwargs = {key: dict(value) for key, value in shipped["lmms_eval_specific_kwargs"].items()}
        kwargs["default"]["gqa_images"] = copy.images.image_source(bench.images.split)
        config["lmms_eval_specific_kwargs"] = kwargs
    return config


def write_tasks_dir(data_dir: Path, output: Path) -> list[BenchmarkCopy]:
    """Write ``output``: the shipped include directory with every benchmark found in ``data_dir``
    read from there. Benchmarks not found are left out (lmms-eval then reports them as not found);
    the other shipped tasks (toy, template) are included unchanged."""
    copies = find_copies(data_dir)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    for stale in output.glob("*.yaml"):  # only files an earlier call wrote
        if stale.read_text().startswith(_HEADER):
            stale.unlink()
    header = f"{_HEADER} --data-dir {Path(data_dir).resolve()}`; regenerate rather than edit.\n"
    for copy in copies:
        if copy.complete:
            _write_yaml(output / f"{copy.benchmark.task}.yaml", header, local_task_config(copy))
    paper = {bench.yaml_path.resolve() for bench in BENCHMARKS}
    for shipped in sorted(TASKS_DIR.rglob("*.yaml")):
        if shipped.resolve() in paper:
            continue
        name = "__".join(shipped.relative_to(TASKS_DIR).with_suffix("").parts) + ".yaml"
        _write_yaml(output / name, header, {"include": str(shipped)})
    return copies


_HEADER = "# Written by `scope-eval tasks-dir"


def _write_yaml(path: Path, header: str, config: dict) -> None:
    path.write_text(header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))


class _IgnoreFunctions(yaml.SafeLoader):
    """Reads a task YAML without importing its ``!function`` targets."""


_IgnoreFunctions.add_constructor("!function", lambda loader, node: None)


def _layout_hint(source: DataSource) -> str:
    below = f"{source.config}/" if source.config else ""
    return f"{below}{source.split}-*.parquet from the {source.hub_id} repo, or a save_to_disk DatasetDict with split '{source.split}'"
