"""The report's figures at one benchmark and one method, and at many of both: nothing cropped or covered,
axes labelled with metric and unit, display names, intervals drawn, the two stages told apart, a
colour-blind-safe palette, one readable bar per row in the time plot."""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from matplotlib.collections import LineCollection
from matplotlib.legend import Legend

from scope_eval.reports.plots import PALETTE, cost_figure, run_figure, time_figure
from scope_eval.reports.reference import reference_long

PRE_LLM = ["scope", "coverage", "saliency", "visionzip", "divprune", "vispruner", "cdpruner", "random"]
IN_LLM = ["fastv", "pdrop", "dart"]


def stats_frame(benchmarks: list[tuple[str, str]], methods: list[tuple[str, str, str]], budgets=(192, 128, 64)) -> pd.DataFrame:
    """Tidy + stats rows: benchmarks as (task, name), methods as (method, label, options); tie-free values."""
    rows = []
    for (task, benchmark), (number, (method, label, options)) in itertools.product(benchmarks, enumerate([("none", "none", "")] + methods)):
        for budget in [576] if method == "none" else budgets:
            value = 40.0 + number + budget / 64
            rows.append({
                "run": "hand", "model": "m", "paper_model": None, "method": method, "method_label": label, "options": options,
                "budget": budget, "task": task, "benchmark": benchmark, "metric": "(exact_match) x 100", "value": value,
                "ci_low": value - 3.0, "ci_high": value + 2.0, "cell_dir": f"{label}/{budget}/{task}",
                "ttft_s_median": 0.01 + budget / 1e4 + number / 1e3, "prefill_flops_median": 1e9 + budget * 1e6,
                "vision_s_median": 0.004, "selection_s_median": 0.001 + number / 1e4, "llm_prefill_s_median": budget / 2e4,
            })  # fmt: skip
    return pd.DataFrame(rows)


ONE = stats_frame([("scope_toy_pope", "Toy-POPE")], [("scope", "scope", "")])
MANY = stats_frame(
    [("scope_toy_pope", "Toy-POPE"), ("scope_toy_gqa", "Toy-GQA"), ("scope_toy_count", "Toy-Count"), ("scope_toy_mme", "Toy-MME"),
     ("scope_toy_pope_wide", "Toy-POPE-wide"), ("gqa", "GQA"), ("mme", "MME")],
    [(m, m, "") for m in PRE_LLM] + [(m, f"{m}_l1_after", "budget_unit=after_layer,layer=1") for m in IN_LLM]
    + [("random", "random_seed1", "seed=1"), ("scope", "scope_alpha0.5", "alpha=0.5")],
)  # fmt: skip


def assert_nothing_cropped_or_covered(figure: plt.Figure) -> None:
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    frame = figure.bbox.padded(1)
    legends = [l for l in figure.findobj(Legend)]
    drawn = [(a.get_title() or "a panel", a.get_tightbbox(renderer)) for a in figure.axes if a.get_visible()]  # ticks, labels
    drawn += [("the legend", l.get_window_extent(renderer)) for l in legends]
    captions = [figure._suptitle] + [t for legend in legends for t in legend.get_texts()]
    drawn += [(t.get_text(), t.get_window_extent(renderer)) for t in captions]  # the title and the legend's entries
    for name, box in drawn:
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, f"cropped: {name!r}"
    for legend, axis in itertools.product(legends, [a for a in figure.axes if a.get_visible()]):
        assert not legend.get_window_extent(renderer).overlaps(axis.get_tightbbox(renderer)), "legend covers a panel"
    for axis in figure.axes:
        if axis.get_visible():
            labels = [t.get_window_extent(renderer) for t in axis.get_yticklabels() if t.get_text()]
            assert all(not a.overlaps(b) for a, b in zip(labels, labels[1:])), "tick labels overlap"


