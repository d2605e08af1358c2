"""A sweep config expanded into table cells, and the lmms-eval launches that fill them.

A *cell* is one number of a paper table: (model, method + options, budget, task). Each finished cell
owns a folder `<output>/<model>[_limitN]/<method label>/b<budget>|full/<task>/` holding lmms-eval's
results and samples plus `cell.json`. A *launch* is one lmms-eval process; it fills one cell, or, with
`group_tasks`, every task of one (method, budget) - see runner.py for the trade-off.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from . import methods as method_catalog
from .config import RESULT_NEUTRAL_LMMS_EVAL_ARGS, KeepRatio, MethodSpec, ModelSpec, SweepConfig
from .tasks import INCLUDE_DIR

CELL_FILE = "cell.json"
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@dataclass(frozen=True)
class Cell:
    model: ModelSpec
    method: MethodSpec
    budget: int | KeepRatio | None  # None: the unpruned reference (method 'none')
    task: str

    @property
    def budget_folder(self) -> str:
        if self.budget is None:
            return "full"
        return f"r{float(self.budget):g}" if isinstance(self.budget, KeepRatio) else f"b{self.budget}"

    @property
    def table_budget(self) -> int | float:
        """Retained visual tokens as the paper's tables print them (576 / 2880 for the unpruned row); for a
        keep_ratio the share kept, as Table 8 prints it (1.0 for the unpruned row of a dynamic-resolution model)."""
        if self.budget is None:
            return 1.0 if self.model.visual_tokens is None else self.model.visual_tokens
        return float(self.budget) if isinstance(self.budget, KeepRatio) else self.budget

    def name(self) -> str:
        return f"{self.method.label} {self.budget_folder} {self.task}"


@dataclass(frozen=True)
class Launch:
    cells: tuple[Cell, ...]  # same model, method and budget
    command: tuple[str, ...]
    env: dict[str, str]  # added to the child's environment only
    work_dir: Path  # scratch folder, wiped before the launch; results are moved out of it per cell

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(cell.task for cell in self.cells)


def model_folder(config: SweepConfig) -> str:
    return run_name(config.model.name, config.limit)


def run_name(model_name: str, limit: int | float | None) -> str:
    """A --limit run must never be mistaken for the full one, so the limit is part of its name and folder."""
    return model_name if limit is None else f"{model_name}_limit{limit}"


def cell_dir(config: SweepConfig, cell: Cell) -> Path:
    return Path(config.output) / model_folder(config) / cell.method.label / cell.budget_folder / cell.task


def expand(config: SweepConfig) -> list[Cell]:
    """Every cell of the sweep: unpruned methods once, pruning methods at every budget, times every task."""
    cells: list[Cell] = []
    for method in config.methods:
        budgets: Sequence[int | KeepRatio | None] = (
            [None] if method.keeps_all else [*config.budgets, *(KeepRatio(r) for r in config.keep_ratios)]
        )
        for budget in budgets:
            cells.extend(Cell(config.model, method, budget, task) for task in config.tasks)
    return cells


def plan_launches(config: SweepConfig, cells: Sequence[Cell], evaluator: Sequence[str] | None = None) -> list[Launch]:
    groups: dict[tuple[str, int | None], list[Cell]] = {}
    for cell in cells:
        key = (cell.method.label, cell.budget) if config.group_tasks else (cell.method.label, cell.budget, cell.task)
        groups.setdefault(key, []).append(cell)
    launches = []
    for group in groups.values():
        first = group[0]
        scratch = ".tmp-group" if config.group_tasks else f".tmp-{first.task}"
        work_dir = cell_dir(config, first).parent / scratch
        command = lmms_eval_command(config, first.method, first.budget, [c.task for c in group], work_dir, evaluator)
        launches.append(Launch(tuple(group), tuple(command), child_env(config), work_dir))
    return launches


def model_args(config: SweepConfig, method: MethodSpec, budget: int | None) -> dict[str, object]:
    """The plugin's model_args for one (method, budget), in a fixed order."""
    args: dict[str, object] = {"pretrained": config.model.pretrained, "method": method.name}
    if isinstance(budget, KeepRatio):
        args["keep_ratio"] = float(budget)
    elif budget is not None:
        args["budget"] = budget
        if config.budget_policy is not None:
            args["budget_policy"] = config.budget_policy
    if "seed" not in method.options and method_catalog.accepts(method.name, "seed"):
        args["seed"] = config.seed
    args.update(method.options)
    args.update(config.model.model_args)
    return args


def samples_file(cell_folder: Path, task: str) -> Path:
    """Where a finished cell keeps lmms-eval's per-sample log (answers, scores, token counts): one rule for
    every way a cell is evaluated, e.g. runs/toy-llava15/scope/b64/scope_toy_pope/samples_scope_toy_pope.jsonl."""
    return cell_folder / f"samples_{task}.jsonl"


