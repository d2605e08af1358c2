"""``scope-eval make-task-data``: a benchmark of one's own from a JSONL of questions and a folder of images.

Each JSONL line is one question: ``{"image": "cat.png", "question": "...", "answer": "..."}`` plus any other
fields the task's ``doc_to_text`` / ``process_results`` read; ``image`` is a path relative to the images
folder (or to the JSONL when no folder is given). The output is the parquet lmms-eval reads with
``dataset_path: parquet`` and ``data_files``: the same fields, the image stored as PNG bytes.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Optional

import typer


class TaskDataError(ValueError):
    """A questions file or image that cannot become a task's data; the message names the line and the fix."""


def read_questions(questions: Path, images: Path | None = None, image_field: str = "image") -> list[dict]:
    """The JSONL's records, each ``image_field`` replaced by the image's PNG bytes ({"bytes", "path"})."""
    from PIL import Image

    folder = images if images is not None else questions.parent
    records = []
    for number, line in enumerate(questions.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            raise TaskDataError(f"{questions}:{number}: not a JSON object ({error})") from None
        if not isinstance(record, dict) or not isinstance(record.get(image_field), str):
            raise TaskDataError(f"{questions}:{number}: needs a string field '{image_field}' naming an image file in {folder}")
        path = folder / record[image_field]
        try:
            with Image.open(path) as image:
                buffer = io.BytesIO()
                image.convert("RGB").save(buffer, format="PNG")
        except (OSError, ValueError) as error:
            raise TaskDataError(f"{questions}:{number}: cannot read image {path}: {error}") from None
        records.append({**record, image_field: {"bytes": buffer.getvalue(), "path": record[image_field]}})
    if not records:
        raise TaskDataError(f"{questions}: no questions (one JSON object per line)")
    return records


def write_task_parquet(questions: Path, output: Path, images: Path | None = None, image_field: str = "image") -> int:
    """Write the parquet; returns the number of questions."""
    from datasets import Dataset, Image

    records = read_questions(questions, images, image_field)
    output.parent.mkdir(parents=True, exist_ok=True)
    # The Image feature is stored in the parquet's schema, so lmms-eval's loader hands doc_to_visual PIL images
    Dataset.from_list(records).cast_column(image_field, Image()).to_parquet(str(output))
    return len(records)


def make_task_data(
    questions: Path = typer.Argument(..., metavar="QUESTIONS", help="JSONL, one question per line, with an 'image' field naming its file."),
    images: Optional[Path] = typer.Option(None, "--images", help="Folder the 'image' paths are relative to (default: the JSONL's folder)."),
    output: Path = typer.Option(..., "--output", help="The parquet to write, e.g. my_tasks/my_task.parquet."),
    image_field: str = typer.Option("image", "--image-field", help="Field holding the image path."),
) -> None:
    """Turn a JSONL of questions + a folder of images into the parquet a task YAML reads (dataset_path: parquet)."""
    try:
        count = write_task_parquet(questions, output, images, image_field)
    except (TaskDataError, OSError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {output} ({count} questions)")