@pytest.mark.parametrize("data", [ONE, MANY], ids=["one", "many"])
def test_score_against_budget(data):
    figure = run_figure(data, "hand", reference_long())
    assert_nothing_cropped_or_covered(figure)
    axes = [a for a in figure.axes if a.get_visible()]
    assert len(axes) == data["benchmark"].nunique()
    toy_pope = next(a for a in axes if a.get_title() == "Toy-POPE")
    assert toy_pope.get_ylabel() == "pope f1 score (%)" and "tokens" in toy_pope.get_xlabel()
    assert any(isinstance(c, LineCollection) for c in toy_pope.collections)  # the intervals
    names = [t.get_text() for t in figure.legends[0].get_texts()]
    assert "SCOPE" in names and "no pruning" in names and not any("_l1_after" in n for n in names)
    lines = {line.get_label(): line for line in toy_pope.get_lines() if not line.get_label().startswith("_")}
    lines.update({bars.get_label(): bars.lines[0] for bars in toy_pope.containers})  # a method's line with its error bars
    assert lines["SCOPE"].get_linestyle() == "-"
    if data is MANY:
        assert lines["FastV [in-LLM]"].get_linestyle() == "--" and lines["DART [in-LLM]"].get_linestyle() == "--"
        assert "random (seed=1)" in names and "SCOPE (alpha=0.5)" in names  # variants named by their options
        assert "chance" in names  # Toy-POPE's metadata: chance 50
        pruned = [l for label, l in lines.items() if label not in ("no pruning", "chance")]
        assert {l.get_color() for l in pruned} <= set(PALETTE)
        assert len({(l.get_color(), l.get_marker()) for l in pruned}) == len(pruned)  # every method distinct
    plt.close(figure)


def test_budget_axis_says_what_the_budget_counts():
    """Keep ratios (Qwen) tick as shares, not as 0; per-crop budgets (LLaVA-NeXT) say so; else tokens per image."""
    ratios = stats_frame([("scope_toy_pope", "Toy-POPE")], [("scope", "scope", "")], budgets=(0.25, 0.1))
    ratios["budget_policy"] = None
    per_crop = ONE.assign(budget_policy="per_crop")
    labels = {}
    for name, data in (("ratio", ratios), ("per_crop", per_crop), ("per_image", ONE.assign(budget_policy=None))):
        figure = run_figure(data, "hand", reference_long())
        axis = next(a for a in figure.axes if a.get_visible())
        labels[name] = (axis.get_xlabel(), [t.get_text() for t in axis.get_xticklabels()])
        plt.close(figure)
    assert labels["ratio"] == ("share of each image's visual tokens kept", ["0.1", "0.25"])
    assert labels["per_crop"][0] == "retained visual tokens per crop (budget_policy per_crop)"
    assert labels["per_image"] == ("retained visual tokens per image", ["64", "128", "192"])


@pytest.mark.parametrize("data", [ONE, MANY], ids=["one", "many"])
def test_cost_and_time_plots(data):
    figure = cost_figure(data, "hand")
    assert_nothing_cropped_or_covered(figure)
    assert all(a.get_ylabel() and "(" in a.get_xlabel() for a in figure.axes if a.get_visible())
    plt.close(figure)
    figure = time_figure(data, "hand")
    assert_nothing_cropped_or_covered(figure)
    (axis,) = figure.axes
    rows = [t.get_text() for t in axis.get_yticklabels()]
    assert len(rows) == data.drop_duplicates("cell_dir").groupby(["method_label", "budget"]).ngroups
    assert "SCOPE  @192" in rows and not any("_l1_after" in r for r in rows)
    assert figure.get_figheight() >= 0.2 * len(rows)  # a row per bar, never squeezed
    plt.close(figure)


def test_time_bars_count_an_in_llm_methods_selection_once():
    """An in-LLM method scores inside the LM prefill: its bar is vision + selection + (prefill - selection),
    so it ends at vision + prefill; a pre-LLM method's bar adds the three. Keep ratios label rows as @0.25."""
    data = stats_frame([("scope_toy_pope", "Toy-POPE")], [("scope", "scope", ""), ("fastv", "fastv", "layer=1")], budgets=(0.25,))
    data.loc[data["method"] != "none", "llm_prefill_s_median"] = 0.010  # the prefill holds the in-LLM selection (1.2 ms)
    figure = time_figure(data, "hand")
    (axis,) = figure.axes
    rows = [t.get_text() for t in axis.get_yticklabels()]
    ends = {}
    for bars in axis.containers:
        for row, bar in zip(rows, bars):
            ends[row] = max(ends.get(row, 0.0), bar.get_x() + bar.get_width())
    fastv = data[(data["method"] == "fastv")].iloc[0]
    scope = data[(data["method"] == "scope")].iloc[0]
    assert ends["FastV  @0.25"] == pytest.approx(1000 * (fastv["vision_s_median"] + fastv["llm_prefill_s_median"]))
    assert ends["SCOPE  @0.25"] == pytest.approx(1000 * (scope["vision_s_median"] + scope["selection_s_median"] + scope["llm_prefill_s_median"]))
    plt.close(figure)