def accelerate_launch(python: str, num_processes: int) -> list[str]:
    """`accelerate launch` for several processes, from the given interpreter. --multi_gpu is accelerate's
    multi-process launcher (torch.distributed; gloo where there is no GPU): without it, a machine with fewer
    than two GPUs gets one process whatever --num_processes says. accelerate has no --multi_cpu; on the CPU
    this launcher runs the processes asked for (tests/test_plugin_cli.py: two CPU processes give the
    one-process numbers)."""
    return [python, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes)]


def include_path(config: SweepConfig) -> Path:
    """The --include_path of the launches: the plugin's task directory; with data_dir the copy of it that
    reads the local data; with include_path a folder joining the plugin's tasks and the user's (lmms-eval
    takes one folder). Both are written by the runner before the first launch (write_include_dir)."""
    if config.data_dir is None and config.include_path is None:
        return INCLUDE_DIR
    source = config.data_dir if config.data_dir is not None else config.include_path
    digest = hashlib.sha1(str(Path(source).resolve()).encode()).hexdigest()[:10]
    return Path(config.output).resolve() / ".include" / digest


def write_include_dir(config: SweepConfig) -> Path:
    """The joint include folder of an `include_path` sweep: the plugin's task folder and the user's mirrored
    as real folders of symlinked files (lmms-eval's os.walk does not enter symlinked folders, but reads
    symlinked files, and `!function utils.fn` and relative data_files resolve through them)."""
    target = include_path(config)
    for name, source in (("scope_eval", INCLUDE_DIR), ("user", Path(config.include_path))):
        for path in sorted(source.rglob("*")):
            if path.is_dir() or "__pycache__" in path.parts:
                continue
            link = target / name / path.relative_to(source)
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() and link.resolve() == path.resolve():
                continue
            link.unlink(missing_ok=True)
            link.symlink_to(path.resolve())
    return target


def lmms_eval_command(
    config: SweepConfig,
    method: MethodSpec,
    budget: int | None,
    tasks: Sequence[str],
    work_dir: Path,
    evaluator: Sequence[str] | None = None,
) -> list[str]:
    """The argument list of one launch (never a shell string).

    `evaluator` is a Python interpreter followed by what it runs, by default `<this python> -m lmms_eval`;
    with several processes it runs under `accelerate launch` from that same interpreter.
    """
    evaluator = list(evaluator or [sys.executable, "-m", "lmms_eval"])
    if config.num_processes > 1:
        python, target = evaluator[0], evaluator[1:]
        evaluator = [*accelerate_launch(python, config.num_processes), *target]
    command = [
        *evaluator,
        "--model", config.model.backend,
        "--model_args", ",".join(f"{key}={_arg(value)}" for key, value in model_args(config, method, budget).items()),
        "--tasks", ",".join(tasks),
        "--batch_size", str(config.batch_size),
        "--log_samples",
        "--output_path", str(work_dir / "lmms"),
    ]  # fmt: skip
    command += ["--include_path", str(include_path(config))]
    if config.limit is not None:
        command += ["--limit", str(config.limit)]
    if config.gen_kwargs:
        command += ["--gen_kwargs", ",".join(f"{key}={_arg(value)}" for key, value in config.gen_kwargs.items())]
    for key, value in config.lmms_eval_args.items():
        command += [f"--{key}"] if value is True else [] if value is False else [f"--{key}", _arg(value)]
    return command


def child_env(config: SweepConfig) -> dict[str, str]:
    env = dict(OFFLINE_ENV) if config.offline else {}
    if config.cpu_threads is not None:  # read by torch when the child starts
        env.update(OMP_NUM_THREADS=str(config.cpu_threads), MKL_NUM_THREADS=str(config.cpu_threads))
    return env


def fingerprint(config: SweepConfig, cell: Cell) -> dict[str, object]:
    """Everything that changes a cell's numbers (not where the data was read from). A finished cell whose
    fingerprint differs from the current config is reported as a conflict, never silently reused or
    overwritten."""
    found = {
        "backend": config.model.backend,
        "model_args": model_args(config, cell.method, cell.budget),
        "task": cell.task,
        "limit": config.limit,
        "gen_kwargs": dict(config.gen_kwargs),
    }
    changing = {key: value for key, value in config.lmms_eval_args.items() if key not in RESULT_NEUTRAL_LMMS_EVAL_ARGS}
    if changing:  # only when set, so that cells stored before lmms_eval_args existed stay valid
        found["lmms_eval_args"] = changing
    return found


def _arg(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
