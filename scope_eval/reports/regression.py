"""Accuracy regression check: re-run a fixed subset of sweeps and compare every metric with a baseline.

A regression config (configs/regression/*.yaml) names sweep configs, the subset to re-run (methods,
budgets, tasks, limit) and the stored baseline. The baseline keeps, per metric, its value and each
document's answer and score (from lmms-eval's logged samples), so the check is a paired comparison of
the same documents, not a flat tolerance in points. A metric regresses when its value is below the
baseline and its documents moved the wrong way beyond what a handful of near-tie answers flipping on
another machine can explain:
- right->wrong flips significantly exceed wrong->right flips: exact one-sided sign test (McNemar's test
  for right/wrong scores), at a family-wise false-alarm rate `false_alarm` split over the metrics
  (Bonferroni); or
- the net number of documents that got worse exceeds `net_flips_per_sqrt_doc` x sqrt(n): a drop check
  that scales with the number of documents n.
A metric without per-document scores (an aggregate-only task) falls back to `tolerance` points, and
fails with the fix named when no tolerance is set. A baseline entry that was not produced at all fails
too (a crashed cell must not pass as "no drop").
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import typer
import yaml
from rich.console import Console

from ..sweeps.cells import CELL_FILE
from ..sweeps.config import SweepConfigError, load_sweep, with_overrides
from ..sweeps.runner import WorkerLanes, print_summary, run_sweep
from .collect import MixedCellsError

KEY_COLUMNS = ["model", "method_label", "budget", "task", "benchmark"]
_KEYS = {"description", "sweeps", "methods", "budgets", "keep_ratios", "tasks", "limit", "baseline", "false_alarm",
         "net_flips_per_sqrt_doc", "tolerance"}
ANSWER_CHARS = 80  # of each stored answer: enough to see what changed, small enough for a reviewable baseline


@dataclass(frozen=True)
class Rule:
    """When a metric counts as regressed (see the module docstring)."""

    false_alarm: float = 0.01  # family-wise: chance that answers flipping at random fail any paired metric
    net_flips_per_sqrt_doc: float = 1.0  # documents allowed to get worse on balance, per sqrt(documents)
    tolerance: float | None = None  # points, only for metrics without per-document scores

    def net_flips_allowed(self, documents: int) -> float:
        return self.net_flips_per_sqrt_doc * math.sqrt(documents)


@dataclass(frozen=True)
class RegressionConfig:
    sweeps: tuple[Path, ...]
    baseline: Path
    rule: Rule = Rule()
    methods: tuple[str, ...] = ()
    budgets: tuple[int, ...] = ()
    keep_ratios: tuple[float, ...] = ()  # for sweeps whose budgets are keep ratios (Qwen)
    tasks: tuple[str, ...] = ()
    limit: int | None = None
    description: str = ""


@dataclass(frozen=True)
class Paired:
    """The same documents in the baseline and now: how many got a lower / higher score."""

    documents: int
    worse: int  # right -> wrong (or a lower score)
    better: int  # wrong -> right
    p_value: float  # one-sided exact sign test: P(at least `worse` of worse+better flips go wrong by chance)

    def describe(self) -> str:
        return (f"{self.worse} right->wrong, {self.better} wrong->right of {self.documents} documents "
                f"(one-sided sign test p={self.p_value:.2g})")  # fmt: skip


@dataclass
class Drop:
    key: dict[str, Any]
    baseline: float
    value: float | None
    paired: Paired | None = None
    reason: str = ""

    def describe(self) -> str:
        where = " ".join(f"{k}={v}" for k, v in self.key.items())
        if self.value is None:
            return f"{where}: missing (baseline {self.baseline:.2f})"
        text = f"{where}: {self.value:.2f} < baseline {self.baseline:.2f} ({self.value - self.baseline:+.2f})"
        if self.paired is not None:
            text += f"; {self.paired.describe()}"
        return text + (f"; {self.reason}" if self.reason else "")


@dataclass
class Verdict:
    checked: int = 0
    drops: list[Drop] = field(default_factory=list)
    flipped: int = 0  # documents whose score changed, over every paired metric (either way)

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
    for required in ("sweeps", "baseline"):
        if required not in data:
            raise SweepConfigError(f"{path}: missing '{required}'")
    defaults = Rule()
    false_alarm = _number(path, data, "false_alarm", defaults.false_alarm, "a probability between 0 and 1 (exclusive)")
    if not 0 < false_alarm < 1:
        raise SweepConfigError(f"{path}: false_alarm must be a probability between 0 and 1 (exclusive), got {false_alarm!r}")
    rule = Rule(
        false_alarm=false_alarm,
        net_flips_per_sqrt_doc=_number(path, data, "net_flips_per_sqrt_doc", defaults.net_flips_per_sqrt_doc, "a number >= 0"),
        tolerance=_number(path, data, "tolerance", None, "a number of points >= 0"),
    )
    for key in ("sweeps", "methods", "budgets", "keep_ratios", "tasks"):
        if data.get(key) is not None and not isinstance(data[key], list):
            raise SweepConfigError(f"{path}: {key} must be a list, got {data[key]!r}")
    here = path.parent
    return RegressionConfig(
        sweeps=tuple((here / s).resolve() for s in data["sweeps"]),
        baseline=(here / data["baseline"]).resolve(),
        rule=rule,
        methods=tuple(data.get("methods") or ()),
        budgets=tuple(data.get("budgets") or ()),
        keep_ratios=tuple(data.get("keep_ratios") or ()),
        tasks=tuple(data.get("tasks") or ()),
        limit=data.get("limit"),
        description=data.get("description", ""),
    )


def _number(path: Path, data: dict, key: str, default: float | None, expected: str) -> float | None:
    value = data.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise SweepConfigError(f"{path}: {key} must be {expected}, got {value!r}")
    return float(value)


def subset_sweeps(config: RegressionConfig, runs_dir: Path) -> list:
    """The sweeps cut down to the subset, all checked before anything runs: a task, budget or keep ratio of
    the regression config that no sweep has is a typo, never a reason to run a whole sweep. A sweep whose
    budgets are keep ratios is cut by `keep_ratios`, the others by `budgets`."""
    sweeps = [load_sweep(sweep_path) for sweep_path in config.sweeps]
    for name, wanted in (("tasks", config.tasks), ("budgets", config.budgets), ("keep_ratios", config.keep_ratios)):
        known = {value for sweep in sweeps for value in getattr(sweep, name)}
        unknown = [value for value in wanted if value not in known]
        if unknown:
            raise SweepConfigError(f"regression config: {name} {', '.join(map(str, unknown))} are in none of its sweeps; "
                                   f"they have: {', '.join(map(str, sorted(known)))}")  # fmt: skip
    subset = []
    for sweep in sweeps:
        tasks = [t for t in sweep.tasks if not config.tasks or t in config.tasks]
        if sweep.keep_ratios:
            name, wanted = "keep_ratios", config.keep_ratios
            kept = [r for r in sweep.keep_ratios if not wanted or r in wanted]
        else:
            name, wanted = "budgets", config.budgets
            kept = [b for b in sweep.budgets if not wanted or b in wanted]
        if not tasks or (wanted and not kept):
            raise SweepConfigError(f"regression config: sweep {sweep.source} has none of its tasks {list(config.tasks)} or "
                                   f"{name} {list(wanted)}; remove that sweep or add its own")  # fmt: skip
        subset.append(with_overrides(
            sweep, methods=list(config.methods) or None, tasks=tasks, limit=config.limit, output=str(runs_dir), **{name: kept or None}
        ))  # fmt: skip
    return subset


def run_subset(sweeps: list, console: Console) -> bool:
    """Run (or resume) the subset sweeps (`subset_sweeps`); True if every cell finished. Their workers are
    started once for all of them (WorkerLanes, with `parallel: cells`)."""
    ok = True
    with WorkerLanes() as lanes:
        for sweep in sweeps:
            summary = run_sweep(sweep, console=console, lanes=lanes)
            print_summary(summary, console)
            ok = ok and summary.ok
    return ok


def measured(runs_dir: Path, limit: int | float | None | Mapping[str, int | float | None] = None) -> pd.DataFrame:
    """Every metric of the finished cells at `limit` (one for all, or {model: limit}: each sweep's own
    when the regression config sets none), with its documents' answers and scores in column `items`.
    Only that limit: the same model at another --limit in the same runs folder shares every key column
    and must not stand in for it."""
    from .collect import tidy

    table = tidy(runs_dir).dropna(subset=["value"])

    def at_limit(model: str, ran: float) -> bool:
        wanted = limit.get(model, math.nan) if isinstance(limit, Mapping) else limit
        return (wanted is None and pd.isna(ran)) or (wanted is not None and ran == wanted)

    table = table[[at_limit(model, ran) for model, ran in zip(table["model"], table["limit"])]]
    items = [_cell_items(runs_dir / row["cell_dir"], row["task"], row["benchmark"]) for _, row in table.iterrows()]
    return table[KEY_COLUMNS + ["value"]].assign(items=items)


def _cell_items(cell: Path, task: str, benchmark_name: str) -> dict[str, list] | None:
    """{doc_id: [score, answer]} from the cell's logged samples, or None when it has none readable."""
    from ..sweeps.tasks import include_dirs_of, task_benchmarks

    try:
        record = json.loads((cell / CELL_FILE).read_text())
        samples = record.get("files", {}).get("samples")
        lines = (cell / samples).read_text().splitlines() if samples else []
    except (OSError, ValueError, AttributeError):
        return None
    benchmark = next(b for b in task_benchmarks(task, include_dirs_of(record)) if b.name == benchmark_name)
    items: dict[str, list] = {}
    for line in lines:
        sample = json.loads(line)
        scores = [item_score(sample[m]) for m in benchmark.metrics if m in sample]
        if not scores or None in scores:
            return None  # a metric this check cannot read per document: the tolerance fallback applies
        answer = sample.get("filtered_resps") or sample.get("resps") or [""]
        items[str(sample["doc_id"])] = [sum(scores), str(_first(answer))[:ANSWER_CHARS]]
    return items or None


