"""The paper's table layout (rows method x budget, columns benchmarks, Avg) and the side-by-side with
the published numbers."""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import pandas as pd

from ..sweeps.metrics import BENCHMARK_ORDER, averaged
from .reference import AVG

UNPRUNED = "none"
# Methods whose rows exist only as published numbers (no class in the registry), with their place among
# the registered ones (PruningMethod.report_rank). None at present: SparseVLM, the last one, has a class
# (report_rank 100, between FastV and PDrop as in the paper); its published rows stay as reference rows.
PUBLISHED_ONLY_RANKS: dict[str, int] = {}
UNKNOWN_RANK = 10_000


def method_rank(name: str) -> int:
    """Row order inside one budget (lower first): each method class's ``report_rank``."""
    from scope_eval.pruning import METHODS

    if name in METHODS:
        return METHODS[name].report_rank
    return PUBLISHED_ONLY_RANKS.get(name, UNKNOWN_RANK)


def display_name(label: str, method: str) -> str:
    """How a plot names a row: the method class's display name for its default-options row, else the label."""
    from scope_eval.pruning import METHODS

    return METHODS[method].label() if label == method and method in METHODS else label


def relative_avg(scores: Mapping[str, float], unpruned: Mapping[str, float], benchmarks: Iterable[str]) -> float:
    """The paper's "Avg": mean over benchmarks of score / unpruned score x 100. NaN if any is missing."""
    ratios = []
    for benchmark in benchmarks:
        score, reference = scores.get(benchmark), unpruned.get(benchmark)
        if score is None or reference is None or _missing(score) or _missing(reference) or reference == 0:
            return math.nan
        ratios.append(100.0 * score / reference)
    return sum(ratios) / len(ratios) if ratios else math.nan


def benchmark_columns(names: Iterable[str]) -> list[str]:
    names = set(names) - {AVG}
    return [b for b in BENCHMARK_ORDER if b in names] + sorted(names - set(BENCHMARK_ORDER))


def paper_layout(tidy: pd.DataFrame, run: str) -> pd.DataFrame:
    """One run (model [+ limit]) as the paper prints it: method, budget, one column per benchmark, Avg
    over those benchmarks relative to the unpruned row (NaN where a cell is missing). A second view of
    an already counted task (SEED-I beside SEED) is shown but not averaged, unless it stands alone."""
    data = tidy[tidy["run"] == run]
    wide = data.pivot_table(index=["method", "method_label", "budget"], columns="benchmark", values="value", aggfunc="first")
    columns = benchmark_columns(wide.columns)
    wide = wide[columns].reset_index()
    unpruned_rows = wide[wide["method"] == UNPRUNED]
    unpruned = unpruned_rows.iloc[0][columns].to_dict() if len(unpruned_rows) else {}
    counted = averaged(columns)
    wide[AVG] = [relative_avg(row[columns].to_dict(), unpruned, counted) for _, row in wide.iterrows()]
    wide = _sorted_rows(wide)
    return wide.drop(columns=["method"]).rename(columns={"method_label": "method"}).reset_index(drop=True)


def compare_with_paper(tidy: pd.DataFrame, run: str, reference: pd.DataFrame) -> pd.DataFrame:
    """Long table (method, budget, benchmark, ours, paper, diff, source) for every reproduced cell the
    paper also reports, plus an Avg row per (method, budget) computed for both sides over the
    benchmarks they share, each relative to its own unpruned row (the paper's Avg recomputed)."""
    columns = ["method", "budget", "benchmark", "ours", "paper", "diff", "source"]
    data = tidy[(tidy["run"] == run) & (tidy["method"] == tidy["method_label"])]  # default options only
    paper_model = data["paper_model"].dropna().unique()
    if data.empty or len(paper_model) == 0:
        return pd.DataFrame(columns=columns)
    published = reference[reference["model"] == paper_model[0]]
    ours_unpruned = _scores(data[data["method"] == UNPRUNED])
    paper_unpruned = _scores(published[published["method"] == UNPRUNED])
    rows = []
    for (method, budget), group in data.groupby(["method", "budget"], sort=False):
        theirs = published[(published["method"] == method) & (published["budget"] == budget)]
        ours_scores, paper_scores = _scores(group), _scores(theirs)
        shared = [b for b in benchmark_columns(ours_scores) if b in paper_scores]
        sources = dict(zip(theirs["benchmark"], theirs["source"]))
        for benchmark in shared:
            ours, paper = ours_scores[benchmark], paper_scores[benchmark]
            rows.append([method, budget, benchmark, ours, paper, ours - paper, sources[benchmark]])
        if shared:
            ours_avg = relative_avg(ours_scores, ours_unpruned, shared)
            paper_avg = relative_avg(paper_scores, paper_unpruned, shared)
            label = f"{AVG} ({len(shared)})"
            rows.append([method, budget, label, ours_avg, paper_avg, ours_avg - paper_avg, "recomputed over shared benchmarks"])
    return _sorted_rows(pd.DataFrame(rows, columns=columns)).reset_index(drop=True)


