"""The cells a table does not show, and why: failed, interrupted, damaged, or never run.

A table with a dash and no word about it reads as "not measured on purpose". Every cell a sweep of this
runs folder asked for is accounted for: the sweeps recorded in the finished cells' `cell.json` (their
`config`) say which cells were wanted; a failed launch leaves `failure.json` in its scratch folder; an
interrupted one leaves the scratch folder alone; a damaged finished cell is named by integrity.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..sweeps.cells import run_name
from ..adapters.families import family_visual_tokens
from ..sweeps.integrity import read_cell
from ..sweeps.runner import FAILURE_FILE


@dataclass(frozen=True)
class Gap:
    run: str
    method: str  # the method label
    budget: int | None
    task: str
    status: str  # failed | interrupted | damaged | not run
    detail: str = ""

    def describe(self) -> str:
        where = f"{self.method} {self.budget if self.budget is not None else '?'} {self.task}"
        return f"{where}: {self.status}" + (f" ({self.detail})" if self.detail else "")


def find_gaps(runs_dir: Path, cells: pd.DataFrame, damaged: list[tuple[Path, str]]) -> list[Gap]:
    """Every wanted cell that is not among `cells` (the tidy table of the intact finished cells)."""
    finished = {(row.run, row.method_label, row.budget, row.task) for row in cells.itertuples()}
    gaps: dict[tuple, Gap] = {}
    for record_path, reason in damaged:
        gap = _damaged_gap(runs_dir, record_path, reason)
        gaps[(gap.run, gap.method, gap.budget, gap.task)] = gap
    for scratch in sorted(runs_dir.glob("*/*/*/.tmp-*")):
        for gap in _scratch_gaps(runs_dir, scratch):
            gaps.setdefault((gap.run, gap.method, gap.budget, gap.task), gap)
    for key in _wanted(runs_dir) - finished:
        gaps.setdefault(key, Gap(*key, status="not run"))
    return sorted((g for key, g in gaps.items() if key not in finished), key=lambda g: (g.run, g.method, -(g.budget or 0), g.task))


def _damaged_gap(runs_dir: Path, record_path: Path, reason: str) -> Gap:
    """A damaged cell, placed by its folder: <run>/<method label>/b<budget>|full/<task>/cell.json."""
    parts = record_path.parent.relative_to(runs_dir).parts
    run, method, budget_folder, task = parts[-4:] if len(parts) >= 4 else ("?",) * 4
    budget = _folder_budget(budget_folder, record_path)
    return Gap(run, method, budget, task, "damaged, not counted", reason)


def _folder_budget(budget_folder: str, record_path: Path) -> int | None:
    if budget_folder.startswith("b") and budget_folder[1:].isdigit():
        return int(budget_folder[1:])
    record, _ = read_cell(record_path)
    return (record or {}).get("cell", {}).get("table_budget")


def _scratch_gaps(runs_dir: Path, scratch: Path) -> list[Gap]:
    failure = scratch / FAILURE_FILE
    if failure.is_file():
        try:
            entries = json.loads(failure.read_text())["failures"]
            return [
                Gap(run_name(e["cell"]["model"], e["cell"].get("limit")), e["cell"]["method_label"], e["cell"]["budget"],
                    e["cell"]["task"], "failed", f"{e['reason']}; log: {scratch / 'lmms_eval.log'}")
                for e in entries
            ]  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable: described below as an unfinished launch
    run, method, budget_folder = scratch.parent.relative_to(runs_dir).parts
    budget = int(budget_folder[1:]) if budget_folder[1:].isdigit() else None
    task = scratch.name.removeprefix(".tmp-")
    detail = f"scratch folder {scratch} left; run the sweep again to redo it"
    if task == "group":
        return [Gap(run, method, budget, "(all tasks of the launch)", "interrupted or failed", detail)]
    return [Gap(run, method, budget, task, "interrupted or failed", detail)]


def _wanted(runs_dir: Path) -> set[tuple]:
    """(run, method label, table budget, task) of every cell the recorded sweep configs asked for."""
    from ..sweeps import methods as method_catalog

    configs: dict[str, dict] = {}
    for record_path in sorted(runs_dir.glob("*/*/*/*/cell.json")):
        try:
            config = json.loads(record_path.read_text())["config"]
            configs[json.dumps(config, sort_keys=True, default=str)] = config
        except (OSError, ValueError, KeyError, TypeError):
            continue
    wanted = set()
    for config in configs.values():
        try:
            run = run_name(config["model"]["name"], config.get("limit"))
            full = family_visual_tokens(config["model"]["family"])
            for method in config["methods"]:
                try:
                    unpruned = method_catalog.keeps_all(method["name"])
                except Exception:  # a method this version does not know: take it as pruning
                    unpruned = False
                for budget in [full] if unpruned else config["budgets"]:
                    wanted.update((run, method["label"], budget, task) for task in config["tasks"])
        except (KeyError, TypeError):  # a config of another version, or an unknown family
            continue
    return wanted
