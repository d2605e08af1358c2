"""Statistics of the reports (intervals, paired tests, agreement) against known cases, and the per-sample
cost every scope model records."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scope_eval.reports.stats import (
    HeadlineScorer,
    bootstrap_interval,
    cell_statistics,
    mcnemar_exact,
    paired_bootstrap,
    seed_for,
    wilson_interval,
)
from scope_eval.sweeps.tasks import task_benchmarks

REPO = Path(__file__).resolve().parents[1]


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


# -- a binomial proportion ---------------------------------------------------------------------------
def test_bootstrap_interval_of_a_proportion_matches_wilson_for_large_n():
    n, successes = 2000, 1400
    items = np.array([1.0] * successes + [0.0] * (n - successes))
    low, high = bootstrap_interval(lambda drawn: float(items[drawn].mean()), n, seed_for("binomial", n), resamples=2000)
    wilson_low, wilson_high = wilson(successes, n)  # 0.6797 .. 0.7196
    assert abs(low - wilson_low) < 0.004 and abs(high - wilson_high) < 0.004


def test_bootstrap_interval_of_a_degenerate_proportion_is_exact():
    always, never = np.ones(30), np.zeros(30)
    assert bootstrap_interval(lambda drawn: float(always[drawn].mean()), 30, seed_for("all right")) == (1.0, 1.0)
    assert bootstrap_interval(lambda drawn: float(never[drawn].mean()), 30, seed_for("all wrong")) == (0.0, 0.0)


def test_wilson_interval_stays_honest_at_zero_and_one_hundred_percent():
    low, high = wilson_interval(8, 8)
    assert high == 1.0 and low == pytest.approx(0.6756, abs=1e-4)  # 8/8: about [68, 100], not [100, 100]
    assert wilson_interval(0, 16)[0] == 0.0 and wilson_interval(0, 16)[1] == pytest.approx(0.1936, abs=1e-4)
    assert wilson_interval(1400, 2000) == pytest.approx(wilson(1400, 2000))


def test_a_share_of_right_answers_gets_a_wilson_interval_named_in_the_stats(tmp_path):
    """8 documents all right: Wilson [67.6, 100] (a bootstrap would say [100, 100]); a pooled POPE F1 keeps the bootstrap."""
    samples = [{"doc_id": d, "filtered_resps": "yes", "exact_match": 1.0} for d in range(8)]
    tidy = pd.DataFrame([_tidy_row("none", 576, _write_cell(tmp_path, "none", samples), 100.0)])
    row = cell_statistics(tidy, tmp_path, resamples=200).iloc[0]
    assert row["ci_method"] == "wilson" and row["ci_high"] == pytest.approx(100.0)
    assert row["ci_low"] == pytest.approx(100 * wilson(8, 8)[0], abs=1e-3)
    (pope,) = task_benchmarks("scope_toy_pope")
    records = [{"doc_id": d, "pope_f1_score": {"prediction": "yes", "answer": "yes" if d % 2 else "no"}} for d in range(10)]
    assert HeadlineScorer(pope, "scope_toy_pope", records).right_count() is None  # pooled: bootstrap


def test_seeds_come_from_names_only():
    assert seed_for("run", "task", "scope", 64) == seed_for("run", "task", "scope", 64)
    assert seed_for("run", "task", "scope", 64) != seed_for("run", "task", "scope", 128)
    assert 0 <= seed_for("x") < 2**63


# -- a hand-computed paired difference ---------------------------------------------------------------
@pytest.mark.parametrize(
    "right_to_wrong, wrong_to_right, expected",
    [
        (1, 6, 2 * (1 + 7) / 2**7),  # binomial(7, 1/2): P(X <= 1) = 8/128, two-sided 0.125
        (0, 5, 2 / 2**5),  # 0.0625
        (3, 1, 2 * (1 + 4) / 2**4),  # 0.625
        (4, 4, 1.0),
        (0, 0, 1.0),
    ],
)
def test_exact_mcnemar_on_small_tables(right_to_wrong, wrong_to_right, expected):
    assert mcnemar_exact(right_to_wrong, wrong_to_right) == pytest.approx(expected)


def test_paired_bootstrap_of_identical_cells_is_zero_and_not_significant():
    values = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    low, high, p = paired_bootstrap(lambda d: values[d].mean(), lambda d: values[d].mean(), 6, seed_for("same"))
    assert (low, high, p) == (0.0, 0.0, 1.0)


def _write_cell(runs: Path, name: str, samples: list[dict]) -> str:
    folder = runs / name
    folder.mkdir(parents=True)
    (folder / "samples.jsonl").write_text("".join(json.dumps(sample) + "\n" for sample in samples))
    (folder / "cell.json").write_text(json.dumps({"files": {"samples": "samples.jsonl"}}))
    return name


def _tidy_row(method: str, budget: int, cell_dir: str, value: float, task: str = "scope_toy_gqa", benchmark: str = "Toy-GQA") -> dict:
    return {"run": "hand", "task": task, "benchmark": benchmark, "method": method, "method_label": method,
            "budget": budget, "value": value, "cell_dir": cell_dir}  # fmt: skip


def test_paired_flips_agreement_and_mcnemar_counted_by_hand(tmp_path):
    # ten documents; 1 = right. unpruned vs random: docs 0, 1, 2 turn wrong, doc 9 turns right.
    unpruned = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    pruned = [0, 0, 0, 1, 1, 1, 0, 0, 0, 1]
    answers_unpruned = ["red", "blue", "left", "red", "square", "green", "x", "y", "z", "w"]
    answers_pruned = ["blue", "red", "right", "red", "square", "green", "x", "q", "z", "right"]  # 5 identical
    scope = [1, 1, 0, 1, 1, 1, 0, 0, 0, 1]

    def samples(correct, answers):
        return [{"doc_id": d, "filtered_resps": answers[d], "exact_match": float(c)} for d, c in enumerate(correct)]

    tidy = pd.DataFrame([
        _tidy_row("none", 576, _write_cell(tmp_path, "none", samples(unpruned, answers_unpruned)), 60.0),
        _tidy_row("scope", 64, _write_cell(tmp_path, "scope", samples(scope, answers_unpruned)), 60.0),
        _tidy_row("random", 64, _write_cell(tmp_path, "random", samples(pruned, answers_pruned)), 40.0),
    ])  # fmt: skip
    stats = cell_statistics(tidy, tmp_path, resamples=500).set_index("method")
    row = stats.loc["random"]
    assert (row["right_to_wrong"], row["wrong_to_right"]) == (3, 1)
    assert row["identical"] == 5 and row["agreement"] == pytest.approx(50.0)
    assert row["vs_unpruned_diff"] == pytest.approx(40.0 - 60.0)
    assert row["vs_unpruned_test"] == "mcnemar"
    assert row["vs_unpruned_p_mcnemar"] == pytest.approx(0.625) and not row["vs_unpruned_significant"]
    # against SCOPE at 64: docs 0, 1 right -> wrong, none the other way: p = 2 * 1/4 = 0.5
    assert row["vs_scope_diff"] == pytest.approx(-20.0) and row["vs_scope_p_mcnemar"] == pytest.approx(0.5)
    assert row["ci_low"] <= 40.0 <= row["ci_high"] and row["ci_low"] < row["ci_high"]
    assert math.isnan(stats.loc["scope", "vs_scope_diff"])  # SCOPE is not compared with itself
    again = cell_statistics(tidy, tmp_path, resamples=500).set_index("method")
    assert again.loc["random", "ci_low"] == row["ci_low"] and again.loc["random", "ci_high"] == row["ci_high"]  # fixed seeds


def test_statistics_spread_over_processes_are_the_same_table_value_for_value(tmp_path, monkeypatch):
    """Rows computed in forked processes (the report's default on several CPUs) equal the one-process table
    exactly: Wilson rows, McNemar pairs, bootstrapped pooled MME scores and POPE F1, paired with unpruned and SCOPE."""
    from scope_eval.reports import forked

    rng = np.random.default_rng(7)
    rows = []
    for method, budget in (("none", 576), ("scope", 64), ("random", 64), ("scope", 128), ("random", 128)):
        gqa = [{"doc_id": d, "filtered_resps": str(rng.integers(3)), "exact_match": float(rng.random() < 0.6)} for d in range(24)]
        rows.append(_tidy_row(method, budget, _write_cell(tmp_path, f"gqa_{method}_{budget}", gqa), 60.0))
        mme = [{"doc_id": d, "filtered_resps": "yes", "mme_score": {"image_id": str(d // 2), "category": "color" if d < 12 else "count",
                "correct": bool(rng.random() < 0.7)}} for d in range(24)]  # fmt: skip
        rows.append(_tidy_row(method, budget, _write_cell(tmp_path, f"mme_{method}_{budget}", mme), 100.0, "scope_toy_mme", "Toy-MME"))
        pope = [{"doc_id": d, "filtered_resps": "yes", "pope_f1_score": {"question_id": str(d), "prediction": str(rng.choice(["yes", "no"])),
                 "answer": "yes" if d % 2 else "no", "category": "random"}} for d in range(24)]  # fmt: skip
        rows.append(_tidy_row(method, budget, _write_cell(tmp_path, f"pope_{method}_{budget}", pope), 50.0, "scope_toy_pope", "Toy-POPE"))
    tidy = pd.DataFrame(rows)
    pools = []

    class CountedPool(forked.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(forked, "ProcessPoolExecutor", CountedPool)
    alone = cell_statistics(tidy, tmp_path, resamples=300)
    assert pools == []
    spread = cell_statistics(tidy, tmp_path, resamples=300, processes=3)
    assert pools == [3]
    assert set(alone["ci_method"]) == {"wilson", "bootstrap"} and alone["vs_scope_diff"].notna().sum() == 6
    pd.testing.assert_frame_equal(alone, spread, check_exact=True)


def test_pooled_mme_score_resamples_images_and_a_twice_drawn_image_counts_twice():
    from scope_eval.lmms.tasks.toy import utils

    records = [
        {"image_id": "a", "category": "color", "correct": True},
        {"image_id": "a", "category": "color", "correct": True},
        {"image_id": "b", "category": "color", "correct": True},
        {"image_id": "b", "category": "color", "correct": False},
    ]
    samples = [{"doc_id": i, "mme_score": r} for i, r in enumerate(records)]
    (benchmark,) = task_benchmarks("scope_toy_mme")
    scorer = HeadlineScorer(benchmark, "scope_toy_mme", samples)
    units = scorer.units()
    assert units == [[0, 1], [2, 3]]  # one unit per image
    assert scorer.score(units) == pytest.approx(utils.mme_score(records))  # 100 * (3/4 + 1/2) = 125
    assert scorer.score(units, [0, 0]) == pytest.approx(200.0)  # image a twice: acc 1, acc+ 1 (two images)
    assert scorer.score(units, [1, 1]) == pytest.approx(50.0)  # image b twice: acc 1/2, acc+ 0


def test_resampled_share_of_right_answers_scores_all_rows_at_once_with_the_same_numbers():
    rng = np.random.default_rng(0)
    (gqa,) = task_benchmarks("scope_toy_gqa")
    samples = [{"doc_id": i, "exact_match": float(right)} for i, right in enumerate(rng.random(37) < 0.6)]
    scorer = HeadlineScorer(gqa, "scope_toy_gqa", samples)
    resampled = scorer.resampled(scorer.units())
    assert scorer.per_item and scorer.right_wrong_per_unit(scorer.units()) is not None
    rows = rng.integers(0, 37, size=(500, 37))
    at_once = resampled.rows(rows)
    assert at_once.tolist() == [resampled(row) for row in rows]  # whole counts over 37: equal, not approximately
    # pooled headlines (POPE F1) have no array form: scored row by row with the task's own function
    (pope,) = task_benchmarks("scope_toy_pope")
    records = [{"question_id": str(i), "prediction": p, "answer": a, "category": "random"} for i, (p, a) in enumerate(rng.choice(["yes", "no"], size=(37, 2)))]
    pooled = HeadlineScorer(pope, "scope_toy_pope", [{"doc_id": i, "pope_f1_score": r} for i, r in enumerate(records)])
    assert pooled.right_wrong_per_unit(pooled.units()) is None
    assert pooled.resampled(pooled.units()).rows(rows[:20]).tolist() == [pooled.score(pooled.units(), row) for row in rows[:20]]


def test_pooled_pope_f1_is_the_tasks_own_aggregation():
    from scope_eval.lmms.tasks.toy import utils

    pairs = [("yes", "yes"), ("yes", "no"), ("no", "yes"), ("no", "no"), ("yes", "yes")]
    records = [{"question_id": str(i), "prediction": p, "answer": a, "category": "random"} for i, (p, a) in enumerate(pairs)]
    (benchmark,) = task_benchmarks("scope_toy_pope")
    scorer = HeadlineScorer(benchmark, "scope_toy_pope", [{"doc_id": i, "pope_f1_score": r} for i, r in enumerate(records)])
    assert scorer.usable and not scorer.per_item
    assert scorer.score(scorer.units()) == pytest.approx(100 * utils.pope_f1_score(records))
    assert [scorer.correct(i) for i in range(5)] == [True, False, False, True, True]


# -- cost recorded per sample ------------------------------------------------------------------------
def test_cost_meter_records_every_field_changes_no_output_and_removes_itself():
    import torch
    from tiny_models import tiny_llava

    from scope_eval import prune
    from scope_eval.lmms.models.cost import COST_FIELDS, CostMeter

    model, processor = tiny_llava()
    handle = prune(model, "scope", 16, processor=processor)
    image = torch.rand(3, 336, 336)
    inputs = processor(images=image, text="USER: <image>\n what is in the image ? ASSISTANT:", return_tensors="pt", do_rescale=False)
    generate = lambda: model.generate(**inputs, max_new_tokens=3, do_sample=False)
    with torch.no_grad():
        plain = generate()
        handle.take_counts()
        meter = CostMeter(model, handle.plan)
        timed, cost_of = meter.measure(generate)
    cost = cost_of(handle.take_counts())
    assert torch.equal(plain, timed)
    assert set(cost) == set(COST_FIELDS)
    assert cost["selection_s"] > 0 and cost["vision_s"] > 0 and cost["llm_prefill_s"] > 0
    assert cost["ttft_s"] >= cost["vision_s"] + cost["selection_s"] and cost["generate_s"] == pytest.approx(cost["ttft_s"] + cost["decode_s"])
    # the pruned processor already emits the 16 kept placeholders: the prefill is the prompt as tokenised
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 16
    assert cost["prefill_tokens"] == inputs["input_ids"].shape[1]
    assert cost["prefill_flops"] > cost["llm_prefill_flops"] > 0
    meter.close()
    assert "run" not in vars(handle.plan.method)
    assert not model._forward_hooks and not model.model.vision_tower._forward_pre_hooks
    handle.remove()


def test_cost_meter_prices_in_llm_methods_layer_by_layer():
    """FastV's layers after the drop run on fewer tokens: its LLM prefill FLOPs are those of the per-layer
    counts the stage recorded, below the same prompt priced as if every layer saw every visual token."""
    import torch
    from tiny_models import tiny_llava

    from scope_eval import prune
    from scope_eval.cost.flops import DecoderDims, language_model_prefill_flops
    from scope_eval.lmms.models.cost import CostMeter

    model, processor = tiny_llava()
    handle = prune(model, "fastv", 64, processor=processor, layer=1, budget_unit="after_layer")
    inputs = processor(images=torch.rand(3, 336, 336), text="USER: <image>\n what is it ? ASSISTANT:", return_tensors="pt", do_rescale=False)
    meter = CostMeter(model, handle.plan)
    with torch.no_grad():
        _, cost_of = meter.measure(lambda: model.generate(**inputs, max_new_tokens=2, do_sample=False))
    counts, layers = handle.take_counts(), handle.take_layer_counts()
    per_layer = layers[0].per_layer
    assert per_layer[0] == 576 and per_layer[-1] == 64
    priced, flat = cost_of(counts, layers), cost_of(counts)
    text = DecoderDims.of(model.config.get_text_config())
    prompt = inputs["input_ids"].shape[1]
    layer_tokens = [prompt - per_layer[0] + n for n in per_layer]
    assert priced["llm_prefill_flops"] == language_model_prefill_flops(text, prompt, layer_tokens)
    assert priced["llm_prefill_flops"] < flat["llm_prefill_flops"]
    meter.close()
    handle.remove()


# -- a real smoke sweep ------------------------------------------------------------------------------
@pytest.mark.slow
def test_report_of_a_real_smoke_sweep_has_intervals_agreement_and_per_sample_cost(tmp_path):
    from scope_eval.sweeps.cost import sample_costs

    runs = tmp_path / "runs"
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(HF_DATASETS_CACHE=str(tmp_path / "hf_datasets"), OMP_NUM_THREADS="2", TOKENIZERS_PARALLELISM="false")
    sweep = [sys.executable, "-m", "scope_eval", "sweep", str(REPO / "configs" / "smoke_toy.yaml"), "--output", str(runs)]
    result = subprocess.run(sweep, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for record_path in runs.rglob("cell.json"):
        record = json.loads(record_path.read_text())
        costs = sample_costs(record_path.parent / record["files"]["samples"])
        assert len(costs) == record["n_samples"] == 8
        assert all(cost["ttft_s"] > 0 and cost["prefill_flops"] > 0 and cost["decode_s"] >= 0 for cost in costs)
        for field in ("vision_s", "selection_s", "llm_prefill_s", "ttft_s", "decode_s", "prefill_flops"):
            summary = record["cost"][field]
            assert summary["n"] == 8 and summary["median"] <= summary["p90"]
        assert record["cost"]["ttft_s"]["median"] == pytest.approx(float(np.median([c["ttft_s"] for c in costs])))
    report = subprocess.run([sys.executable, "-m", "scope_eval", "report", str(runs)], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert report.returncode == 0, report.stderr
    page = (runs / "report" / "table_toy-llava15_limit8.md").read_text()
    header = next(line for line in page.splitlines() if line.startswith("| method"))
    assert "agreement with unpruned" in header and "TTFT ms (median)" in header
    assert "visual tokens (layer avg)" in header and "prefill GFLOPs" in header  # equal-compute columns
    scope_line = next(line for line in page.splitlines() if line.startswith("| scope"))
    assert "[" in scope_line and "%" in scope_line  # value [low, high] and agreement share
    stats = pd.read_csv(runs / "report" / "stats_toy-llava15_limit8.csv")
    assert {"ci_low", "ci_high", "vs_unpruned_diff", "agreement", "right_to_wrong", "ttft_s_median", "ttft_s_p90"} <= set(stats.columns)
    assert (stats["ci_low"] <= stats["value"]).all() and (stats["value"] <= stats["ci_high"]).all()
    assert (runs / "report" / "cost_toy-llava15_limit8.png").is_file() and (runs / "report" / "time_toy-llava15_limit8.png").is_file()
    # In one process the report (statistics and figures) is the same, byte for byte, as over several
    alone = subprocess.run([sys.executable, "-m", "scope_eval", "report", str(runs), "--output", str(tmp_path / "alone"), "--num-processes", "1"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert alone.returncode == 0, alone.stderr
    spread = subprocess.run([sys.executable, "-m", "scope_eval", "report", str(runs), "--output", str(tmp_path / "spread"), "--num-processes", "2"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert spread.returncode == 0, spread.stderr
    written = sorted(path.name for path in (tmp_path / "alone").iterdir())
    assert len(written) >= 8 and written == sorted(path.name for path in (tmp_path / "spread").iterdir())
    assert all((tmp_path / "alone" / name).read_bytes() == (tmp_path / "spread" / name).read_bytes() for name in written)
