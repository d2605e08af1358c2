"""Test data for the lmms-eval plugin: stand-in copies of the paper's benchmarks in their real hub
schemas (a few rows each, small images) and a tiny local task, all written to a temporary folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, Features, Image, Sequence, Value
from PIL import Image as PILImage

SIZES = [(336, 336), (500, 300), (300, 600), (672, 336)]  # several aspect ratios: LLaVA-NeXT picks different grids


def picture(index: int) -> PILImage.Image:
    """A small, cheap-to-store image that differs per index (a coloured square on grey)."""
    width, height = SIZES[index % len(SIZES)]
    canvas = np.full((height, width, 3), 128, dtype=np.uint8)
    colour = np.array([(37 * index) % 256, (91 * index + 60) % 256, (53 * index + 120) % 256], dtype=np.uint8)
    top, left = (index * 17) % (height // 2), (index * 29) % (width // 2)
    canvas[top : top + height // 3, left : left + width // 3] = colour
    return PILImage.fromarray(canvas)


def _write(rows: list[dict], features: Features, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_list(rows, features=features).to_parquet(str(target))


def mme(data: Path, n: int = 4) -> None:
    categories = ["existence", "code_reasoning", "count", "OCR"]  # perception and cognition
    rows = []
    for i in range(n):  # MME asks two questions per image (question_id = image name)
        rows.append(dict(question_id=f"img{i // 2}.png", image=picture(i // 2), question="Is there a red square? Please answer yes or no.",
                         answer="Yes" if i % 2 == 0 else "No", category=categories[(i // 2) % len(categories)]))  # fmt: skip
    features = Features(question_id=Value("string"), image=Image(), question=Value("string"), answer=Value("string"), category=Value("string"))
    _write(rows, features, data / "MME" / "data" / "test-00000-of-00001.parquet")


def gqa(data: Path, n: int = 4) -> None:
    questions = [dict(id=f"q{i}", imageId=f"n{i % 2}", question="what is in the image ?", answer="square", fullAnswer="a square",
                      isBalanced=True) for i in range(n)]  # fmt: skip
    q_features = Features(id=Value("string"), imageId=Value("string"), question=Value("string"), answer=Value("string"),
                          fullAnswer=Value("string"), isBalanced=Value("bool"))  # fmt: skip
    _write(questions, q_features, data / "GQA" / "testdev_balanced_instructions" / "testdev-00000-of-00001.parquet")
    images = [dict(id=f"n{i}", image=picture(i)) for i in range(3)]
    _write(images, Features(id=Value("string"), image=Image()), data / "GQA" / "testdev_balanced_images" / "testdev-00000-of-00001.parquet")


def pope(data: Path, n: int = 4) -> None:
    """Written with save_to_disk, the other accepted layout."""
    rows = [dict(id=str(i), question_id=str(i), question="Is there a square in the image?", answer="yes" if i % 2 else "no",
                 image_source=f"COCO_{i}", image=picture(i), category="adversarial") for i in range(n)]  # fmt: skip
    features = Features(id=Value("string"), question_id=Value("string"), question=Value("string"), answer=Value("string"),
                        image_source=Value("string"), image=Image(), category=Value("string"))  # fmt: skip
    DatasetDict(test=Dataset.from_list(rows, features=features)).save_to_disk(str(data / "POPE"))


def mmbench(data: Path, n: int = 4) -> None:
    rows = [dict(index=i, question="Which shape is shown?", hint=None if i % 2 else "Look closely.", A="square", B="circle", C="triangle",
                 D="star", answer="A", category="object_localization", image=picture(i), source="standin", **{"L2-category": "perception"},
                 comment="", split="dev") for i in range(n)]  # fmt: skip
    features = Features(index=Value("int64"), question=Value("string"), hint=Value("string"), A=Value("string"), B=Value("string"),
                        C=Value("string"), D=Value("string"), answer=Value("string"), category=Value("string"), image=Image(),
                        source=Value("string"), **{"L2-category": Value("string")}, comment=Value("string"), split=Value("string"))  # fmt: skip
    _write(rows, features, data / "MMBench" / "en" / "dev-00000-of-00001.parquet")


def scienceqa(data: Path, n: int = 4) -> None:
    rows = [dict(image=picture(i), question="Which shape is shown?", choices=["square", "circle"], answer=i % 2, hint="", task="closed choice",
                 grade="grade1", subject="natural science", topic="shapes", category="shapes", skill="identify", lecture="", solution="")
            for i in range(n)]  # fmt: skip
    features = Features(image=Image(), question=Value("string"), choices=Sequence(Value("string")), answer=Value("int8"), hint=Value("string"),
                        task=Value("string"), grade=Value("string"), subject=Value("string"), topic=Value("string"), category=Value("string"),
                        skill=Value("string"), lecture=Value("string"), solution=Value("string"))  # fmt: skip
    _write(rows, features, data / "ScienceQA" / "ScienceQA-IMG" / "test-00000-of-00001.parquet")


def textvqa(data: Path, n: int = 4) -> None:
    rows = [dict(image_id=f"t{i}", question_id=i, question="what is written here?", question_tokens=["what", "is", "written", "here"],
                 image=picture(i), image_width=336, image_height=336, answers=["stop"] * 10, ocr_tokens=["stop", "sign"], set_name="val")
            for i in range(n)]  # fmt: skip
    features = Features(image_id=Value("string"), question_id=Value("int64"), question=Value("string"), question_tokens=Sequence(Value("string")),
                        image=Image(), image_width=Value("int64"), image_height=Value("int64"), answers=Sequence(Value("string")),
                        ocr_tokens=Sequence(Value("string")), set_name=Value("string"))  # fmt: skip
    _write(rows, features, data / "textvqa" / "data" / "validation-00000-of-00001.parquet")


def seedbench(data: Path, n: int = 4) -> None:
    rows = [dict(answer="A", choice_a="square", choice_b="circle", choice_c="star", choice_d="line", data_id=str(i),
                 data_type="video" if i == n - 1 else "image", question="Which shape is shown?", question_id=str(i), question_type_id=1,
                 image=[picture(i), picture(i + 1)] if i == n - 1 else [picture(i)], segment=None) for i in range(n)]  # fmt: skip
    features = Features(answer=Value("string"), choice_a=Value("string"), choice_b=Value("string"), choice_c=Value("string"),
                        choice_d=Value("string"), data_id=Value("string"), data_type=Value("string"), question=Value("string"),
                        question_id=Value("string"), question_type_id=Value("int16"), image=Sequence(Image()), segment=Sequence(Value("int64")))  # fmt: skip
    _write(rows, features, data / "SEED-Bench" / "data" / "test-00000-of-00001.parquet")


def mmvet(data: Path, n: int = 2) -> None:
    rows = [dict(question_id=f"v{i}", image=picture(i), question="What shape is this?", answer="square", capability="rec") for i in range(n)]
    features = Features(question_id=Value("string"), image=Image(), question=Value("string"), answer=Value("string"), capability=Value("string"))
    _write(rows, features, data / "MMVet" / "data" / "test-00000-of-00001.parquet")


def mmmu(data: Path, n: int = 4) -> None:
    rows = []
    for i in range(n):
        rows.append(dict(id=f"validation_Art_{i + 1}", question="<image 1> Which shape is shown?", options="['square', 'circle']",
                         explanation="", image_1=picture(i), image_2=None, img_type="['Photos']", answer="A", topic_difficulty="Easy",
                         question_type="multiple-choice", subfield="Drawing"))  # fmt: skip
    features = Features(id=Value("string"), question=Value("string"), options=Value("string"), explanation=Value("string"), image_1=Image(),
                        image_2=Image(), img_type=Value("string"), answer=Value("string"), topic_difficulty=Value("string"),
                        question_type=Value("string"), subfield=Value("string"))  # fmt: skip
    _write(rows, features, data / "MMMU" / "data" / "validation-00000-of-00001.parquet")


def vqav2(data: Path, n: int = 4) -> None:
    answer = Features(answer=Value("string"), answer_confidence=Value("string"), answer_id=Value("int64"))
    rows = [dict(question_type="what", multiple_choice_answer="square", answers=[dict(answer="square", answer_confidence="yes", answer_id=k)
                 for k in range(1, 11)], image_id=i, answer_type="other", question_id=i, question="What shape is shown?", image=picture(i))
            for i in range(n)]  # fmt: skip
    features = Features(question_type=Value("string"), multiple_choice_answer=Value("string"), answers=[answer], image_id=Value("int64"),
                        answer_type=Value("string"), question_id=Value("int64"), question=Value("string"), image=Image())  # fmt: skip
    _write(rows, features, data / "VQAv2" / "data" / "validation-00000-of-00001.parquet")


def docvqa(data: Path, n: int = 2) -> None:
    rows = [dict(questionId=str(i), question="What word is written?", question_types=["form"], image=picture(i), docId=i,
                 ucsf_document_id="x", ucsf_document_page_no="1", answers=["square"], data_split="val") for i in range(n)]  # fmt: skip
    features = Features(questionId=Value("string"), question=Value("string"), question_types=Sequence(Value("string")), image=Image(),
                        docId=Value("int64"), ucsf_document_id=Value("string"), ucsf_document_page_no=Value("string"),
                        answers=Sequence(Value("string")), data_split=Value("string"))  # fmt: skip
    _write(rows, features, data / "DocVQA" / "DocVQA" / "validation-00000-of-00001.parquet")


def chartqa(data: Path, n: int = 2) -> None:
    rows = [dict(type="human_test", question="How many bars?", answer="3", image=picture(i)) for i in range(n)]
    features = Features(type=Value("string"), question=Value("string"), answer=Value("string"), image=Image())
    _write(rows, features, data / "ChartQA" / "data" / "test-00000-of-00001.parquet")


def ocrbench(data: Path, n: int = 2) -> None:
    rows = [dict(dataset="IIIT5K", question="what is written in the image?", question_type="Regular Text Recognition",
                 answer=["square"], image=picture(i)) for i in range(n)]  # fmt: skip
    features = Features(dataset=Value("string"), question=Value("string"), question_type=Value("string"),
                        answer=Sequence(Value("string")), image=Image())  # fmt: skip
    _write(rows, features, data / "OCRBench" / "data" / "test-00000-of-00001.parquet")


STANDINS = (gqa, mmbench, mme, pope, scienceqa, textvqa, seedbench, mmvet, mmmu, vqav2, docvqa, chartqa, ocrbench)


def write_standins(data: Path) -> Path:
    for write in STANDINS:
        write(data)
    return data


TINY_TASK = """\
task: scope_test_shapes
dataset_path: parquet
dataset_kwargs:
  data_files: {test: shapes.parquet}
