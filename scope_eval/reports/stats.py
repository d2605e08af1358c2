"""Confidence intervals, paired tests and agreement with the unpruned model, from the logged samples.

Every finished cell keeps lmms-eval's per-sample log (``--log_samples``): one JSON line per document with
``doc_id``, the answer (``filtered_resps``) and, under each metric's name, what the task's
``process_results`` returned for it (a number such as ``exact_match: 1.0``, or a record such as POPE's
``{"prediction": "yes", "answer": "no", ...}`` that only a pooled aggregation turns into a score).

- Intervals: where the headline is the share of documents answered right (a mean of 0/1 scores, e.g.
  exact match), the Wilson score interval, which stays honest at 0 % and 100 % (8/8 right: about
  [68, 100], where a bootstrap collapses to [100, 100]). Pooled metrics (F1, the MME score): percentile
  bootstrap over documents. Each resample draws documents with replacement and
  recomputes the headline number exactly as the benchmark does: the task YAML's own aggregation
  functions (POPE F1, the MME score, ...) on the resampled records, summed and scaled as in
  ``sweeps.metrics``. MME-style metrics score pairs of questions per image (acc+), so there the image
  is the resampling unit and an image drawn twice counts as two images.
- Paired comparisons (same documents, same resampling draws for both cells): the bootstrap interval of
  the metric difference, its two-sided bootstrap p-value, and, where every item is scored right or
  wrong, the exact McNemar test on the discordant items. A difference is marked significant at
  p < 0.05: by McNemar when the headline is the mean of a right/wrong score (e.g. exact match),
  otherwise (pooled metrics: F1, MME score) by the paired bootstrap.
- Agreement with unpruned: the share of documents whose answer is identical (after stripping
  whitespace and case) to the unpruned model's, and the right->wrong / wrong->right flips.

Seeds come from constants and the cell's identity (run, task, method, budget), never from a computed
number, so a report is the same on any machine.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ..sweeps.cells import CELL_FILE
from ..sweeps.cost import COST_COLUMNS, cost_columns, logged_cost, summarise
from ..sweeps.metrics import Benchmark
from ..sweeps.tasks import known_tasks, read_task_yaml, task_benchmarks
from .forked import map_forked

RESAMPLES = 1000
CONFIDENCE = 0.95
SIGNIFICANCE = 0.05
SEED_SALT = "scope_eval.reports.stats/1"
UNPRUNED = "none"
REFERENCE_METHOD = "scope"
# Benchmarks whose aggregation groups the answers of one image (MME: acc+ needs both questions of an
# image right): resampled by image; the field naming the image in their per-sample records.
GROUPED_BY_IMAGE = {"MME": "question_id", "Toy-MME": "image_id"}


# -- seeds and resampling ---------------------------------------------------------------------------
def seed_for(*identity: object) -> int:
    """A 63-bit seed from constants and names only (stable across machines and Python versions)."""
    text = "|".join([SEED_SALT, *map(str, identity)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


WILSON_Z = 1.959963984540054  # two-sided 95 %


def wilson_interval(right: int, total: int, z: float = WILSON_Z) -> tuple[float, float]:
    """Wilson score interval of a proportion right/total, as fractions (Wilson 1927)."""
    if total <= 0:
        return math.nan, math.nan
    share = right / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def percentile_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def draws(units: int, seed: int, resamples: int = RESAMPLES) -> np.ndarray:
    """[resamples, units] indices of the units drawn with replacement."""
    return np.random.default_rng(seed).integers(0, units, size=(resamples, units))


def bootstrap_interval(score: Callable[[Sequence[int]], float], units: int, seed: int, resamples: int = RESAMPLES) -> tuple[float, float]:
    """Percentile interval of ``score(drawn unit indices)`` over bootstrap resamples of ``units`` units."""
    return percentile_interval(scores_of_rows(score, draws(units, seed, resamples)))


def paired_bootstrap(
    score_a: Callable[[Sequence[int]], float], score_b: Callable[[Sequence[int]], float], units: int, seed: int, resamples: int = RESAMPLES
) -> tuple[float, float, float]:
    """Interval and two-sided p-value of score_a - score_b, both scored on the same resampled units."""
    rows = draws(units, seed, resamples)
    differences = scores_of_rows(score_a, rows) - scores_of_rows(score_b, rows)
    low, high = percentile_interval(differences)
    p = min(1.0, 2 * min(float(np.mean(differences <= 0)), float(np.mean(differences >= 0))))
    return low, high, p


def scores_of_rows(score: Callable[[Sequence[int]], float], rows: np.ndarray) -> np.ndarray:
    """``score`` of every row of drawn unit indices: one array operation when ``score`` offers it
    (``ResampledHeadline.rows``), else row by row."""
    on_rows = getattr(score, "rows", None)
    return on_rows(rows) if on_rows is not None else np.array([score(row) for row in rows])


def mcnemar_exact(right_to_wrong: int, wrong_to_right: int) -> float:
    """Exact (binomial) McNemar p-value, two-sided, from the two discordant counts."""
    discordant = right_to_wrong + wrong_to_right
    if discordant == 0:
        return 1.0
    smaller = min(right_to_wrong, wrong_to_right)
    tail = sum(math.comb(discordant, k) for k in range(smaller + 1)) / 2**discordant
    return min(1.0, 2 * tail)


# -- per-sample logs --------------------------------------------------------------------------------
def load_samples(cell_dir: Path) -> list[dict]:
    """The cell's logged samples, ordered by doc_id ([] when the cell has no samples file)."""
    record = json.loads((cell_dir / CELL_FILE).read_text())
    relative = (record.get("files") or {}).get("samples")
    path = cell_dir / relative if relative else None
    if path is None or not path.is_file():
        return []
    with path.open() as lines:
        samples = [json.loads(line) for line in lines if line.strip()]
    return sorted(samples, key=lambda sample: sample.get("doc_id", 0))