def _first(value: Any) -> Any:
    while isinstance(value, list) and value:
        value = value[0]
    return value


def item_score(value: Any) -> float | None:
    """One document's score from its logged per-sample metric: a number (exact_match), or the record an
    aggregation reads (POPE / MME style: a 'correct' flag, a 'score', or a prediction and its answer)."""
    if isinstance(value, bool) or (isinstance(value, (int, float)) and math.isfinite(value)):
        return float(value)
    if isinstance(value, dict):
        if "correct" in value:
            return float(bool(value["correct"]))
        if isinstance(value.get("score"), (int, float)) and not isinstance(value["score"], bool):
            return float(value["score"])
        truth = next((value[k] for k in ("answer", "ground_truth", "label") if k in value), None)
        if "prediction" in value and truth is not None:
            return float(value["prediction"] == truth)
    return None


def sign_test(worse: int, better: int) -> float:
    """One-sided exact binomial p-value: P(X >= worse) for X ~ Binomial(worse + better, 1/2)."""
    flips = worse + better
    if flips == 0:
        return 1.0
    return sum(math.comb(flips, k) for k in range(worse, flips + 1)) / 2**flips


def paired(baseline_items: dict[str, list], current_items: dict[str, list]) -> Paired | None:
    """Worse / better counts over the baseline's documents; None when some of them were not answered now
    (another limit or task version: the documents are not the same)."""
    if not set(baseline_items) <= set(current_items):
        return None
    worse = sum(current_items[d][0] < baseline_items[d][0] for d in baseline_items)
    better = sum(current_items[d][0] > baseline_items[d][0] for d in baseline_items)
    return Paired(len(baseline_items), worse, better, sign_test(worse, better))


