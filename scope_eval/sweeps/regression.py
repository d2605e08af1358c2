"""Accuracy regression check: re-run a fixed subset of sweeps and compare every metric with a baseline.

A regression config (configs/regression/*.yaml) names sweep configs, the subset to re-run (methods,
budgets, tasks, limit), the stored baseline and a tolerance in points. The check fails, naming each
drop, when a metric falls more than the tolerance below its baseline, and also when a baseline entry
was not produced at all (a crashed cell must not pass as "no drop").
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import typer
import yaml
from rich.console import Console

from .config import SweepConfigError, load_sweep, with_overrides
from .runner import print_summary, run_sweep

KEY_COLUMNS = ["model", "method_label", "budget", "task", "benchmark"]
_KEYS = {"description", "sweeps", "methods", "budgets", "tasks", "limit", "baseline", "tolerance"}


@dataclass(frozen=True)
class RegressionConfig:
    sweeps: tuple[Path, ...]
    baseline: Path
    tolerance: float  # points (metrics are on their task's scale: accuracies in %, MME in points)
    methods: tuple[str, ...] = ()
    budgets: tuple[int, ...] = ()
    tasks: tuple[str, ...] = ()
    limit: int | None = None
    description: str = ""


@dataclass
class Drop:
    key: dict[str, Any]
    baseline: float
    value: float | None

    def describe(self) -> str:
        where = " ".join(f"{k}={v}" for k, v in self.key.items())
        if self.value is None:
            return f"{where}: missing (baseline {self.baseline:.2f})"
        return f"{where}: {self.value:.2f} < baseline {self.baseline:.2f} ({self.value - self.baseline:+.2f})"


@dataclass
class Verdict:
    checked: int = 0
    drops: list[Drop] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.drops


def load_regression(path: str | Path) -> RegressionConfig:
    path = Path(path)
    if not path.is_file():
        raise SweepConfigError(f"regression config '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise SweepConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise SweepConfigError(f"{path}: a regression config is a mapping with keys {', '.join(sorted(_KEYS))}")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise SweepConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_KEYS))}")
    for required in ("sweeps", "baseline", "tolerance"):
        if required not in data:
            raise SweepConfigError(f"{path}: missing '{required}'")
    tolerance = data["tolerance"]
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise SweepConfigError(f"{path}: tolerance must be a number of points >= 0, got {tolerance!r}")
    for key in ("sweeps", "methods", "budgets", "tasks"):
        if data.get(key) is not None and not isinstance(data[key], list):
            raise SweepConfigError(f"{path}: {key} must be a list, got {data[key]!r}")
    here = path.parent
    return RegressionConfig(
        sweeps=tuple((here / s).resolve() for s in data["sweeps"]),
        baseline=(here / data["baseline"]).resolve(),
        tolerance=float(tolerance),
        methods=tuple(data.get("methods") or ()),
        budgets=tuple(data.get("budgets") or ()),
        tasks=tuple(data.get("tasks") or ()),
        limit=data.get("limit"),
        description=data.get("description", ""),
    )


def subset_sweeps(config: RegressionConfig, runs_dir: Path) -> list:
    """The sweeps cut down to the subset, all checked before anything runs: a task or budget of the
    regression config that no sweep has is a typo, never a reason to run a whole sweep."""
    sweeps = [load_sweep(sweep_path) for sweep_path in config.sweeps]
    for name, wanted in (("tasks", config.tasks), ("budgets", config.budgets)):
        known = {value for sweep in sweeps for value in getattr(sweep, name)}
        unknown = [value for value in wanted if value not in known]
        if unknown:
            raise SweepConfigError(f"regression config: {name} {', '.join(map(str, unknown))} are in none of its sweeps; "
                                   f"they have: {', '.join(map(str, sorted(known)))}")  # fmt: skip
    subset = []
    for sweep in sweeps:
        tasks = [t for t in sweep.tasks if not config.tasks or t in config.tasks]
        budgets = [b for b in sweep.budgets if not config.budgets or b in config.budgets]
        if not tasks or (config.budgets and not budgets):
            raise SweepConfigError(f"regression config: sweep {sweep.source} has none of its tasks {list(config.tasks)} or "
                                   f"budgets {list(config.budgets)}; remove that sweep or add its own")  # fmt: skip
        subset.append(with_overrides(
            sweep, methods=list(config.methods) or None, budgets=budgets or None, tasks=tasks, limit=config.limit, output=str(runs_dir)
        ))  # fmt: skip
    return subset


def run_subset(config: RegressionConfig, runs_dir: Path, console: Console) -> bool:
    """Run (or resume) the subset of every sweep into runs_dir; True if every cell finished."""
    ok = True
    for sweep in subset_sweeps(config, runs_dir):
        summary = run_sweep(sweep, console=console)
        print_summary(summary, console)
        ok = ok and summary.ok
    return ok


def measured(runs_dir: Path, limit: int | float | None = None) -> pd.DataFrame:
    """The metrics of the finished cells at `limit` only: the same model at another --limit in the same
    runs folder shares every key column and must not stand in for it."""
    from scope_eval.reports.collect import tidy

    table = tidy(runs_dir)
    table = table[table["limit"].isna()] if limit is None else table[table["limit"] == limit]
    return table[KEY_COLUMNS + ["value"]].dropna(subset=["value"])


def compare(current: pd.DataFrame, baseline: pd.DataFrame, tolerance: float) -> Verdict:
    verdict = Verdict()
    now = {tuple(row[k] for k in KEY_COLUMNS): row["value"] for _, row in current.iterrows()}
    for _, row in baseline.iterrows():
        key = tuple(row[k] for k in KEY_COLUMNS)
        value = now.get(key)
        verdict.checked += 1
        if value is None or (isinstance(value, float) and math.isnan(value)):
            verdict.drops.append(Drop(dict(zip(KEY_COLUMNS, key)), row["value"], None))
        elif value < row["value"] - tolerance:
            verdict.drops.append(Drop(dict(zip(KEY_COLUMNS, key)), row["value"], float(value)))
    return verdict


def read_baseline(path: Path, limit: int | float | None = None) -> pd.DataFrame:
    if not path.is_file():
        raise SweepConfigError(f"baseline '{path}' does not exist; create it with `scope-eval regress CONFIG --update-baseline`")
    fix = "re-create it with `scope-eval regress CONFIG --update-baseline` (or restore it from git)"
    try:
        record = json.loads(path.read_text())
        table = pd.DataFrame(record["metrics"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SweepConfigError(f"baseline '{path}' is unreadable or damaged ({type(error).__name__}: {error}); {fix}") from None
    missing = [column for column in KEY_COLUMNS + ["value"] if column not in table]
    if table.empty or missing:
        raise SweepConfigError(f"baseline '{path}' holds no metrics{' with ' + ', '.join(missing) if missing else ''}; {fix}")
    if record.get("limit") != limit:
        raise SweepConfigError(f"baseline '{path}' was made with limit {record.get('limit')}, the config asks for {limit}; {fix}")
    return table


def write_baseline(path: Path, current: pd.DataFrame, config: RegressionConfig) -> None:
    record = {
        "description": config.description,
        "made_by": "scope-eval regress --update-baseline",
        "limit": config.limit,
        "metrics": current.sort_values(KEY_COLUMNS).to_dict(orient="records"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, default=_plain) + "\n")


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)


def regress(
    config_path: Path = typer.Argument(..., help="regression config, e.g. configs/regression/toy.yaml"),
    runs: Path | None = typer.Option(None, help="runs folder to use (and resume); default: a fresh temporary one"),
    update_baseline: bool = typer.Option(False, "--update-baseline", help="store this run as the new baseline"),
) -> None:
    """Re-run a fixed subset and fail, naming each drop, if a metric falls below baseline - tolerance."""
    console = Console()
    try:
        config = load_regression(config_path)
        baseline = None if update_baseline else read_baseline(config.baseline, config.limit)  # before hours of runs
        with tempfile.TemporaryDirectory(prefix="scope-regress-") as scratch:
            runs_dir = runs or Path(scratch)
            finished = run_subset(config, runs_dir, console)
            current = measured(runs_dir, config.limit)
            if update_baseline:
                if not finished:
                    console.print("[red]not all cells finished; baseline left unchanged[/]")
                    raise typer.Exit(1)
                write_baseline(config.baseline, current, config)
                console.print(f"baseline written: {config.baseline} ({len(current)} metrics)")
                return
            verdict = compare(current, baseline, config.tolerance)
    except SweepConfigError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    for drop in verdict.drops:
        console.print(f"[red]REGRESSION[/] {drop.describe()}", markup=True, highlight=False)
    status = "[green]ok[/]" if verdict.ok else f"[red]{len(verdict.drops)} regression(s)[/]"
    console.print(f"{status}: {verdict.checked} metrics checked against {config.baseline.name}, tolerance {config.tolerance} points")
    if not verdict.ok or not finished:
        raise typer.Exit(1)