def answer_of(sample: dict) -> str | None:
    answer = sample.get("filtered_resps")
    while isinstance(answer, list) and answer:
        answer = answer[0]
    return None if answer is None else str(answer).strip().lower()


def item_correct(value: Any) -> bool | None:
    """Whether one per-sample metric value says "right": a 0/1 number, a record's correct/score field, or
    its prediction against its answer. None when the value is not a right/wrong score (e.g. 0.3)."""
    if isinstance(value, dict):
        if isinstance(value.get("correct"), bool):
            return value["correct"]
        if "score" in value:
            return item_correct(value["score"])
        truth = value.get("answer", value.get("ground_truth"))
        if "prediction" in value and truth is not None:
            return str(value["prediction"]).strip().lower() == str(truth).strip().lower()
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and float(value) in (0.0, 1.0):
        return float(value) == 1.0
    return None


# -- the benchmark's own aggregation ---------------------------------------------------------------
@dataclass(frozen=True)
class FunctionRef:
    name: str  # "module.function" as written after !function
    yaml_dir: Path


def _task_yaml_loader(yaml_dir: Path) -> type:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: FunctionRef(loader.construct_scalar(node), yaml_dir))
    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    return Loader


def _metric_list(path: Path) -> list[dict]:
    """metric_list of a task YAML (its include chain merged), with !function tags kept as FunctionRef."""
    with path.open() as handle:
        data = yaml.load(handle, Loader=_task_yaml_loader(path.parent)) or {}
    if "metric_list" not in data and isinstance(data.get("include"), str) and (path.parent / data["include"]).is_file():
        return _metric_list(path.parent / data["include"])
    return [entry for entry in data.get("metric_list") or () if isinstance(entry, dict)]