def compare(current: pd.DataFrame, baseline: pd.DataFrame, rule: Rule) -> Verdict:
    verdict = Verdict()
    now = {tuple(row[k] for k in KEY_COLUMNS): row for _, row in current.iterrows()}
    with_items = sum(isinstance(items, dict) for items in baseline.get("items", pd.Series(dtype=object)))
    alpha = rule.false_alarm / max(with_items, 1)  # Bonferroni over the paired metrics
    for _, row in baseline.iterrows():
        key = tuple(row[k] for k in KEY_COLUMNS)
        where = dict(zip(KEY_COLUMNS, key))
        verdict.checked += 1
        found = now.get(key)
        value = None if found is None else found["value"]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            verdict.drops.append(Drop(where, row["value"], None))
            continue
        value, reference = float(value), float(row["value"])
        stored, produced = row.get("items"), found.get("items")
        pair = paired(stored, produced) if isinstance(stored, dict) and isinstance(produced, dict) else None
        if pair is not None:
            verdict.flipped += pair.worse + pair.better
            if value >= reference or pair.worse <= pair.better:
                continue
            allowed = rule.net_flips_allowed(pair.documents)
            if pair.p_value < alpha:
                verdict.drops.append(Drop(where, reference, value, pair, f"significant at {alpha:.2g}"))
            elif pair.worse - pair.better > allowed:
                verdict.drops.append(Drop(where, reference, value, pair, f"net {pair.worse - pair.better} worse > {allowed:.1f} allowed"))
        elif rule.tolerance is not None:
            if value < reference - rule.tolerance:
                verdict.drops.append(Drop(where, reference, value, reason=f"no per-document scores; tolerance {rule.tolerance} points"))
        elif value < reference:
            reason = ("no per-document scores to compare (documents differ from the baseline's, or a task without "
                      "per-sample scores); re-record the baseline with --update-baseline, or set `tolerance` in the config")  # fmt: skip
            verdict.drops.append(Drop(where, reference, value, reason=reason))
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
    table.attrs["environment"] = record.get("environment")  # versions + lock digest it was recorded under
    return table


