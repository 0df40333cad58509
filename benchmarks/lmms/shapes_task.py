"""The shapes world's VQA items as local lmms-eval tasks (offline: ``dataset_path: json``).

``write_shapes_tasks`` renders the images of one split to PNG files, writes the questions as JSON Lines
and two task YAMLs beside them; pass the folder to lmms-eval with ``--include_path``:

* ``shapes_vqa`` (``generate_until``): the model answers the question; metric ``exact_match`` (case
  and punctuation ignored) against the correct answer.
* ``shapes_vqa_mc`` (``multiple_choice``): lmms-eval compares the model's log-likelihood of the correct
  and the plausible wrong answer (the preference pair of the item); metric ``acc``.

The YAMLs name the functions below by module path (lmms-eval's ``!function`` falls back to an absolute
import), so no code is written next to the data.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from imagesets import open_split

TASKS = ("shapes_vqa", "shapes_vqa_mc")
DEFAULT_ITEMS = 200
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ShapesTask:
    """Where the written task lives and what it holds."""

    include_path: Path
    docs: Path
    n_items: int
    fingerprint: str
    kinds: dict[str, int]


def _items(data: str, split: str, n_items: int) -> tuple[list[dict[str, Any]], Any]:
    dataset = open_split(data, split)
    rows: list[dict[str, Any]] = []
    for index in range(len(dataset)):
        for number, item in enumerate(dataset.vqa_items(index)):
            if len(rows) == n_items:
                return rows, dataset
            # The correct answer's position among the choices alternates, so always picking the
            # first choice scores 50%, not 100%.
            choices = [item.chosen, item.rejected] if len(rows) % 2 == 0 else [item.rejected, item.chosen]
            rows.append({
                "item_id": f"{dataset.item_id(index)}/{number}", "image_index": index, "question": item.question,
                "answer": item.chosen, "rejected": item.rejected, "kind": item.kind,
                "choices": choices, "label": choices.index(item.chosen),
            })
    if not rows:
        raise ValueError(f"{data} ({split}) has no VQA items; shapes VQA needs the shapes world (e.g. shapes:n=800:seed=0)")
    return rows, dataset


def write_shapes_tasks(data: str, folder: str | Path, n_items: int = DEFAULT_ITEMS, split: str = "val") -> ShapesTask:
    """Write ``n_items`` VQA items of ``data``'s ``split`` (images in index order, all questions of an
    image before the next image) as the lmms-eval tasks ``shapes_vqa`` and ``shapes_vqa_mc`` into
    ``folder``; returns the folder to pass as ``--include_path``. Rewrites nothing that is already there
    with the same content (the fingerprint of the split and the item count name the data file)."""
    if n_items < 1:
        raise ValueError(f"--vqa-items must be at least 1, got {n_items}")
    rows, dataset = _items(data, split, n_items)
    folder = Path(folder).resolve()
    tag = f"{dataset.fingerprint}-{split}-{len(rows)}-v{_FORMAT_VERSION}"
    images = folder / "images" / tag
    images.mkdir(parents=True, exist_ok=True)
    for index in sorted({row["image_index"] for row in rows}):
        path = images / f"{index:07d}.png"
        if not path.exists():
            tmp = path.with_suffix(".tmp.png")
            dataset.load_image(index).save(tmp)
            tmp.replace(path)
    for row in rows:
        row["image"] = str(images / f"{row.pop('image_index'):07d}.png")
    docs = folder / f"shapes_vqa_{tag}.jsonl"
    docs.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))
    metadata = {"version": _FORMAT_VERSION, "dataset": data, "source_split": split, "fingerprint": dataset.fingerprint, "n_items": len(rows)}
    common = (
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        "  data_files:\n"
        f"    test: {json.dumps(str(docs))}\n"
        "test_split: test\n"
        "doc_to_visual: !function benchmarks.lmms.shapes_task.doc_to_visual\n"
        "doc_to_text: !function benchmarks.lmms.shapes_task.doc_to_text\n"
        f"metadata: {json.dumps(metadata)}\n"
    )
    (folder / "shapes_vqa.yaml").write_text(
        "task: shapes_vqa\n" + common +
        "output_type: generate_until\n"
        "doc_to_target: answer\n"
        "generation_kwargs:\n  max_new_tokens: 8\n  do_sample: false\n  until: [\"\\n\"]\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
        "    ignore_case: true\n    ignore_punctuation: true\n"
    )
    (folder / "shapes_vqa_mc.yaml").write_text(
        "task: shapes_vqa_mc\n" + common +
        "output_type: multiple_choice\n"
        "doc_to_choice: choices\n"
        "doc_to_target: label\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    kinds: dict[str, int] = {}
    for row in rows:
        kinds[row["kind"]] = kinds.get(row["kind"], 0) + 1
    return ShapesTask(folder, docs, len(rows), dataset.fingerprint, kinds)


def doc_to_visual(doc: dict[str, Any]) -> list[Image.Image]:
    """The item's image as an RGB PIL image (lmms-eval's ``doc_to_visual``)."""
    with Image.open(doc["image"]) as image:
        return [image.convert("RGB")]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict | None = None) -> str:
    """The question as the shapes world asks it (the words the demo MLLMs were trained on)."""
    return doc["question"]