def comparison_grid(comparison: pd.DataFrame) -> pd.DataFrame:
    """The long comparison as rows (method, budget) and one 'ours / paper (diff)' column per benchmark."""
    if comparison.empty:
        return pd.DataFrame()
    text = comparison.assign(cell=[f"{o:.1f} / {p:.1f} ({d:+.1f})" for o, p, d in comparison[["ours", "paper", "diff"]].values])
    grid = text.pivot_table(index=["method", "budget"], columns="benchmark", values="cell", aggfunc="first", sort=False)
    order = benchmark_columns(c for c in grid.columns if not c.startswith(AVG)) + [c for c in grid.columns if c.startswith(AVG)]
    return _sorted_rows(grid[order].reset_index()).reset_index(drop=True)


def select_rows(table: pd.DataFrame, methods: Iterable[str] = (), budgets: Iterable[int] = ()) -> pd.DataFrame:
    methods, budgets = list(methods), list(budgets)
    keep = pd.Series(True, index=table.index)
    if methods:
        keep &= table["method"].isin(methods)
    if budgets:
        keep &= table["budget"].isin(budgets) | (table["method"] == UNPRUNED)
    return table[keep]


def budget_as_text(table: pd.DataFrame) -> pd.DataFrame:
    """The budget column written exactly (576, 64, or a keep ratio such as 0.25), not at the scores' one decimal."""
    if "budget" not in table.columns:
        return table
    return table.assign(budget=[b if pd.isna(b) else f"{b:g}" for b in table["budget"]])


def markdown(table: pd.DataFrame) -> str:
    """Markdown with one decimal and a dash for a missing number (the budget written exactly)."""
    cells = table.astype(object).where(table.notna(), None)
    formats = ["g" if column == "budget" else ".1f" for column in table.columns]
    return cells.to_markdown(index=False, floatfmt=formats, missingval="–")


def _scores(rows: pd.DataFrame) -> dict[str, float]:
    return {b: float(v) for b, v in zip(rows["benchmark"], rows["value"])}


def _sorted_rows(table: pd.DataFrame) -> pd.DataFrame:
    label = "method_label" if "method_label" in table else "method"
    order = sorted(
        table.index,
        key=lambda i: (
            table.at[i, "method"] != UNPRUNED,
            -table.at[i, "budget"],
            method_rank(table.at[i, "method"]),
            str(table.at[i, label]),
        ),
    )
    return table.loc[order]


def _missing(value: float) -> bool:
    return isinstance(value, float) and math.isnan(value)


# -- intervals, significance and agreement (statistics from scope_eval/reports/stats.py) ----------------
AGREEMENT = "agreement with unpruned"
TTFT = "TTFT ms (median)"
VISUAL = "visual tokens (layer avg)"
GFLOPS = "prefill GFLOPs"
MARK_VS_UNPRUNED = "†"
MARK_VS_SCOPE = "‡"
MARKS_LEGEND = (
    "Each score is `value [95% interval]` over documents: the Wilson score interval where the score is the share "
    "of documents answered right (exact match: honest at 0% and 100%), a percentile bootstrap over documents "
    "(images for MME) where it is pooled (F1, the MME score); stats_*.csv names the method per cell (`ci_method`). "
    f"{MARK_VS_UNPRUNED} = differs from the unpruned "
    f"model on the same documents, {MARK_VS_SCOPE} = differs from SCOPE at the same budget (p < 0.05: exact McNemar "
    "for right/wrong-per-item metrics, paired bootstrap for pooled ones such as F1 and the MME score). "
    f"'{AGREEMENT}': share of answers identical to the unpruned model's (r→w / w→r: answers that turned "
    f"wrong / right). '{TTFT}': time to first token measured in the evaluation itself (median over samples; "
    "for several tasks, the median of the tasks' medians). "
    f"'{VISUAL}': visual tokens per sample that reached the language model, for in-LLM methods averaged over its "
    f"decoder layers (the budget unit that makes both stages equal in compute); '{GFLOPS}': the analytic prefill "
    "FLOPs per sample (median), each in-LLM layer priced at its own length."
)