def recorded_environment() -> dict[str, Any]:
    """What a baseline records of the environment it was made in: package versions and the lock's digest."""
    from ..provenance import lock_digest, package_versions

    return {"versions": package_versions(), "lock_sha256": lock_digest()}


def environment_differences(recorded: Mapping[str, Any] | None, current: Mapping[str, Any]) -> list[str]:
    """One line per way the baseline's environment differs from this one (empty when they agree). A number
    may move with a library version, so the comparison goes on, but says why it might."""
    if not isinstance(recorded, Mapping):
        return ["the baseline records no package versions or lock digest (made before they were recorded); "
                "re-record it with --update-baseline to have them checked"]  # fmt: skip
    lines = []
    then, now = recorded.get("versions") or {}, current.get("versions") or {}
    for name in sorted(set(then) | set(now)):
        if then.get(name) != now.get(name):
            lines.append(f"{name} {then.get(name) or 'absent'} in the baseline, {now.get(name) or 'absent'} now")
    if recorded.get("lock_sha256") != current.get("lock_sha256"):
        lines.append(f"lock sha256 {str(recorded.get('lock_sha256'))[:12]} in the baseline, {str(current.get('lock_sha256'))[:12]} now")
    return lines


def write_baseline(path: Path, current: pd.DataFrame, config: RegressionConfig) -> None:
    """One metric per line (value and per-document [score, answer]), so a re-recording reviews as a diff."""
    header = {
        "description": config.description,
        "made_by": "scope-eval regress --update-baseline",
        "limit": config.limit,
        "environment": recorded_environment(),
        "items": "per metric: {doc_id: [score, answer]} from lmms-eval's logged samples",
    }
    rows = current.sort_values(KEY_COLUMNS).to_dict(orient="records")
    for row in rows:  # token budgets stay whole numbers beside keep ratios (a mixed column reads as floats)
        if isinstance(row["budget"], float) and row["budget"].is_integer():
            row["budget"] = int(row["budget"])
        if isinstance(row.get("items"), dict):  # documents in id order, whichever process answered them
            row["items"] = dict(sorted(row["items"].items(), key=_document_order))
    lines = [json.dumps(row, default=_plain) for row in rows]
    text = json.dumps(header, indent=1)[:-2] + ',\n "metrics": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _document_order(item: tuple[Any, Any]) -> tuple[int, int | str]:
    """Numeric document ids in numeric order, any other id after them by name."""
    doc_id = str(item[0])
    return (0, int(doc_id)) if doc_id.isdigit() else (1, doc_id)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)


