"""Reports: the paper's own Avg recomputed from its raw numbers, tables and plots from a (fake) runs folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from scope_eval.reports.commands import write_report
from scope_eval.reports.reference import AVG, reference_long, render_reference_markdown
from scope_eval.reports.tables import compare_with_paper, markdown, paper_layout, relative_avg
from scope_eval.sweeps.config import sweep_from_dict
from scope_eval.sweeps.runner import run_sweep

REPO = Path(__file__).resolve().parents[1]
FAKE = Path(__file__).resolve().parent / "fake_lmms_eval.py"
# Printed Avg values that do not follow from the printed cells (research/paper_tables.md, Table 6 notes).
PAPER_TYPOS = {("llava-1.5-13b", "visionzip", 128): 98.0, ("llava-1.5-13b", "visionzip", 64): 93.4}


def paper_avg(model: str, method: str, budget: int) -> tuple[float, float]:
    """(recomputed, printed) Avg of one published row, over the benchmarks of its table."""
    data = reference_long()
    rows = data[(data["model"] == model) & (data["method"] == method) & (data["budget"] == budget)]
    source = rows.loc[rows["benchmark"] == AVG, "source"].iloc[0]
    table = data[(data["source"] == source) & (data["model"] == model)]
    unpruned = table[table["method"] == "none"]
    benchmarks = [b for b in table["benchmark"].unique() if b != AVG]
    scores = dict(zip(rows["benchmark"], rows["value"]))
    recomputed = relative_avg(scores, dict(zip(unpruned["benchmark"], unpruned["value"])), benchmarks)
    return recomputed, scores[AVG]


def test_scope_at_64_tokens_keeps_96_percent():
    recomputed, printed = paper_avg("llava-1.5-7b", "scope", 64)
    assert printed == 96.0
    assert round(recomputed, 1) == 96.0


@pytest.mark.parametrize(
    "model, method, budget, expected",
    [
        ("llava-1.5-7b", "scope", 192, 99.5),
        ("llava-1.5-7b", "visionzip", 64, 93.5),
        ("llava-next-7b", "scope", 160, 95.1),
        ("llava-next-13b", "scope", 320, 96.9),
        ("llava-1.5-13b", "visionzip", 128, 98.0),  # printed 97.0: a typo in the paper
    ],
)
def test_paper_avg_recomputes(model, method, budget, expected):
    recomputed, _ = paper_avg(model, method, budget)
    assert abs(recomputed - expected) < 0.051


def test_every_printed_avg_matches_its_cells_except_known_typos():
    data = reference_long()
    for (model, method, budget), _ in data[data["benchmark"] == AVG].groupby(["model", "method", "budget"]):
        recomputed, printed = paper_avg(model, method, budget)
        expected = PAPER_TYPOS.get((model, method, budget), printed)
        assert abs(recomputed - expected) < 0.1, (model, method, budget, recomputed, printed)


def test_reference_keeps_a_number_printed_in_two_tables_once():
    data = reference_long()
    scope_gqa = data[(data["model"] == "llava-1.5-7b") & (data["method"] == "scope") & (data["budget"] == 64) & (data["benchmark"] == "GQA")]
    assert list(scope_gqa["value"]) == [58.3]
    assert set(data["source"]) == {f"arXiv 2510.24214 Table {n}" for n in (1, 2, 4, 5, 6, 7, 8, 9)}


def test_results_paper_folder_is_the_rendered_package_data():
    for name, text in render_reference_markdown().items():
        assert (REPO / "results" / "paper" / name).read_text() == text, f"re-run: python -m scope_eval.reports.reference results/paper ({name})"


@pytest.fixture(scope="module")
def fake_runs(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    config = sweep_from_dict({
        "model": {"name": "llava-v1.5-7b", "backend": "llava_scope", "pretrained": "liuhaotian/llava-v1.5-7b",
                  "family": "llava-1.5", "paper": "llava-1.5-7b"},
        "methods": ["none", "scope", "random", {"name": "random", "options": {"seed": 1}}],
        "budgets": [192, 64],
        "tasks": ["gqa", "mme", "pope"],
        "group_tasks": True,
        "output": str(runs),
    })  # fmt: skip
    summary = run_sweep(config, [sys.executable, str(FAKE)], Console(file=open(os.devnull, "w")))
    assert summary.ok
    return runs


def fake_ratio(method_quality: float, budget: int) -> float:
    """tests/fake_lmms_eval.py scores relative to its unpruned score (which is 0.8)."""
    return 100 * method_quality * (0.9 + 0.1 * budget / 576)


def test_report_tables_and_plot_from_a_runs_folder(fake_runs, tmp_path):
    files, cells = write_report(fake_runs, tmp_path / "report")
    assert set(cells["benchmark"]) == {"GQA", "MME", "POPE"}
    assert len(cells) == 3 * (1 + 3 * 2)
    table = pd.read_csv(tmp_path / "report" / "table_llava-v1.5-7b.csv")
    page = (tmp_path / "report" / "table_llava-v1.5-7b.md").read_text()
    md_columns = [c.strip() for c in next(l for l in page.splitlines() if l.startswith("| method")).strip("|").split("|")]
    assert md_columns[:6] == ["method", "budget", "GQA", "MME", "POPE", AVG] and "TTFT ms (median)" in md_columns
    assert [c for c in table.columns if c in md_columns] == md_columns  # the CSV: every Markdown column, as numbers,
    assert {"GQA low", "GQA high", "GQA vs unpruned", "GQA vs SCOPE"} <= set(table.columns)  # + each interval split out
    tex = (tmp_path / "report" / "table_llava-v1.5-7b.tex").read_text()
    assert all(column.replace("%", "\\%") in tex for column in md_columns)  # the TeX: the Markdown's columns and text
    assert list(table["method"][:4]) == ["none", "scope", "random", "random_seed1"]
    assert table.loc[0, AVG] == pytest.approx(100.0)
    scope_64 = table[(table["method"] == "scope") & (table["budget"] == 64)].iloc[0]
    assert scope_64[AVG] == pytest.approx(fake_ratio(0.97, 64))
    assert scope_64["MME"] == pytest.approx(200 * 0.8 * fake_ratio(0.97, 64) / 100)
    assert (tmp_path / "report" / "table_llava-v1.5-7b.md").read_text().count("| scope") == 2
    assert "\\begin{tabular}" in (tmp_path / "report" / "table_llava-v1.5-7b.tex").read_text()
    png = tmp_path / "report" / "plot_llava-v1.5-7b.png"
    assert files.plots == [png] and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_comparison_with_the_paper(fake_runs):
    from scope_eval.reports.collect import tidy

    cells = tidy(fake_runs)
    comparison = compare_with_paper(cells, "llava-v1.5-7b", reference_long())
    assert "random_seed1" not in set(comparison["method"])  # non-default options are not the paper's method
    row = comparison[(comparison["method"] == "scope") & (comparison["budget"] == 64) & (comparison["benchmark"] == "POPE")].iloc[0]
    assert row["paper"] == 83.9 and row["ours"] == pytest.approx(0.8 * fake_ratio(0.97, 64))
    assert row["diff"] == pytest.approx(row["ours"] - 83.9)
    avg = comparison[(comparison["method"] == "scope") & (comparison["budget"] == 64) & (comparison["benchmark"] == "Avg (3)")].iloc[0]
    paper_three = (58.3 / 61.9 + 1698 / 1862 + 83.9 / 85.9) / 3 * 100  # the paper's Avg over the shared benchmarks
    assert avg["paper"] == pytest.approx(paper_three) and avg["ours"] == pytest.approx(fake_ratio(0.97, 64))
    # random at 192 has no published row: nothing to compare
    assert comparison[(comparison["method"] == "random") & (comparison["budget"] == 192)].empty
    layout = paper_layout(cells, "llava-v1.5-7b")
    assert layout.iloc[0]["method"] == "none"


def test_report_command_prints_the_row_beside_the_paper(fake_runs, tmp_path):
    command = [sys.executable, "-m", "scope_eval", "report", str(fake_runs), "--output", str(tmp_path), "--method", "scope", "--method", "none", "--budget", "64"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "reproduced / paper (difference)" in result.stdout
    assert "/ 83.9 (" in result.stdout  # SCOPE POPE at 64 tokens in the paper
    printed = result.stdout.split("written to")[0]
    assert re.search(r"\|\s+64 \|", printed) and not re.search(r"\|\s+192 \|", printed)  # only the rows asked for


def test_report_on_an_empty_folder_is_an_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "scope_eval", "report", str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and "no finished cells" in result.stderr


def test_avg_counts_one_seedbench_run_once():
    rows = [
        ("none", 576, "SEED", 50.0), ("none", 576, "SEED-I", 60.0), ("none", 576, "GQA", 40.0),
        ("scope", 64, "SEED", 25.0), ("scope", 64, "SEED-I", 60.0), ("scope", 64, "GQA", 40.0),
    ]  # fmt: skip
    cells = pd.DataFrame(
        [dict(run="m", method=m, method_label=m, budget=b, benchmark=k, value=v) for m, b, k, v in rows]
    )
    table = paper_layout(cells, "m")
    assert list(table.columns) == ["method", "budget", "GQA", "SEED", "SEED-I", AVG]
    assert table.loc[table["method"] == "scope", AVG].item() == pytest.approx((100 + 50) / 2)  # SEED-I not counted
    only_seed_image = paper_layout(cells[cells["benchmark"] != "SEED"], "m")
    assert only_seed_image.loc[only_seed_image["method"] == "scope", AVG].item() == pytest.approx(100.0)


def test_rows_carry_the_layer_averaged_tokens_and_flops_beside_accuracy():
    """In-LLM rows are compared at equal compute: the table's visual-token column is the layer average the
    wrappers record, next to the prefill FLOPs, both medians over the row's cells."""
    import pandas as pd

    from scope_eval.reports.tables import _median

    cells = pd.DataFrame({"cell_dir": ["a", "a", "b", "c"], "tokens_mean": [234.7, 234.7, 240.0, None],
                          "prefill_flops_median": [1.2e9, 1.2e9, 1.4e9, 1.3e9]})
    assert _median(cells, "tokens_mean") == pytest.approx(237.35)  # one value per cell, missing ones skipped
    assert _median(cells, "prefill_flops_median") == pytest.approx(1.3e9)
    assert _median(cells, "ttft_s_median") is None


def test_markdown_writes_budgets_exactly_and_scores_at_one_decimal():
    """Keep ratios (Qwen, Table 8) must not be rounded like the scores: 0.25 stays 0.25, 0.1 stays 0.1."""
    table = pd.DataFrame({"method": ["none", "scope", "scope", "scope"], "budget": [1.0, 0.25, 0.1, 64], "POPE": [88.44, 86.51, 84.3, 80.0]})
    rows = [line.split("|")[1:-1] for line in markdown(table).splitlines()[2:]]
    assert [cells[1].strip() for cells in rows] == ["1", "0.25", "0.1", "64"]
    assert [cells[2].strip() for cells in rows] == ["88.4", "86.5", "84.3", "80.0"]
