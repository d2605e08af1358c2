"""The report's figures: score against retained visual tokens (`plot_*`), score against measured cost
(`cost_*`), and where the time to first token goes (`time_*`).

One visual language in all three, meant to survive print and colour-blind readers:
- colour: Paul Tol's colour-blind-safe "muted" palette plus grey; every method also has its own marker,
  so more than ten methods stay apart without relying on colour alone;
- line style: solid = pre-LLM method (selects before the language model), dashed = in-LLM method (drops
  inside the decoder); the unpruned model is a black dotted line (or a star), the paper's points hollow;
- names: each method's display name (its class's), with its options only when one run holds several
  variants of it; benchmarks by their display names, y axes by metric and unit;
- 95 % intervals (stats.py) as error bars, nudged apart along x so that they do not hide each other;
- layout: matplotlib's constrained layout with the legend *outside* the axes, so nothing is cropped or
  covered at one benchmark or at twenty methods.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ..sweeps.tasks import task_benchmarks  # noqa: E402
from .tables import UNPRUNED, benchmark_columns, method_rank  # noqa: E402

# Paul Tol's "muted" scheme (colour-blind safe, https://personal.sron.nl/~pault/), Okabe-Ito orange, grey;
# past twelve methods colours repeat, but markers do not until the next twelve
PALETTE = ("#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255", "#AA4499", "#E69F00", "#777777")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*")
DPI = 150


# -- how each method looks ----------------------------------------------------------------------------
def method_stage(method: str) -> str:
    """'vision' (pre-LLM) or 'llm' (in-LLM); 'vision' for a method no longer registered."""
    from scope_eval.pruning import METHODS

    cls = METHODS.get(method)
    return cls.stage if cls is not None else "vision"


def legend_names(data: pd.DataFrame) -> dict[str, str]:
    """method_label -> the name a figure shows: the class's display name, plus the options when the run
    holds several variants of one method (e.g. "random (seed=1)")."""
    from scope_eval.pruning import METHODS

    rows = data.drop_duplicates("method_label")
    variants = rows.groupby("method")["method_label"].nunique()
    names = {}
    for _, row in rows.iterrows():
        method, label = row["method"], row["method_label"]
        shown = METHODS[method].label() if method in METHODS else method
        options = row.get("options")
        if variants[method] > 1 and label != method:
            shown += f" ({options.replace(',', ', ')})" if isinstance(options, str) and options else f" ({label})"
        names[label] = shown
    return names


def method_styles(data: pd.DataFrame) -> dict[str, dict]:
    """method_label -> matplotlib style (colour, marker, line style), ordered as the tables order rows."""
    labels = sorted(data["method_label"].unique(), key=lambda label: _rank(data, label))
    names = legend_names(data)
    styles, index = {}, 0
    for label in labels:
        method = data.loc[data["method_label"] == label, "method"].iloc[0]
        if method == UNPRUNED:
            styles[label] = {"color": "black", "marker": "*", "linestyle": ":", "label": names[label]}
            continue
        in_llm = method_stage(method) == "llm"
        styles[label] = {
            "color": PALETTE[index % len(PALETTE)],
            "marker": MARKERS[index % len(MARKERS)],
            "linestyle": "--" if in_llm else "-",
            "label": names[label] + (" [in-LLM]" if in_llm else ""),
        }
        index += 1
    return styles


def axis_label(data: pd.DataFrame, benchmark: str) -> str:
    """`F1 (%)`-style: the headline metric(s) of the benchmark and their unit."""
    rows = data[data["benchmark"] == benchmark]
    task = rows["task"].iloc[0]
    include = rows["include_path"].iloc[0] if "include_path" in rows else None
    dirs = (Path(include),) if isinstance(include, str) and include else ()
    try:
        found = next(b for b in task_benchmarks(task, dirs) if b.name == benchmark)
    except (KeyError, StopIteration):
        return str(rows["metric"].iloc[0])
    unit = found.unit or ("%" if found.scale == 100.0 else "")
    metric = " + ".join(m.replace("_", " ") for m in found.metrics)
    return f"{metric} ({unit})" if unit else metric


def chance_level(data: pd.DataFrame, benchmark: str) -> float | None:
    if "chance" not in data:
        rows = data[data["benchmark"] == benchmark]
        try:
            return next(b.chance for b in task_benchmarks(rows["task"].iloc[0]) if b.name == benchmark)
        except (KeyError, StopIteration):
            return None
    values = pd.to_numeric(data.loc[data["benchmark"] == benchmark, "chance"], errors="coerce").dropna()
    return float(values.iloc[0]) if len(values) else None


def _rank(data: pd.DataFrame, label: str) -> tuple[int, str]:
    method = data.loc[data["method_label"] == label, "method"].iloc[0]
    return method_rank(method), label


def _nudge(x: float, index: int, count: int, spread: float = 0.05) -> float:
    """x moved a little along a log axis, so that the error bars of methods at one budget sit side by side."""
    return x * 2 ** ((index - (count - 1) / 2) * spread / max(1, count / 6))


def _interval(points: pd.DataFrame) -> list | None:
    if "ci_low" not in points or points["ci_low"].isna().all():
        return None
    values = points["value"].to_numpy(dtype=float)
    low = pd.to_numeric(points["ci_low"], errors="coerce").to_numpy(dtype=float)
    high = pd.to_numeric(points["ci_high"], errors="coerce").to_numpy(dtype=float)
    return [[max(0.0, v - l) if not math.isnan(l) else 0.0 for v, l in zip(values, low)],
            [max(0.0, h - v) if not math.isnan(h) else 0.0 for v, h in zip(values, high)]]  # fmt: skip


def _panels(count: int, width: float, height: float, columns: int | None = None):
    columns = max(1, min(columns or (count if count <= 4 else 3), count))
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False, layout="constrained")
    for axis in list(axes.flat)[count:]:
        axis.set_visible(False)
    return figure, list(axes.flat)[:count]


def budget_tick(budget: float) -> str:
    """A budget as its tick: a token count (64) or a keep ratio (0.25)."""
    return str(int(budget)) if float(budget).is_integer() else f"{float(budget):g}"


def budget_axis_label(rows: pd.DataFrame) -> str:
    """What the budget axis counts: a share of each image's tokens (keep ratios, Qwen), tokens per crop
    (LLaVA-NeXT's per_crop policy: the budget of each crop), or tokens per image."""
    pruned = rows[rows["method"] != UNPRUNED]
    if len(pruned) and (pruned["budget"].astype(float) < 1).all():
        return "share of each image's visual tokens kept"
    if "budget_policy" in pruned and (pruned["budget_policy"] == "per_crop").any():
        return "retained visual tokens per crop (budget_policy per_crop)"
    return "retained visual tokens per image"


def _legend(figure: plt.Figure, axes: list, columns: int | None = None) -> None:
    """One legend for the figure, below every panel (constrained layout makes room for it)."""
    found: dict[str, object] = {}
    for axis in axes:
        for handle, name in zip(*axis.get_legend_handles_labels()):
            found.setdefault(name, handle)
    if found:
        width = figure.get_figwidth()
        per_row = columns or max(1, min(len(found), int(width // 2.6)))
        figure.legend(list(found.values()), list(found), loc="outside lower center", ncol=per_row, frameon=False, fontsize=8)


# -- score against retained visual tokens ---------------------------------------------------------------
def plot_run(tidy: pd.DataFrame, run: str, reference: pd.DataFrame, path: Path) -> Path:
    """One panel per benchmark: each method's score (with its 95 % interval when `tidy` has one) against
    the visual tokens it keeps, the unpruned model as a dotted line, the paper's numbers hollow."""
    return _save(run_figure(tidy, run, reference), path)


def run_figure(tidy: pd.DataFrame, run: str, reference: pd.DataFrame) -> plt.Figure:
    data = tidy[tidy["run"] == run]
    benchmarks = benchmark_columns(data["benchmark"].unique())
    paper_model = next(iter(data["paper_model"].dropna().unique()), None)
    published = reference[reference["model"] == paper_model] if paper_model else reference.iloc[0:0]
    styles = method_styles(data)
    figure, axes = _panels(len(benchmarks), 4.2, 3.3)
    pruning = [label for label in styles if styles[label]["color"] != "black"]
    for axis, benchmark in zip(axes, benchmarks):
        rows_here = data[data["benchmark"] == benchmark]
        for label, style in styles.items():
            points = rows_here[rows_here["method_label"] == label].sort_values("budget")
            if points.empty:
                continue
            if (points["method"] == UNPRUNED).all():
                value = float(points["value"].iloc[0])
                axis.axhline(value, color="black", linestyle=":", linewidth=1.4, label=style["label"])
                error = _interval(points)
                if error is not None:
                    axis.axhspan(value - error[0][0], value + error[1][0], color="black", alpha=0.06, linewidth=0)
            else:
                index = pruning.index(label)
                x = [_nudge(float(b), index, len(pruning)) for b in points["budget"]]
                axis.errorbar(x, points["value"], yerr=_interval(points), capsize=2, elinewidth=0.8, markersize=5, linewidth=1.5, **style)
            method = points["method"].iloc[0]
            if label != method:
                continue  # the paper only reports default options
            theirs = published[(published["method"] == method) & (published["benchmark"] == benchmark)].sort_values("budget")
            if theirs.empty:
                continue
            if method == UNPRUNED:
                axis.axhline(theirs["value"].iloc[0], color="black", linestyle=(0, (1, 3)), linewidth=0.8, alpha=0.6)
            else:
                axis.plot(theirs["budget"], theirs["value"], marker=style["marker"], markerfacecolor="none", linestyle=":",
                          linewidth=0.8, color=style["color"], alpha=0.8)  # fmt: skip
        chance = chance_level(data, benchmark)
        if chance is not None:
            axis.axhline(chance, color="grey", linewidth=0.8, linestyle="-.", label="chance")
        budgets = sorted(rows_here.loc[rows_here["method"] != UNPRUNED, "budget"].unique())
        if budgets:
            axis.set_xscale("log", base=2)
            axis.set_xticks(budgets, [budget_tick(b) for b in budgets])
            axis.minorticks_off()
        axis.set_title(benchmark, fontsize=10)
        axis.set_xlabel(budget_axis_label(rows_here), fontsize=8)
        axis.set_ylabel(axis_label(data, benchmark), fontsize=8)
        axis.tick_params(labelsize=8)
        axis.grid(alpha=0.3)
    _legend(figure, axes)
    caption = f"{run}: 95% intervals; solid = pre-LLM, dashed = in-LLM, dotted = unpruned"
    if paper_model:
        caption += f"; hollow = paper ({paper_model})"
    _caption(figure, caption)
    return figure


# -- accuracy against cost, and where the time goes (cost measured inside the evaluation runs) -----------
COST_AXES = (("ttft_s_median", 1000.0, "time to first token (ms, median per sample)"), ("prefill_flops_median", 1e-9, "prefill (GFLOPs, analytic)"))
TIME_PARTS = (("vision_s_median", "vision tower", "#88CCEE"), ("selection_s_median", "selection", "#CC6677"), ("llm_prefill_s_median", "LLM prefill", "#44AA99"))


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
    budgets, the unpruned model a star, 95% intervals as error bars, the Pareto front grey.
    None when the cells recorded no cost (runs made before per-sample timing)."""
    figure = cost_figure(stats, run)
    return None if figure is None else _save(figure, path)


def cost_figure(stats: pd.DataFrame, run: str) -> plt.Figure | None:
    data = stats[stats["run"] == run]
    if not _has_cost(data, "ttft_s_median"):
        return None
    benchmarks = benchmark_columns(data["benchmark"].unique())
    styles = method_styles(data)
    figure, flat = _panels(2 * len(benchmarks), 4.6, 3.4, columns=2)
    for number, benchmark in enumerate(benchmarks):
        rows_here = data[data["benchmark"] == benchmark]
        for axis, (column, scale, xlabel) in zip(flat[2 * number : 2 * number + 2], COST_AXES):
            points = []
            for label, style in styles.items():
                line = rows_here[rows_here["method_label"] == label].dropna(subset=[column]).sort_values(column)
                if line.empty:
                    continue
                x = line[column].to_numpy(dtype=float) * scale
                unpruned = style["color"] == "black"
                axis.errorbar(x, line["value"], yerr=_interval(line), capsize=2, elinewidth=0.7, linewidth=1.2,
                              markersize=11 if unpruned else 5, **{**style, "linestyle": "none" if unpruned else style["linestyle"]})  # fmt: skip
                points += list(zip(x, line["value"].to_numpy(dtype=float)))
            front = pareto_front(points)
            if len(front) > 1:
                axis.step(*zip(*front), where="post", color="grey", linewidth=3, alpha=0.35, label="Pareto front", zorder=0)
            axis.set_title(benchmark, fontsize=10)
            axis.set_xlabel(xlabel, fontsize=8)
            axis.set_ylabel(axis_label(data, benchmark), fontsize=8)
            axis.tick_params(labelsize=8)
            axis.grid(alpha=0.3)
    _legend(figure, flat)
    _caption(figure, f"{run}: score against cost, both from the same evaluation runs (95% intervals)")
    return figure


def plot_time_breakdown(stats: pd.DataFrame, run: str, path: Path) -> Path | None:
    """One horizontal stacked bar per method and budget: median vision, selection and LLM prefill time
    (median over the row's tasks of each task's median), the median time to first token as a black tick."""
    figure = time_figure(stats, run)
    return None if figure is None else _save(figure, path)


def time_figure(stats: pd.DataFrame, run: str) -> plt.Figure | None:
    data = stats[stats["run"] == run].drop_duplicates("cell_dir")
    if not _has_cost(data, "ttft_s_median"):
        return None
    names = legend_names(data)
    groups = sorted(data.groupby(["method_label", "budget"]), key=lambda item: (item[1]["method"].iloc[0] != UNPRUNED, -item[0][1], _rank(data, item[0][0])))
    rows = [f"{names[label]}  @{budget_tick(budget)}" for (label, budget), _ in groups]
    figure, axis = plt.subplots(figsize=(7.5, 1.4 + 0.24 * len(groups)), layout="constrained")
    positions = list(range(len(groups)))[::-1]  # first row on top
    left = [0.0] * len(groups)

    def median_ms(rows_: pd.DataFrame, column: str) -> float:
        value = 1000 * float(pd.to_numeric(rows_[column], errors="coerce").median())
        return 0.0 if math.isnan(value) else value

    for column, part, colour in TIME_PARTS:
        widths = [median_ms(rows_, column) for _, rows_ in groups]
        if column == "llm_prefill_s_median":  # an in-LLM method selects inside the prefill: shown once, as selection
            inside = [method_stage(rows_["method"].iloc[0]) == "llm" for _, rows_ in groups]
            selection = [median_ms(rows_, "selection_s_median") for _, rows_ in groups]
            widths = [max(0.0, w - s) if llm else w for w, s, llm in zip(widths, selection, inside)]
        axis.barh(positions, widths, left=left, color=colour, label=part, height=0.7)
        left = [a + w for a, w in zip(left, widths)]
    ttft = [1000 * float(pd.to_numeric(rows_["ttft_s_median"], errors="coerce").median()) for _, rows_ in groups]
    axis.scatter(ttft, positions, marker="|", s=160, color="black", label="time to first token", zorder=3)
    axis.set_yticks(positions, rows, fontsize=8)
    axis.set_xlabel("milliseconds (median per sample)", fontsize=9)
    axis.tick_params(axis="x", labelsize=8)
    axis.grid(axis="x", alpha=0.3)
    axis.set_ylim(-0.7, len(groups) - 0.3)
    figure.legend(loc="outside lower center", ncol=4, frameon=False, fontsize=8)
    _caption(figure, f"{run}: where the time to first token goes (measured in the evaluation)")
    return figure


def _caption(figure: plt.Figure, text: str, size: int = 9) -> None:
    """The figure's title, wrapped to its width (a one-panel figure is narrow)."""
    characters = max(30, int(figure.get_figwidth() * 72 / (0.6 * size)))
    figure.suptitle(textwrap.fill(text, characters), fontsize=size)


def _save(figure: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path
