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


def _as_list(answers) -> list[str]:
    return list(answers) if isinstance(answers, (list, tuple)) else [answers]


def _docvqa_anls(doc: dict, results: list[str]) -> dict:
    """``anls``: lmms-eval's docvqa_val score, its built-in ``anls`` metric over all reference answers (the
    best similarity, 0 below 0.5): true ANLS, the default. ``anls_fork``: the paper's lmms-eval fork
    (kinredon/SCOPE ``lmms_eval/api/task.py``, the multiple-target branch of ``process_results``; lmms-eval
    issue 363) scores each reference answer on its own and then gives the question 1.0 if any scored above
    zero, else 0.0: the share of questions whose ANLS is at least 0.5, never below ``anls``."""
    per_answer = [anls([answer], results)["anls"] for answer in _as_list(doc["answers"])]
    return {**anls(doc["answers"], results), "anls_fork": 1.0 if any(per_answer) else 0.0}


docvqa_val = _docvqa_anls


def _squeezed(text: str) -> str:
    return text.strip().replace("\n", " ").replace(" ", "")


def ocrbench_fork_score(doc: dict, prediction: str) -> int:
    """1 if the paper's fork (kinredon/SCOPE ``lmms_eval/tasks/ocrbench/utils.py``) counts ``prediction`` as
    correct. It lower-cases the prediction first, also for the handwritten-maths questions (HME100k), which
    compare it case-sensitively with the answer (spaces and newlines removed), so an answer with a capital
    letter can never match there; and it does not fold full-width characters (lmms-eval 0.7.3 does)."""
    lowered = prediction.lower().strip()
    answers = _as_list(doc["answer"])
    if doc["dataset"] == "HME100k":
        return int(any(_squeezed(answer) in _squeezed(lowered) for answer in answers))
    return int(any(answer.lower().strip().replace("\n", " ") in lowered.replace("\n", " ") for answer in answers))


def _ocrbench_both(doc: dict, results: list[str]) -> dict:
    """``ocrbench_accuracy``: lmms-eval 0.7.3's scoring (the default); ``ocrbench_accuracy_fork``: the fork's."""
    scored = ocrbench_utils.ocrbench_process_results(doc, results)
    fork = {**scored["ocrbench_accuracy"], "score": ocrbench_fork_score(doc, results[0])}
    return {**scored, "ocrbench_accuracy_fork": fork}


ocrbench = _ocrbench_both


def ocrbench_accuracy(results: list[dict], args=None) -> float:
    """Share of questions answered correctly (OCRBench's Final Score / 1000 on the full 1,000 questions).

    lmms-eval's aggregate adds into a module-level tally that is never reset (a second run in the same
    process counts the first one again) and divides by 1000 whatever the number of questions (wrong under
    --limit); this counts the results it is given.
    """
    return sum(result["score"] for result in results) / len(results) if results else 0.0
