"""What produced a number: package versions and the scope_eval git commit, recorded in every cell.json."""

from __future__ import annotations

import importlib.metadata
import subprocess
from pathlib import Path

# Distribution names; the original LLaVA codebase is published as llava-torch (or installed as llava).
PACKAGES: tuple[str, ...] = ("scope-eval", "lmms-eval", "torch", "transformers", "accelerate", "datasets", "llava-torch", "llava")

_REPO = Path(__file__).resolve().parents[2]


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(repo: Path = _REPO) -> dict[str, object]:
    """Commit of the scope_eval checkout and whether tracked files differ from it (None outside git)."""
    try:
        commit = _git(repo, "rev-parse", "HEAD")
        dirty = bool(_git(repo, "status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=30)
    return result.stdout.strip()