@cache
def _builtin_task_yaml(task: str) -> Path | None:
    spec = importlib.util.find_spec("lmms_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    for path in sorted((Path(next(iter(spec.submodule_search_locations))) / "tasks").rglob("*.yaml")):
        if read_task_yaml(path).get("task") == task:
            return path
    return None


def _resolve(ref: FunctionRef) -> Callable:
    """As lmms-eval resolves !function: a module file beside the YAML first, else an importable module."""
    module_name, _, function_name = ref.name.rpartition(".")
    local = ref.yaml_dir / f"{module_name}.py"
    if local.is_file():
        spec = importlib.util.spec_from_file_location(f"scope_eval_stats_{module_name}", local)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    else:
        module = importlib.import_module(module_name)
    return getattr(module, function_name)


def _mean(values: list) -> float:
    return float(np.mean(values))


@cache
def aggregation(task: str, metric: str, include_dirs: tuple[Path, ...] = ()) -> Callable[[list], float] | None:
    """The function lmms-eval aggregates ``metric`` of ``task`` with; None when it cannot be found."""
    from ..sweeps.tasks import INCLUDE_DIR

    info = known_tasks(INCLUDE_DIR, include_dirs).get(task)
    path = info.yaml_path if info is not None and info.yaml_path is not None else _builtin_task_yaml(task)
    if path is None:
        return None
    for entry in _metric_list(path):
        if entry.get("metric") != metric:
            continue
        how = entry.get("aggregation", "mean")
        if isinstance(how, FunctionRef):
            return _resolve(how)
        return {"mean": _mean, "median": lambda values: float(np.median(values))}.get(how)
    return None


class HeadlineScorer:
    """A benchmark's headline number recomputed on any resample of a cell's samples."""

    def __init__(self, benchmark: Benchmark, task: str, samples: list[dict], include_dirs: tuple[Path, ...] = ()):
        self.benchmark = benchmark
        self.include_dirs = include_dirs
        self.functions = [(metric, aggregation(task, metric, include_dirs)) for metric in benchmark.metrics]
        self.samples = samples
        self.image_field = GROUPED_BY_IMAGE.get(benchmark.name)
        # (units, values per metric and unit, relabelled second draws) of the units last scored
        self._unit_values: tuple[list[list[int]], dict[str, list[list[Any]]], dict[tuple, list[Any]]] | None = None

    @property
    def usable(self) -> bool:
        return bool(self.samples) and all(
            function is not None and any(metric in sample for sample in self.samples) for metric, function in self.functions
        )

    @property
    def per_item(self) -> bool:
        """The headline is the mean of one right/wrong score per document (McNemar applies)."""
        return len(self.functions) == 1 and self.functions[0][1] is _mean and self.image_field is None

    def units(self) -> list[list[int]]:
        """Resampling units: documents, or (MME) the documents of one image."""
        if self.image_field is None:
            return [[index] for index in range(len(self.samples))]
        groups: dict[tuple, list[int]] = {}
        for index, sample in enumerate(self.samples):
            record = next((sample[m] for m, _ in self.functions if isinstance(sample.get(m), dict)), {})
            groups.setdefault((record.get("category"), record.get(self.image_field, index)), []).append(index)
        return list(groups.values())

    def score(self, units: list[list[int]], drawn: Sequence[int] | None = None) -> float:
        """The headline on the drawn units (all units, once each, when ``drawn`` is None): the metric values
        of their documents, in draw order, handed to the task's own aggregation functions."""
        picked = range(len(units)) if drawn is None else drawn
        total = 0.0
        for metric, function in self.functions:
            per_unit = self._values_by_unit(units, metric)
            if self.image_field is None:
                values = [value for unit in picked for value in per_unit[unit]]
            else:
                copies: dict[int, int] = {}
                values = []
                for unit in picked:
                    copy = copies.get(unit, 0)
                    copies[unit] = copy + 1
                    values += per_unit[unit] if copy == 0 else self._relabelled(metric, per_unit, unit, copy)
            total += float(function(values)) if values else 0.0  # type: ignore[misc]
        return total * self.benchmark.scale

    def resampled(self, units: list[list[int]]) -> ResampledHeadline:
        """The headline as a function of one resample (drawn unit indices) of these units."""
        return ResampledHeadline(self, units)

    def _values_by_unit(self, units: list[list[int]], metric: str) -> list[list[Any]]:
        """Per unit, its documents' values of ``metric`` (kept for the units last asked for: a bootstrap
        scores the same units a thousand times)."""
        if self._unit_values is None or self._unit_values[0] is not units:
            self._unit_values = (units, {}, {})
        by_metric = self._unit_values[1]
        if metric not in by_metric:
            by_metric[metric] = [[self.samples[i][metric] for i in unit if metric in self.samples[i]] for unit in units]
        return by_metric[metric]

    def _relabelled(self, metric: str, per_unit: list[list[Any]], unit: int, copy: int) -> list[Any]:
        """A second draw of an image must count as another image, not as two more answers to the first.
        ``per_unit``: this metric's values by unit (`_values_by_unit`); kept per (metric, unit, copy)."""
        key = (metric, unit, copy)
        relabelled = self._unit_values[2]  # type: ignore[index]
        if key not in relabelled:
            relabelled[key] = [
                {**value, self.image_field: f"{value.get(self.image_field)}#{copy}"} if isinstance(value, dict) else value
                for value in per_unit[unit]
            ]
        return relabelled[key]

    def right_wrong_per_unit(self, units: list[list[int]]) -> np.ndarray | None:
        """Per unit its document's 0/1 score, when the headline is their plain mean (one right/wrong value
        per unit, aggregated by the mean): then the mean of any resample is a count over its size, the same
        number whether added up one by one or as an array. None otherwise."""
        if not self.per_item:
            return None
        (metric, _), = self.functions
        per_unit = self._values_by_unit(units, metric)
        if any(len(values) != 1 or isinstance(values[0], dict) for values in per_unit):
            return None
        flat = [values[0] for values in per_unit]
        if any(not isinstance(value, (bool, int, float)) or float(value) not in (0.0, 1.0) for value in flat):
            return None
        return np.array([float(value) for value in flat])

    def right_count(self) -> int | None:
        """Documents answered right, when the headline is their share (a mean of one 0/1 score per
        document); None otherwise (pooled metrics, graded scores, MME's per-image pairs)."""
        if not self.per_item:
            return None
        (metric, _), = self.functions
        values = [self.samples[index].get(metric) for index in range(len(self.samples))]
        if any(not isinstance(v, (int, float)) or float(v) not in (0.0, 1.0) for v in values):  # bools count as 0/1
            return None
        return int(sum(float(v) for v in values))

    def correct(self, index: int) -> bool | None:
        values = [item_correct(self.samples[index].get(metric)) for metric, _ in self.functions if metric in self.samples[index]]
        return values[0] if len(values) == 1 else None


@dataclass
class ResampledHeadline:
    """A cell's headline on resamples of fixed units: ``self(drawn)`` for one resample, ``rows(matrix)``
    for a [resamples, units] matrix of them. Where the headline is a share of right/wrong answers, ``rows``
    counts them with one array operation (the same numbers: whole counts over the same size); else it
    scores each row with the task's own aggregation."""

    scorer: HeadlineScorer
    units: list[list[int]]

    def __call__(self, drawn: Sequence[int] | None = None) -> float:
        return self.scorer.score(self.units, drawn)

    def rows(self, rows: np.ndarray) -> np.ndarray:
        right = self.scorer.right_wrong_per_unit(self.units)
        if right is None:
            return np.array([self.scorer.score(self.units, row) for row in rows])
        return (0.0 + right[rows].mean(axis=1)) * self.scorer.benchmark.scale


# -- one report's statistics -------------------------------------------------------------------------
STAT_COLUMNS = [
    "ci_low", "ci_high", "ci_method", "resamples", "seed",
    *[f"vs_{ref}_{name}" for ref in ("unpruned", "scope") for name in ("diff", "diff_low", "diff_high", "p_bootstrap", "p_mcnemar", "test", "significant")],
    "paired_n", "answers_compared", "identical", "agreement", "right_to_wrong", "wrong_to_right",
]  # fmt: skip


def cell_statistics(tidy: pd.DataFrame, runs_dir: Path, resamples: int = RESAMPLES, processes: int = 1) -> pd.DataFrame:
    """The tidy table (one row per cell x benchmark) with intervals, paired tests and agreement added.
    `processes` > 1 spreads the rows over that many forked processes (forked.py): every row's numbers
    depend only on its own seeds and samples, so the table is the same, value for value, whatever the count
    (a `make demo` report bootstraps about a million resamples: most of its time)."""
    statistics = _RowStatistics(tidy, runs_dir, resamples)
    # A few rows at a time, as workers free up: rows differ 10x in cost.
    rows = map_forked(statistics, range(len(tidy)), processes, chunksize=4)
    return pd.DataFrame(rows, columns=list(tidy.columns) + STAT_COLUMNS)


class _RowStatistics:
    """One tidy row's statistics (`self(index)`), each cell's samples read once per process."""

    def __init__(self, tidy: pd.DataFrame, runs_dir: Path, resamples: int):
        self.tidy, self.runs_dir, self.resamples = tidy, runs_dir, resamples
        self.loaded: dict[str, list[dict]] = {}

    def samples_of(self, cell_dir: str) -> list[dict]:
        if cell_dir not in self.loaded:
            self.loaded[cell_dir] = load_samples(self.runs_dir / cell_dir)
        return self.loaded[cell_dir]

    def __call__(self, index: int) -> dict[str, Any]:
        tidy, resamples, row = self.tidy, self.resamples, self.tidy.iloc[index]
        stats: dict[str, Any] = {column: math.nan for column in STAT_COLUMNS}
        samples = self.samples_of(row["cell_dir"])
        if all(_missing(row.get(column)) for column in COST_COLUMNS):  # a cell stored before its cost summary was
            row = pd.Series({**row.to_dict(), **cost_columns(summarise([c for c in map(logged_cost, samples) if c]))})
        dirs = _include_dirs(row)
        benchmark = next(b for b in task_benchmarks(row["task"], dirs) if b.name == row["benchmark"])
        scorer = HeadlineScorer(benchmark, row["task"], samples, dirs)
        if scorer.usable:
            units = scorer.units()
            seed = seed_for(row["run"], row["task"], row["benchmark"], row["method_label"], row["budget"])
            stats.update(resamples=resamples, seed=seed)
            score = scorer.resampled(units)
            right = scorer.right_count()
            if right is not None:
                low, high = wilson_interval(right, len(scorer.samples))
                stats.update(ci_low=low * benchmark.scale, ci_high=high * benchmark.scale, ci_method="wilson")
            else:
                stats["ci_low"], stats["ci_high"] = bootstrap_interval(score, len(units), seed, resamples)
                stats["ci_method"] = "bootstrap"
            for reference, partner in (("unpruned", _unpruned_row(tidy, row)), ("scope", _scope_row(tidy, row))):
                if partner is not None:
                    stats.update(_paired(reference, row, partner, scorer, self.samples_of(partner["cell_dir"]), resamples))
        return {**row.to_dict(), **stats}


def _include_dirs(row: pd.Series) -> tuple[Path, ...]:
    folder = row.get("include_path")
    return (Path(folder),) if isinstance(folder, str) and folder else ()


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _same_cell_group(tidy: pd.DataFrame, row: pd.Series) -> pd.DataFrame:
    return tidy[(tidy["run"] == row["run"]) & (tidy["task"] == row["task"]) & (tidy["benchmark"] == row["benchmark"])]


def _unpruned_row(tidy: pd.DataFrame, row: pd.Series) -> pd.Series | None:
    if row["method"] == UNPRUNED:
        return None
    found = _same_cell_group(tidy, row)
    found = found[found["method"] == UNPRUNED]
    return found.iloc[0] if len(found) else None


def _scope_row(tidy: pd.DataFrame, row: pd.Series) -> pd.Series | None:
    if row["method"] in (UNPRUNED, REFERENCE_METHOD) or row["method_label"] == REFERENCE_METHOD:
        return None
    found = _same_cell_group(tidy, row)
    found = found[(found["method_label"] == REFERENCE_METHOD) & (found["budget"] == row["budget"])]
    return found.iloc[0] if len(found) else None


def _paired(reference: str, row: pd.Series, partner: pd.Series, scorer: HeadlineScorer, partner_samples: list[dict], resamples: int) -> dict:
    """This cell against ``partner`` on the documents both answered."""
    mine = {sample.get("doc_id"): sample for sample in scorer.samples}
    theirs = {sample.get("doc_id"): sample for sample in partner_samples}
    shared = sorted(set(mine) & set(theirs), key=str)
    if not shared:
        return {}
    a = HeadlineScorer(scorer.benchmark, row["task"], [mine[d] for d in shared], scorer.include_dirs)
    b = HeadlineScorer(scorer.benchmark, partner["task"], [theirs[d] for d in shared], scorer.include_dirs)
    if not b.usable:
        return {}
    units = a.units()  # same documents in the same order: the units of one are the units of the other
    seed = seed_for(row["run"], row["task"], row["benchmark"], row["method_label"], row["budget"], "vs", partner["method_label"], partner["budget"])
    low, high, p_bootstrap = paired_bootstrap(a.resampled(units), b.resampled(units), len(units), seed, resamples)
    flips = [(b.correct(i), a.correct(i)) for i in range(len(shared))]
    binary = all(before is not None and after is not None for before, after in flips)
    right_to_wrong = sum(1 for before, after in flips if before and after is False) if binary else None
    wrong_to_right = sum(1 for before, after in flips if before is False and after) if binary else None
    p_mcnemar = mcnemar_exact(right_to_wrong, wrong_to_right) if binary else math.nan
    test = "mcnemar" if binary and a.per_item else "paired bootstrap"
    p = p_mcnemar if test == "mcnemar" else p_bootstrap
    prefix = f"vs_{reference}_"
    out = {
        prefix + "diff": a.score(units) - b.score(units),
        prefix + "diff_low": low,
        prefix + "diff_high": high,
        prefix + "p_bootstrap": p_bootstrap,
        prefix + "p_mcnemar": p_mcnemar,
        prefix + "test": test,
        prefix + "significant": bool(p < SIGNIFICANCE),
    }
    if reference == "unpruned":
        answers = [(answer_of(mine[d]), answer_of(theirs[d])) for d in shared]
        identical = sum(1 for x, y in answers if x is not None and x == y)
        comparable = sum(1 for x, y in answers if x is not None and y is not None)
        out.update(
            paired_n=len(shared),
            answers_compared=comparable,
            identical=identical,
            agreement=100.0 * identical / comparable if comparable else math.nan,
            right_to_wrong=right_to_wrong if binary else math.nan,
            wrong_to_right=wrong_to_right if binary else math.nan,
        )
    return out