def interval_layout(stats: pd.DataFrame, run: str, as_text: bool = True) -> pd.DataFrame:
    """The paper layout as text: `93.1 [88.0, 97.2]†` per benchmark, Avg, agreement with unpruned, TTFT.

    ``as_text=False``: the same columns with numbers (for CSV), each benchmark's interval and significance
    in columns of their own beside it (`GQA low`, `GQA high`, `GQA vs unpruned`, `GQA vs SCOPE`)."""
    data = stats[stats["run"] == run]
    layout = paper_layout(data, run)
    columns = benchmark_columns(data["benchmark"].unique())
    rows = []
    for _, line in layout.iterrows():
        cells = data[(data["method_label"] == line["method"]) & (data["budget"] == line["budget"])]
        row: dict[str, object] = {"method": line["method"], "budget": line["budget"]}
        for benchmark in columns:
            found = cells[cells["benchmark"] == benchmark]
            if as_text:
                row[benchmark] = _with_interval(found.iloc[0]) if len(found) else None
            else:
                row.update(_numbers(benchmark, found.iloc[0] if len(found) else None))
        row[AVG] = line[AVG]
        row[AGREEMENT] = _agreement(cells.drop_duplicates("cell_dir"))
        row[VISUAL] = _median(cells, "tokens_mean")
        flops = _median(cells, "prefill_flops_median")
        row[GFLOPS] = None if flops is None else flops / 1e9
        ttft = _median(cells, "ttft_s_median")
        row[TTFT] = None if ttft is None else 1000 * ttft
        rows.append(row)
    if not as_text:
        return pd.DataFrame(rows)
    return pd.DataFrame(rows, columns=["method", "budget", *columns, AVG, AGREEMENT, VISUAL, GFLOPS, TTFT])


def _numbers(benchmark: str, cell: pd.Series | None) -> dict[str, object]:
    get = (lambda key: None) if cell is None else (lambda key: cell.get(key))
    return {
        benchmark: get("value"),
        f"{benchmark} low": get("ci_low"),
        f"{benchmark} high": get("ci_high"),
        f"{benchmark} vs unpruned": MARK_VS_UNPRUNED if get("vs_unpruned_significant") is True else "",
        f"{benchmark} vs SCOPE": MARK_VS_SCOPE if get("vs_scope_significant") is True else "",
    }


def _median(cells: pd.DataFrame, column: str) -> float | None:
    """Median over the row's cells (one per task) of a per-cell number, None when no cell has it."""
    if column not in cells:
        return None
    values = pd.to_numeric(cells.drop_duplicates("cell_dir")[column], errors="coerce").dropna()
    return float(values.median()) if len(values) else None


def _with_interval(cell: pd.Series) -> str:
    text = f"{cell['value']:.1f}"
    if not _missing(cell.get("ci_low", math.nan)):
        text += f" [{cell['ci_low']:.1f}, {cell['ci_high']:.1f}]"
    if cell.get("vs_unpruned_significant") is True:
        text += MARK_VS_UNPRUNED
    if cell.get("vs_scope_significant") is True:
        text += MARK_VS_SCOPE
    return text


def _agreement(cells: pd.DataFrame) -> str | None:
    """Pooled over the row's cells (each cell once): identical answers / paired answers, and the flips."""
    compared = pd.to_numeric(cells["answers_compared"], errors="coerce")
    known = cells[compared > 0]
    if known.empty:
        return None
    text = f"{100.0 * known['identical'].sum() / known['answers_compared'].sum():.1f}%"
    flips = known[["right_to_wrong", "wrong_to_right"]].apply(pd.to_numeric, errors="coerce")
    if not flips.isna().any().any():
        text += f" ({int(flips['right_to_wrong'].sum())} r→w, {int(flips['wrong_to_right'].sum())} w→r)"
    return text
