"""The accuracy-regression check: the comparison itself, and end to end that a broken selection fails it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from scope_eval.reports.regression import KEY_COLUMNS, Rule, compare, item_score, sign_test

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "scope_eval" / "toy" / "weights" / "llava15"


def frame(values: dict[str, float], items: dict[str, list[float]] | None = None) -> pd.DataFrame:
    """Metrics of one model/method; `items` gives a task's per-document scores (doc i -> items[task][i])."""
    rows = []
    for task, value in values.items():
        scores = (items or {}).get(task)
        stored = None if scores is None else {str(i): [score, "yes" if score else "no"] for i, score in enumerate(scores)}
        rows.append(dict(zip(KEY_COLUMNS, ["toy", "scope", 64, task, task]), value=value, items=stored))
    return pd.DataFrame(rows)


def test_sign_test_is_the_exact_one_sided_binomial_tail():
    assert sign_test(0, 0) == 1.0
    assert sign_test(3, 0) == 1 / 8
    assert sign_test(5, 1) == (6 + 1) / 64  # P(X >= 5), X ~ Binomial(6, 1/2)
    assert sign_test(1, 5) == 1 - 1 / 64


def test_paired_check_on_a_hand_made_case():
    """60 documents. A few near-tie flips either way pass; many one-way flips fail, and the reason says why."""
    rule = Rule(false_alarm=0.01, net_flips_per_sqrt_doc=1.0)  # 60 documents: net worse allowed 7.7
    right = [1.0] * 45 + [0.0] * 15
    baseline = frame({"pope": 75.0}, {"pope": right})

    noise = right[:]  # 3 right->wrong, 2 wrong->right: what near-tie answers do on another machine
    noise[0] = noise[1] = noise[2] = 0.0
    noise[45] = noise[46] = 1.0
    assert compare(frame({"pope": 73.3}, {"pope": noise}), baseline, rule).ok

    net_drift = right[:]  # 9 right->wrong, 1 wrong->right: p=0.011 is not below 0.01/1, but net 8 > 7.7
    for doc in range(9):
        net_drift[doc] = 0.0
    net_drift[45] = 1.0
    verdict = compare(frame({"pope": 61.7}, {"pope": net_drift}), baseline, rule)
    assert [d.key["task"] for d in verdict.drops] == ["pope"]
    assert "9 right->wrong, 1 wrong->right of 60 documents" in verdict.drops[0].describe()
    assert "net 8 worse > 7.7 allowed" in verdict.drops[0].describe()

    one_way = right[:]  # 8 right->wrong, 0 back: p = 1/256 < 0.01, though net 8 is just over 7.7 too
    for doc in range(8):
        one_way[doc] = 0.0
    strict = Rule(false_alarm=0.01, net_flips_per_sqrt_doc=2.0)  # net allowed 15.5: only the sign test fires
    drop = compare(frame({"pope": 61.7}, {"pope": one_way}), baseline, strict).drops[0]
    assert drop.paired.p_value == 1 / 256 and "significant at 0.01" in drop.describe()


def test_paired_check_scales_with_documents_and_splits_the_false_alarm_rate():
    """The same 6 net-worse documents fail among 12 documents (allowed 3.5) and pass among 100 (allowed 10)."""
    rule = Rule(false_alarm=0.01, net_flips_per_sqrt_doc=1.0)
    for documents, fails in ((12, True), (100, False)):
        right = [1.0] * documents
        now = [0.0] * 6 + [1.0] * (documents - 6)
        verdict = compare(frame({"t": 90.0}, {"t": now}), frame({"t": 100.0}, {"t": right}), rule)
        assert (not verdict.ok) is fails, documents
    # Bonferroni: 8 one-way flips (p = 1/256) are significant for one metric, not when 3 metrics share 0.01.
    loose = Rule(false_alarm=0.01, net_flips_per_sqrt_doc=10.0)
    right, now = [1.0] * 60, [0.0] * 8 + [1.0] * 52
    assert not compare(frame({"a": 80.0}, {"a": now}), frame({"a": 90.0}, {"a": right}), loose).ok
    three = frame({"a": 90.0, "b": 90.0, "c": 90.0}, {"a": right, "b": right, "c": right})
    assert compare(frame({"a": 80.0, "b": 90.0, "c": 90.0}, {"a": now, "b": right, "c": right}), three, loose).ok


def test_no_drop_without_a_lower_value_and_improvements_pass():
    rule = Rule()
    right = [1.0] * 30 + [0.0] * 30
    better = [1.0] * 60
    assert compare(frame({"t": 100.0}, {"t": better}), frame({"t": 50.0}, {"t": right}), rule).ok
    assert compare(frame({"t": 50.0}, {"t": right}), frame({"t": 50.0}, {"t": right}), rule).flipped == 0


def test_metrics_without_per_document_scores_fall_back_to_the_tolerance_or_name_the_fix():
    baseline, current = frame({"a": 80.0, "b": 70.0}), frame({"a": 77.5, "b": 64.0})
    verdict = compare(current, baseline, Rule(tolerance=2.5))
    assert [d.key["task"] for d in verdict.drops] == ["b"]  # a: exactly at the tolerance
    assert "64.00 < baseline 70.00 (-6.00)" in verdict.drops[0].describe()
    unpaired = compare(current, baseline, Rule())
    assert len(unpaired.drops) == 2 and "--update-baseline" in unpaired.drops[0].describe()


