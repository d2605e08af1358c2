"""A method is one file: methods in scope_eval/pruning/methods/ are found without being listed anywhere,
and other packages add methods through the `scope_eval.methods` entry-point group."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from scope_eval.pruning import METHODS
from scope_eval.pruning.methods import ENTRY_POINT_GROUP

METHODS_DIR = Path(__file__).resolve().parents[1] / "scope_eval" / "pruning" / "methods"

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "keep_first_plugin.py"


def test_every_method_file_registers_without_being_listed():
    files = {p.stem for p in METHODS_DIR.glob("*.py") if not p.stem.startswith("_")}
    registered_from = {cls.__module__.rsplit(".", 1)[-1] for cls in METHODS.values()}
    assert files <= registered_from, f"method files that registered nothing: {files - registered_from}"
    init = (METHODS_DIR / "__init__.py").read_text()
    assert not any(f"from .{name} import" in init for name in files)  # nothing to keep in sync by hand


def install_plugin(site: Path, entry_point: str = "keep_first = keep_first_plugin") -> None:
    """What `pip install` of a package declaring the entry point leaves on disk: the module and its
    dist-info metadata (written by hand so that the test touches no environment)."""
    (site / "keep_first_plugin.py").write_text(EXAMPLE.read_text())
    info = site / "keep_first_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: keep-first-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry_point}\n")


def run_python(code: str, site: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(Path(__file__).parent)]))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=300)


def test_an_installed_plugin_method_runs_in_a_real_model(tmp_path):
    install_plugin(tmp_path)
    result = run_python(
        """
        import json, torch
        from PIL import Image
        from scope_eval import prune
        from scope_eval.pruning import METHODS, build_method, method_options
        from tiny_models import tiny_llava

        model, processor = tiny_llava()
        prompt = processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what?"}]}], add_generation_prompt=True
        )
        with prune(model, "keep_first", 16, processor=processor) as handle, torch.no_grad():
            model.generate(**processor(images=Image.new("RGB", (336, 336)), text=prompt, return_tensors="pt"), max_new_tokens=2)
            counts = handle.take_counts()
        print(json.dumps({"registered": "keep_first" in METHODS, "module": METHODS["keep_first"].__module__, "counts": counts}))
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {"registered": True, "module": "keep_first_plugin", "counts": [16]}


def test_the_plugin_is_costed_by_the_bench_and_placed_by_the_reports(tmp_path):
    """Nothing outside the method's file knows about it, yet the FLOP model prices it, the report orders it
    and the lmms-eval model args accept its option."""
    install_plugin(tmp_path)
    result = run_python(
        """
        import json
        from scope_eval.bench.shapes import SHAPES
        from scope_eval.cost.flops import prefill_flops
        from scope_eval.lmms.options import split_model_args
        from scope_eval.pruning.plan import PruningPlan
        from scope_eval.reports.tables import display_name, method_rank

        flops = prefill_flops(SHAPES["llava-1.5-7b"].config(), PruningPlan.build("keep_first", 64), crops=1,
                              projected_tokens=64, prefill_tokens=100)
        plan, _ = split_model_args("llava_hf_scope", {"method": "keep_first", "budget": 64, "offset": 8}, {"pretrained"})
        print(json.dumps({"selection": flops.selection, "rank": method_rank("keep_first"), "after_random": method_rank("random"),
                          "name": display_name("keep_first", "keep_first"), "plan": plan.describe()}))
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["selection"] == 0 and outcome["rank"] == 85 > outcome["after_random"] and outcome["name"] == "Keep first"
    assert outcome["plan"] == "method=keep_first, budget=64, budget_policy=per_crop, offset=8"
