"""Whether a finished cell still holds what it claimed when it was written.

A finished cell is trusted by `sweep` (skipped) and by `report` (counted), so a damaged one must be caught
before either: a truncated results json, a hand-edited or zeroed `cell.json`, a cut-off `cell.json`.
The runner seals every cell: `cell.json` stores the sha256 of its own content (everything but the seal)
and of the lmms-eval results json it was read from. Cells written before seals existed are validated
instead: the results json must parse and hold exactly the numbers `cell.json` reports.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .metrics import is_finite_number
from .tasks import expected_keys, include_dirs_of

SEAL = "integrity"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_digest(record: dict[str, Any]) -> str:
    """sha256 of a cell record without its seal, as it reads back from JSON (key order does not matter)."""
    content = {key: value for key, value in record.items() if key != SEAL}
    canonical = json.dumps(json.loads(json.dumps(content, default=str)), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def seal(record: dict[str, Any], cell_folder: Path, results_file: str | None) -> dict[str, Any]:
    """The record with its seal; results_file is relative to cell_folder (None when there is none)."""
    files = {results_file: sha256_file(cell_folder / results_file)} if results_file else {}
    return {**record, SEAL: {"record_sha256": record_digest(record), "files_sha256": files}}


def read_cell(record_path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(record, None) for an intact finished cell; (record or None, why it is damaged) otherwise."""
    try:
        record = json.loads(record_path.read_text())
    except OSError as error:
        return None, f"{record_path} cannot be read: {error.strerror or error}"
    except ValueError as error:
        return None, f"{record_path} is not valid JSON (truncated?): {error}"
    if not isinstance(record, dict) or not all(isinstance(record.get(key), dict) for key in ("cell", "results", "fingerprint")):
        return None, f"{record_path} is not a cell record (no cell, results and fingerprint)"
    problem = _check_sealed(record, record_path) if SEAL in record else _check_unsealed(record, record_path)
    if problem is None:
        problem = _check_metrics(record, record_path)
    return record, problem


def _check_sealed(record: dict[str, Any], record_path: Path) -> str | None:
    stored = record[SEAL] if isinstance(record[SEAL], dict) else {}
    if stored.get("record_sha256") != record_digest(record):
        return f"{record_path} was changed after it was written (its checksum does not match its content)"
    for name, digest in (stored.get("files_sha256") or {}).items():
        path = record_path.parent / name
        if not path.is_file():
            return f"{path} is missing (cell.json was computed from it)"
        if sha256_file(path) != digest:
            return f"{path} was changed or truncated after the cell finished (checksum mismatch)"
    return None


def _check_unsealed(record: dict[str, Any], record_path: Path) -> str | None:
    """A cell from before seals: its numbers must be the ones in the results json beside it."""
    found = sorted((record_path.parent / "lmms").glob("**/*_results.json"))
    if not found:
        return f"{record_path.parent} holds no lmms-eval results json to back cell.json's numbers"
    try:
        data = json.loads(found[-1].read_text())
        task_results = data["results"][record["cell"]["task"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"{found[-1]} is unreadable or truncated ({type(error).__name__}: {error})"
    if _json_roundtrip(task_results) != _json_roundtrip(record["results"]):
        return f"{record_path}'s results differ from those in {found[-1]}"
    return None


def _check_metrics(record: dict[str, Any], record_path: Path) -> str | None:
    task = str(record["cell"].get("task"))
    try:
        expected = expected_keys(task, include_dirs_of(record))
    except KeyError:
        return None  # a task this version does not know: the report says so when it reads the cell
    missing = [key for key in expected if not is_finite_number(record["results"].get(key))]
    if missing:
        return f"{record_path}: metric(s) {', '.join(missing)} missing or not finite"
    return None


def _json_roundtrip(value: object) -> object:
    return json.loads(json.dumps(value, default=str))
