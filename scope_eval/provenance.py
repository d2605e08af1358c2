"""What produced a number: exact package versions, the locked environment's digest and the git commit.

Recorded in every sweep cell (cell.json) and every bench result, and shown once per report table, so
that a number can be traced to the environment that computed it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import subprocess
from pathlib import Path

# Distribution names whose versions change results or break runs (filelock: lmms-eval imports its
# internals). The original LLaVA codebase is published as llava-torch (or installed as llava).
PACKAGES: tuple[str, ...] = (
    "scope-eval", "torch", "transformers", "lmms-eval", "llava-torch", "llava", "accelerate", "filelock", "datasets",
)  # fmt: skip

_REPO = Path(__file__).resolve().parents[1]
# The lock (`make lock`): the whole environment, then the original LLaVA codebase installed --no-deps.
LOCK_FILES: tuple[str, ...] = ("requirements/requirements.lock.txt", "requirements/llava.txt")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def lock_digest(repo: Path = _REPO) -> str | None:
    """sha256 over the lock files of the checkout this code runs from (None outside a checkout).

    It names the lock the environment was meant to be built from; the versions above say what is
    actually installed, so a hand-changed environment shows as versions that differ from the lock.
    """
    paths = [repo / name for name in LOCK_FILES]
    if not all(path.is_file() for path in paths):
        return None
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def git_state(repo: Path = _REPO) -> dict[str, object]:
    """Commit of the scope_eval checkout and whether tracked files differ from it (None outside git)."""
    try:
        commit = _git(repo, "rev-parse", "HEAD")
        dirty = bool(_git(repo, "status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def provenance() -> dict[str, object]:
    """The record stored with every result: {"versions": ..., "lock_sha256": ..., "git": ...}."""
    return {"versions": package_versions(), "lock_sha256": lock_digest(), "git": git_state()}


def describe(record: dict) -> str:
    """One line for a report: the versions that matter and the lock digest, from a stored record."""
    versions = record.get("versions") or {}
    shown = [f"{name} {versions[name]}" for name in PACKAGES if versions.get(name) and name not in ("scope-eval", "llava")]
    lock = record.get("lock_sha256")
    return ", ".join(shown) + (f"; lock sha256 {lock[:12]}" if lock else "; no lock recorded")


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=30)
    return result.stdout.strip()
