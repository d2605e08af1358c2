"""lmms-eval hooks of the synthetic toy tasks: render the image from the stored scene spec, prompt, score."""

from __future__ import annotations

import re
from collections import defaultdict

from scope_eval.lmms.tasks.toy.scenes import render

_WORD = re.compile(r"[a-z0-9]+")


def doc_to_visual(doc: dict) -> list:
    return [render(doc["scene"])]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{doc['question']}{kwargs.get('post_prompt', '')}"


def normalise_answer(prediction: str) -> str:
    """First word, lower-cased, punctuation dropped ("Yes." -> "yes"); empty output stays empty."""
    words = _WORD.findall(prediction.lower())
    return words[0] if words else ""


def exact_match_process_results(doc: dict, results: list[str]) -> dict:
    return {"exact_match": float(normalise_answer(results[0]) == doc["answer"])}


# --- POPE-like: answers pooled over the three negative-sampling strategies, "yes" is the positive class.


def pope_process_results(doc: dict, results: list[str]) -> dict:
    record = {"question_id": doc["question_id"], "prediction": normalise_answer(results[0]), "answer": doc["answer"],
              "category": doc["category"]}
    return {name: record for name in ("pope_accuracy", "pope_precision", "pope_recall", "pope_f1_score", "pope_yes_ratio")}


def _confusion(records: list[dict]) -> tuple[int, int, int, int]:
    # one pass: the report's bootstrap calls this about a million times per `make demo`
    tp = fp = fn = tn = 0
    for r in records:
        truth = r["answer"]
        if r["prediction"] == "yes":
            tp, fp = tp + (truth == "yes"), fp + (truth == "no")
        else:
            fn, tn = fn + (truth == "yes"), tn + (truth == "no")
    return tp, fp, fn, tn


def pope_accuracy(records: list[dict]) -> float:
    return sum(r["prediction"] == r["answer"] for r in records) / len(records)


def pope_precision(records: list[dict]) -> float:
    tp, fp, _, _ = _confusion(records)
    return tp / (tp + fp) if tp + fp else 0.0


def pope_recall(records: list[dict]) -> float:
    tp, _, fn, _ = _confusion(records)
    return tp / (tp + fn) if tp + fn else 0.0


def pope_f1_score(records: list[dict]) -> float:
    precision, recall = pope_precision(records), pope_recall(records)
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def pope_yes_ratio(records: list[dict]) -> float:
    return sum(r["prediction"] == "yes" for r in records) / len(records)


# --- MME-like: two questions per image; acc per question, acc+ per image (both right), per category.


def mme_process_results(doc: dict, results: list[str]) -> dict:
    record = {"image_id": doc["image_id"], "category": doc["category"],
              "correct": normalise_answer(results[0]) == doc["answer"]}
    return {"mme_score": record, "mme_acc": record, "mme_acc_plus": record}


def _per_image(records: list[dict]) -> dict[tuple[str, str], list[bool]]:
    images: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for r in records:
        images[(r["category"], r["image_id"])].append(bool(r["correct"]))
    return images


def mme_acc(records: list[dict]) -> float:
    return sum(bool(r["correct"]) for r in records) / len(records)


def mme_acc_plus(records: list[dict]) -> float:
    images = _per_image(records)
    return sum(all(answers) for answers in images.values()) / len(images)


def mme_score(records: list[dict]) -> float:
    """MME's score: for each category 100 * (acc + acc+), summed over categories (in order of appearance)."""
    # One pass (the report's bootstrap calls this about half a million times per `make demo`); per category:
    # answers, right answers, and per image whether every answer so far was right.
    categories: dict[str, list] = {}
    for r in records:
        answers = categories.setdefault(r["category"], [0, 0, {}])
        correct = bool(r["correct"])
        answers[0] += 1
        answers[1] += correct
        answers[2][r["image_id"]] = answers[2].get(r["image_id"], True) and correct
    return sum(100 * (right / total + sum(images.values()) / len(images)) for total, right, images in categories.values())
