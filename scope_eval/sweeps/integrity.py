"""Whether a finished cell still holds what it claimed when it was written.

A finished cell is trusted by `sweep` (skipped) and by `report` and `regress` (counted), so a damaged one
must be caught before either: a truncated results json, a hand-edited or zeroed `cell.json`, a cut-off
`cell.json`, an edited per-sample line. The runner seals every cell: `cell.json` stores the sha256 of its
own content (everything but the seal) and of every file a later command reads from the cell folder
(`SEALED_FILES`: the lmms-eval results json and the per-sample jsonl that intervals, agreement and the
paired regression test read). A cell without a seal, or whose seal leaves out one of those files (written
by an older version), cannot be checked, and counts as damaged: the sweep moves it aside and runs it again.
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


# The entries of cell.json's "files" that report / regress read, so the seal must cover them.
SEALED_FILES = ("results", "samples")


def seal(record: dict[str, Any], cell_folder: Path) -> dict[str, Any]:
    """The record with its seal over itself and every file of ``SEALED_FILES`` it names (paths relative
    to cell_folder, as in record["files"])."""
    named = record.get("files") or {}
    files = {named[kind]: sha256_file(cell_folder / named[kind]) for kind in SEALED_FILES if named.get(kind)}
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
    if SEAL not in record:
        return record, f"{record_path} has no seal (checksums of the cell's files), so changes to them cannot be detected"
    problem = _check_sealed(record, record_path)
    if problem is None:
        problem = _check_metrics(record, record_path)
    return record, problem


def _check_sealed(record: dict[str, Any], record_path: Path) -> str | None:
    stored = record[SEAL] if isinstance(record[SEAL], dict) else {}
    if stored.get("record_sha256") != record_digest(record):
        return f"{record_path} was changed after it was written (its checksum does not match its content)"
    sealed = stored.get("files_sha256") or {}
    named = record.get("files") if isinstance(record.get("files"), dict) else {}
    for kind in SEALED_FILES:
        if named.get(kind) and named[kind] not in sealed:
            return f"{record_path.parent / named[kind]} is not covered by the cell's seal (sealed by an older version)"
    for name, digest in sealed.items():
        path = record_path.parent / name
        if not path.is_file():
            return f"{path} is missing (cell.json was computed from it)"
        if sha256_file(path) != digest:
            return f"{path} was changed or truncated after the cell finished (checksum mismatch)"
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
