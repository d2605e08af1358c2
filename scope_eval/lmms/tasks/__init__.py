"""The include directory shipped with scope_eval: pass it to lmms-eval with ``--include_path``."""

from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent
