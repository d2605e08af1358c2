"""`scope-eval bench-selection` runs, checks selections and writes its table (speed itself is not asserted)."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from scope_eval.bench import selection
from scope_eval.bench.selection import IMPLEMENTATIONS, SelectionCase, render_markdown, run_selection_bench
from scope_eval.cli import app

TINY = [SelectionCase("tiny", 8, 1, 40, 8), SelectionCase("tiny crops", 12, 3, 30, 4)]


def test_bench_times_every_implementation_and_checks_selections():
    result = run_selection_bench(TINY, device=torch.device("cpu"), dim=16, repeats=2, naive_repeats=1, warmup=0)
    for case in TINY:
        rows = {t.implementation: t for t in result.timings if t.case == case}
        assert set(rows) == {"similarity", *IMPLEMENTATIONS}
        assert all(len(t.times_ms) == (1 if name == "naive" else 2) for name, t in rows.items())
        assert all(rows[name].identical for name in IMPLEMENTATIONS)
        assert rows["inplace"].matches_reference
        assert result.speedup(rows["auto"]) > 0 and result.speedup(rows["naive"]) is None
    table = render_markdown(result, "scope-eval bench-selection --test")
    assert "`scope-eval bench-selection --test`" in table and "| tiny crops | 12 | 3 x 30 (k=4) | lazy |" in table
    assert result.speedup(rows["auto"], cpu=True) is None or result.speedup(rows["auto"], cpu=True) > 0


def test_bench_selection_command_writes_json_and_markdown(tmp_path, monkeypatch):
    monkeypatch.setattr(selection, "paper_cases", lambda: [SelectionCase("LLaVA-1.5", 6, 1, 24, 6)])
    markdown, json_path = tmp_path / "out.md", tmp_path / "out.json"
    outcome = CliRunner().invoke(
        app,
        ["bench-selection", "--repeats", "1", "--naive-repeats", "1", "--warmup", "0", "--setting", "llava15",
         "--markdown", str(markdown), "--json", str(json_path), "--note", "quiet machine"],
    )
    assert outcome.exit_code == 0, outcome.output
    assert "quiet machine" in markdown.read_text()
    record = json.loads(json_path.read_text())
    assert record["command"].startswith("scope-eval bench-selection --device cpu --dtype float32 --repeats 1")
    assert "--setting llava15" in record["command"]
    assert {row["implementation"] for row in record["timings"]} == {"similarity", *IMPLEMENTATIONS}
    assert record["environment"]["torch"] == torch.__version__


def test_bench_selection_rejects_unknown_settings():
    outcome = CliRunner().invoke(app, ["bench-selection", "--setting", "llava2"])
    assert outcome.exit_code != 0 and "llava2" in outcome.output