def test_compare_fails_on_missing_metrics():
    verdict = compare(frame({"a": 80.0}), frame({"a": 80.0, "b": 70.0}), Rule(tolerance=1.0))
    assert not verdict.ok
    assert "missing" in verdict.drops[0].describe()


def test_item_score_reads_the_logged_per_sample_metrics():
    assert item_score(1.0) == 1.0 and item_score(True) == 1.0
    assert item_score({"prediction": "yes", "answer": "no", "question_id": 3}) == 0.0  # toy POPE
    assert item_score({"image_id": "a", "category": "x", "correct": True}) == 1.0  # toy MME
    assert item_score({"question_id": 1, "score": 0.0, "prediction": "yes", "ground_truth": "no"}) == 0.0  # POPE
    assert item_score({"gpt_eval": "?"}) is None and item_score(float("nan")) is None


BROKEN_SELECTION = '''
# Test-only: loaded at interpreter start-up (sitecustomize) in every process of the run, so the lmms-eval
# children use it too. It keeps the LEAST salient tokens: the kind of sign slip a refactor can introduce.
import scope_eval.pruning.methods.scope as scope_method


def least_salient(features, saliency, k, alpha=1.0, combine="multi", **kwargs):
    return (-saliency).topk(k, dim=1).indices.sort(dim=1).values


scope_method.scope_select = least_salient
'''


@pytest.mark.slow
@pytest.mark.skipif(not TOY.is_dir(), reason="the trained toy checkpoint is not present")
def test_broken_selection_fails_the_regression_check(tmp_path):
    sweep = {
        "model": {"name": "toy-llava15", "backend": "llava_hf_scope", "pretrained": str(TOY), "family": "llava-1.5",
                  "model_args": {"device": "cpu", "device_map": "cpu", "dtype": "float32"}},
        "methods": ["scope"], "budgets": [64], "tasks": ["scope_toy_pope"], "limit": 60,
        "group_tasks": True, "offline": True,
    }  # fmt: skip
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    regression = {"sweeps": ["sweep.yaml"], "baseline": "baseline.json"}  # the default paired rule, no tolerance
    (tmp_path / "regression.yaml").write_text(yaml.safe_dump(regression))
    command = [sys.executable, "-m", "scope_eval", "regress", str(tmp_path / "regression.yaml")]

    def run(*extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([*command, *extra], capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)

    made = run("--update-baseline", "--runs", str(tmp_path / "good"))
    assert made.returncode == 0, made.stdout + made.stderr
    (stored,) = json.loads((tmp_path / "baseline.json").read_text())["metrics"]
    assert len(stored["items"]) == 60, "the baseline keeps every document's score and answer"
    assert run("--runs", str(tmp_path / "good")).returncode == 0

    broken_dir = tmp_path / "broken_site"
    broken_dir.mkdir()
    (broken_dir / "sitecustomize.py").write_text(BROKEN_SELECTION)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(broken_dir), os.environ.get("PYTHONPATH", "")])}
    broken = run("--runs", str(tmp_path / "broken"), env=env)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "REGRESSION" in broken.stdout and "method_label=scope" in broken.stdout and "scope_toy_pope" in broken.stdout
    assert "right->wrong" in broken.stdout


def test_regression_subset_cuts_ratio_sweeps_by_keep_ratios_and_the_others_by_budgets(tmp_path):
    """One regression config over a LLaVA sweep (token budgets) and a Qwen sweep (keep ratios): each keeps
    only its own listed values; a keep ratio no sweep has is refused as a typo before anything runs."""
    from scope_eval.reports.regression import load_regression, subset_sweeps
    from scope_eval.sweeps.config import SweepConfigError

    llava = {"model": {"name": "toy", "backend": "llava_hf_scope", "pretrained": "llava-hf/llava-1.5-7b-hf", "family": "llava-1.5"},
             "methods": ["none", "scope"], "budgets": [192, 64], "tasks": ["scope_toy_pope"]}
    qwen = {"model": {"name": "toy-qwen", "backend": "qwen2_vl_scope", "pretrained": "Qwen/Qwen2-VL-7B-Instruct", "family": "qwen2-vl"},
            "methods": ["none", "scope"], "keep_ratios": [0.25, 0.1], "tasks": ["scope_toy_pope"]}  # fmt: skip
    (tmp_path / "llava.yaml").write_text(yaml.safe_dump(llava))
    (tmp_path / "qwen.yaml").write_text(yaml.safe_dump(qwen))
    regression = {"sweeps": ["llava.yaml", "qwen.yaml"], "baseline": "b.json", "budgets": [64], "keep_ratios": [0.25]}
    (tmp_path / "regression.yaml").write_text(yaml.safe_dump(regression))
    llava_subset, qwen_subset = subset_sweeps(load_regression(tmp_path / "regression.yaml"), tmp_path / "runs")
    assert (llava_subset.budgets, llava_subset.keep_ratios) == ((64,), ())
    assert (qwen_subset.budgets, qwen_subset.keep_ratios) == ((), (0.25,))

    (tmp_path / "regression.yaml").write_text(yaml.safe_dump({**regression, "keep_ratios": [0.3]}))
    with pytest.raises(SweepConfigError, match="keep_ratios 0.3 are in none of its sweeps"):
        subset_sweeps(load_regression(tmp_path / "regression.yaml"), tmp_path / "runs")
