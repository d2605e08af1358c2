"""Score against retained visual tokens, one panel per benchmark, one line per method, with the
paper's points overlaid (hollow markers, dashed)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .tables import METHOD_ORDER, UNPRUNED, benchmark_columns  # noqa: E402


def plot_run(tidy: pd.DataFrame, run: str, reference: pd.DataFrame, path: Path) -> Path:
    data = tidy[tidy["run"] == run]
    benchmarks = benchmark_columns(data["benchmark"].unique())
    paper_model = next(iter(data["paper_model"].dropna().unique()), None)
    published = reference[reference["model"] == paper_model] if paper_model else reference.iloc[0:0]
    columns = min(4, len(benchmarks))
    rows = math.ceil(len(benchmarks) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.0 * columns, 3.2 * rows), squeeze=False)
    labels = sorted(data["method_label"].unique(), key=lambda label: _rank(data, label))
    colours = {label: f"C{index % 10}" for index, label in enumerate(labels)}
    for axis, benchmark in zip(axes.flat, benchmarks):
        rows_here = data[data["benchmark"] == benchmark]
        for label in labels:
            points = rows_here[rows_here["method_label"] == label].sort_values("budget")
            if points.empty:
                continue
            style = dict(color=colours[label], label=label)
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


def _rank(data: pd.DataFrame, label: str) -> tuple[int, str]:
    method = data.loc[data["method_label"] == label, "method"].iloc[0]
    order = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    return order, label
