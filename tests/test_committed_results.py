"""Committed results hold no machine's absolute path (they record paths as the sweep config wrote them)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# An absolute POSIX path of two or more parts, or a drive path, starting a value (after a separator or quote).
# /proc, /sys and /dev are the kernel's interfaces (the same on every machine), not a place on one.
ABSOLUTE = re.compile(r"""(?:^|[\s,;=:"'(\[])(/(?!proc/|sys/|dev/)[\w.-]+/[\w.-]+|[A-Za-z]:\\[\w.-]+)""")


def committed_result_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "results"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return [REPO / name for name in listed if not name.endswith(".png")]


def test_absolute_path_pattern_finds_what_it_should():
    assert ABSOLUTE.search('a,"text_encoder=/work/main/weights/clip",b')
    assert ABSOLUTE.search("pretrained: /home/me/ckpt") and ABSOLUTE.search(r"C:\Users\me")
    assert not ABSOLUTE.search("text_encoder=../scope_eval/toy/weights/clip_text")
    assert not ABSOLUTE.search("ours / paper, 3/4, tokens/s, reset via /proc/self/clear_refs")


def test_committed_results_hold_no_absolute_path():
    files = committed_result_files()
    assert any(f.name == "cells.csv" for f in files)
    found = [f"{f.relative_to(REPO)}:{n}: {m.group(1)}" for f in files for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1) for m in [ABSOLUTE.search(line)] if m]
    assert not found, "absolute machine paths in committed results (record them relative to the config):\n" + "\n".join(found[:20])
