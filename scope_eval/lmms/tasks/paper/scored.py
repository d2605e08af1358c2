"""``process_results`` of the benchmarks scored exactly as lmms-eval scores them, under one module for the YAMLs."""

from __future__ import annotations

from lmms_eval.api.metrics import anls
from lmms_eval.tasks.chartqa import utils as chartqa_utils
from lmms_eval.tasks.mmbench import en_utils as mmbench
from lmms_eval.tasks.mmmu import utils as mmmu
from lmms_eval.tasks.ocrbench import utils as ocrbench_utils
from lmms_eval.tasks.pope import utils as pope_utils
from lmms_eval.tasks.scienceqa import utils as scienceqa
from lmms_eval.tasks.textvqa import utils as textvqa
from lmms_eval.tasks.vqav2 import utils as vqav2

mmbench_en_dev = mmbench.mmbench_process_results
mmmu_val = mmmu.mmmu_process_results
pope = pope_utils.pope_process_results
scienceqa_img = scienceqa.sqa_process_results
textvqa_val = textvqa.textvqa_process_results
vqav2_val = vqav2.vqav2_process_results_val
chartqa = chartqa_utils.chartqa_process_results
ocrbench = ocrbench_utils.ocrbench_process_results


def _docvqa_anls(doc: dict, results: list[str]) -> dict:
    """lmms-eval's docvqa_val scores with its built-in ``anls`` metric (no process_results); the same here."""
    return anls(doc["answers"], results)


docvqa_val = _docvqa_anls


def ocrbench_accuracy(results: list[dict], args=None) -> float:
    """Share of questions answered correctly (OCRBench's Final Score / 1000 on the full 1,000 questions).

    lmms-eval's aggregate adds into a module-level tally that is never reset (a second run in the same
    process counts the first one again) and divides by 1000 whatever the number of questions (wrong under
    --limit); this counts the results it is given.
    """
    return sum(result["score"] for result in results) / len(results) if results else 0.0