def regress(
    config_path: Path = typer.Argument(..., help="regression config, e.g. configs/regression/toy.yaml"),
    runs: Path | None = typer.Option(None, "--output", "--runs", help="runs folder to use (and resume); default: a fresh temporary one (--runs: old spelling)"),
    update_baseline: bool = typer.Option(False, "--update-baseline", help="store this run as the new baseline"),
    num_processes: int | None = typer.Option(None, "--num-processes", help="processes per sweep, as scope-eval sweep --num-processes"),
    parallel: str | None = typer.Option(None, "--parallel", help="documents or cells, as scope-eval sweep --parallel"),
    isolation: str | None = typer.Option(None, "--isolation", help="worker (default) or process, as scope-eval sweep --isolation"),
) -> None:
    """Re-run a fixed subset and fail, naming each metric whose documents got significantly worse than the baseline's."""
    console = Console(soft_wrap=True)
    try:
        config = load_regression(config_path)
        baseline = None if update_baseline else read_baseline(config.baseline, config.limit)  # before hours of runs
        with tempfile.TemporaryDirectory(prefix="scope-regress-") as scratch:
            runs_dir = runs or Path(scratch)
            # None keeps each sweep's own number of processes, parallelism and isolation
            sweeps = [
                with_overrides(sweep, num_processes=num_processes, parallel=parallel, isolation=isolation)
                for sweep in subset_sweeps(config, runs_dir)
            ]
            finished = run_subset(sweeps, console)
            current = measured(runs_dir, {sweep.model.name: sweep.limit for sweep in sweeps})
            if update_baseline:
                if not finished:
                    console.print("[red]not all cells finished; baseline left unchanged[/]")
                    raise typer.Exit(1)
                write_baseline(config.baseline, current, config)
                console.print(f"baseline written: {config.baseline} ({len(current)} metrics)")
                return
            verdict = compare(current, baseline, config.rule)
    except (SweepConfigError, MixedCellsError) as error:
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/] {error}", highlight=False)
        raise typer.Exit(2) from None
    for line in environment_differences(baseline.attrs.get("environment"), recorded_environment()):
        console.print(f"[yellow]warning:[/] environment differs from the baseline's: {line}; compared anyway", highlight=False)
    for drop in verdict.drops:
        console.print(f"[red]REGRESSION[/] {drop.describe()}", markup=True, highlight=False)
    status = "[green]ok[/]" if verdict.ok else f"[red]{len(verdict.drops)} regression(s)[/]"
    rule = config.rule
    console.print(
        f"{status}: {verdict.checked} metrics checked against {config.baseline.name} ({verdict.flipped} document "
        f"score(s) changed; paired sign test at family-wise {rule.false_alarm}, net worse <= "
        f"{rule.net_flips_per_sqrt_doc} x sqrt(documents))",
        highlight=False,
    )
    if not verdict.ok or not finished:
        raise typer.Exit(1)
