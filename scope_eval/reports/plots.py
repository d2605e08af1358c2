"""Score against retained visual tokens, one panel per benchmark, one line per method, with the
paper's points overlaid (hollow markers, dashed)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .tables import UNPRUNED, benchmark_columns, display_name, method_rank  # noqa: E402


def plot_run(tidy: pd.DataFrame, run: str, reference: pd.DataFrame, path: Path) -> Path:
    data = tidy[tidy["run"] == run]
    benchmarks = benchmark_columns(data["benchmark"].unique())
    paper_model = next(iter(data["paper_model"].dropna().unique()), None)
    published = reference[reference["model"] == paper_model] if paper_model else reference.iloc[0:0]
    columns = min(4, len(benchmarks))
    rows = math.ceil(len(benchmarks) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.0 * columns, 3.2 * rows), squeeze=False)
    labels = sorted(data["method_label"].unique(), key=lambda label: _rank(data, label))
    colours = {label: _colour(index) for index, label in enumerate(labels)}
    for axis, benchmark in zip(axes.flat, benchmarks):
        rows_here = data[data["benchmark"] == benchmark]
        for label in labels:
            points = rows_here[rows_here["method_label"] == label].sort_values("budget")
            if points.empty:
                continue
            style = dict(color=colours[label], label=_legend(data, label))
            if (points["method"] == UNPRUNED).all():
                axis.axhline(points["value"].iloc[0], linestyle=":", **style)
            else:
                axis.plot(points["budget"], points["value"], marker="o", **style)
            method = points["method"].iloc[0]
            if label != method:
                continue  # the paper only reports default options
            theirs = published[(published["method"] == method) & (published["benchmark"] == benchmark)]
            theirs = theirs.sort_values("budget")
            if not theirs.empty and method != UNPRUNED:
                axis.plot(theirs["budget"], theirs["value"], marker="o", markerfacecolor="none", linestyle="--", color=colours[label], alpha=0.7)
            elif not theirs.empty:
                axis.axhline(theirs["value"].iloc[0], linestyle="--", color=colours[label], alpha=0.5)
        budgets = sorted(rows_here.loc[rows_here["method"] != UNPRUNED, "budget"].unique())
        if budgets:
            axis.set_xscale("log", base=2)
            axis.set_xticks(budgets, [str(b) for b in budgets])
            axis.minorticks_off()
        axis.set_title(benchmark)
        axis.set_xlabel("retained visual tokens")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(benchmarks):]:
        axis.set_visible(False)
    legend: dict[str, object] = {}
    for axis in axes.flat:
        for handle, name in zip(*axis.get_legend_handles_labels()):
            legend.setdefault(name, handle)
    handles, names = list(legend.values()), list(legend)
    caption = f"{run}: solid = reproduced, dotted = unpruned"
    if paper_model:
        caption += f"; hollow/dashed = paper ({paper_model}, arXiv 2510.24214)"
    figure.legend(handles, names, loc="lower center", ncol=min(len(names), 7), frameon=False)
    figure.suptitle(caption, fontsize=10)
    figure.tight_layout(rect=(0, 0.08, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _colour(index: int):
    """Distinct colours for up to 20 rows: tab20's ten strong hues first, then their light variants."""
    return plt.cm.tab20((2 * index) % 20 + (index // 10) % 2)


def _legend(data: pd.DataFrame, label: str) -> str:
    return display_name(label, data.loc[data["method_label"] == label, "method"].iloc[0])


def _rank(data: pd.DataFrame, label: str) -> tuple[int, str]:
    method = data.loc[data["method_label"] == label, "method"].iloc[0]
    return method_rank(method), label


# -- accuracy against cost, and where the time goes (cost measured inside the evaluation runs) -----------
COST_AXES = (("ttft_s_median", 1000.0, "time to first token, ms (median)"), ("prefill_flops_median", 1e-9, "prefill GFLOPs (analytic)"))
TIME_PARTS = (("vision_s_median", "vision tower"), ("selection_s_median", "selection"), ("llm_prefill_s_median", "LLM prefill"))


def _has_cost(data: pd.DataFrame, column: str) -> bool:
    return column in data and pd.to_numeric(data[column], errors="coerce").notna().any()


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both cost (lower) and score (higher), by increasing cost."""
    front: list[tuple[float, float]] = []
    for cost, score in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or score > front[-1][1]:
            front.append((cost, score))
    return front


def plot_accuracy_vs_cost(stats: pd.DataFrame, run: str, path: Path) -> Path | None:
    """Per benchmark: score against measured TTFT and against prefill FLOPs; each method a line through its
    budgets, the unpruned model a star, 95% intervals as error bars, the Pareto front dashed grey.
    None when the cells recorded no cost (runs made before per-sample timing)."""
    data = stats[stats["run"] == run]
    if not _has_cost(data, "ttft_s_median"):
        return None
    benchmarks = benchmark_columns(data["benchmark"].unique())
    figure, axes = plt.subplots(len(benchmarks), 2, figsize=(9.0, 3.2 * len(benchmarks)), squeeze=False)
    labels = sorted(data["method_label"].unique(), key=lambda label: _rank(data, label))
    colours = {label: _colour(index) for index, label in enumerate(labels)}
    for row, benchmark in zip(axes, benchmarks):
        rows_here = data[data["benchmark"] == benchmark]
        for axis, (column, scale, xlabel) in zip(row, COST_AXES):
            points = []
            for label in labels:
                line = rows_here[rows_here["method_label"] == label].dropna(subset=[column]).sort_values(column)
                if line.empty:
                    continue
                x = line[column].to_numpy(dtype=float) * scale
                y = line["value"].to_numpy(dtype=float)
                error = [y - line["ci_low"].to_numpy(dtype=float), line["ci_high"].to_numpy(dtype=float) - y]
                unpruned = (line["method"] == UNPRUNED).all()
                style = {"color": colours[label], "label": _legend(data, label), "marker": "*" if unpruned else "o", "markersize": 11 if unpruned else 5}
                axis.errorbar(x, y, yerr=error, linestyle="none" if unpruned else "-", capsize=2, **style)
                points += list(zip(x, y))
            front = pareto_front(points)
            if len(front) > 1:
                axis.step(*zip(*front), where="post", color="grey", linestyle="--", linewidth=1, label="Pareto front")
            axis.set_title(benchmark)
            axis.set_xlabel(xlabel)
            axis.grid(alpha=0.3)
    legend: dict[str, object] = {}
    for axis in axes.flat:
        for handle, name in zip(*axis.get_legend_handles_labels()):
            legend.setdefault(name, handle)
    figure.legend(list(legend.values()), list(legend), loc="lower center", ncol=min(len(legend), 6), frameon=False)
    figure.suptitle(f"{run}: score against cost, both from the same evaluation runs", fontsize=10)
    figure.tight_layout(rect=(0, 0.06, 1, 0.96))
    return _save(figure, path)


def plot_time_breakdown(stats: pd.DataFrame, run: str, path: Path) -> Path | None:
    """One stacked bar per method and budget: median vision, selection and LLM prefill time (median over
    the row's tasks of each task's median), with the median time to first token as a black tick."""
    data = stats[stats["run"] == run].drop_duplicates("cell_dir")
    if not _has_cost(data, "ttft_s_median"):
        return None
    groups = sorted(data.groupby(["method_label", "budget"]), key=lambda item: (item[1]["method"].iloc[0] != UNPRUNED, -item[0][1], _rank(data, item[0][0])))
    names = [f"{label}\n{budget}" for (label, budget), _ in groups]
    figure, axis = plt.subplots(figsize=(max(5.0, 0.7 * len(groups) + 2), 3.8))
    bottom = [0.0] * len(groups)
    for index, (column, part) in enumerate(TIME_PARTS):
        heights = [1000 * float(pd.to_numeric(rows[column], errors="coerce").median()) for _, rows in groups]
        heights = [0.0 if math.isnan(h) else h for h in heights]
        axis.bar(names, heights, bottom=bottom, color=f"C{index}", label=part)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ttft = [1000 * float(pd.to_numeric(rows["ttft_s_median"], errors="coerce").median()) for _, rows in groups]
    axis.scatter(names, ttft, marker="_", s=400, color="black", label="time to first token", zorder=3)
    axis.set_ylabel("ms (median per sample)")
    axis.set_title(f"{run}: where the time to first token goes (measured in the evaluation)", fontsize=10)
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)


def _save(figure: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