test_split: test
output_type: generate_until
doc_to_visual: !function shapes_utils.doc_to_visual
doc_to_text: !function shapes_utils.doc_to_text
doc_to_target: answer
generation_kwargs: {max_new_tokens: 4, temperature: 0, do_sample: false}
process_results: !function shapes_utils.process_results
metric_list:
  - {metric: exact_match, aggregation: mean, higher_is_better: true}
lmms_eval_specific_kwargs:
  default: {pre_prompt: "", post_prompt: " ?"}
"""

TINY_UTILS = """\
def doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def doc_to_text(doc, kwargs):
    return kwargs["pre_prompt"] + doc["question"] + kwargs["post_prompt"]


def process_results(doc, results):
    return {"exact_match": float(results[0].strip() == doc["answer"])}
"""


def write_tiny_task(directory: Path, n: int = 6) -> Path:
    """A local task of ``n`` docs (scope_test_shapes) in ``directory``, which becomes an include path."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = [dict(question_id=f"s{i}", image=picture(i), question="what is in the image", answer="square") for i in range(n)]
    features = Features(question_id=Value("string"), image=Image(), question=Value("string"), answer=Value("string"))
    _write(rows, features, directory / "shapes.parquet")
    (directory / "shapes.yaml").write_text(TINY_TASK)
    (directory / "shapes_utils.py").write_text(TINY_UTILS)
    return directory
