"""prefs:file=F: MMPR / RLAIF-V preference items, with optional box or mask regions, and bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.errors import DataError
from imagesets import available_splits, dataset_capabilities, open_split
from imagesets.records import DataWarning

from .conftest import write_image
from .real_layouts import png_bytes, write_prefs


def test_mmpr_jsonl_with_and_without_regions(tmp_path: Path):
    path = write_prefs(tmp_path / "mmpr", n=9)
    spec = f"prefs:file={path}"
    assert available_splits(spec) == ["val"] and dataset_capabilities(spec) == {"preferences", "image_files"}
    split = open_split(spec, "val")
    assert len(split) == 9 and split.notes == [] and (split.labels == -1).all()
    boxed, masked, plain = (split.vqa_items(i) for i in range(3))
    assert [len(boxed), len(masked), len(plain)] == [1, 1, 1]
    assert boxed[0].question == "What colour is the circle?" and (boxed[0].chosen, boxed[0].rejected) == ("red", "green")
    assert boxed[0].kind == "preference" and (boxed[0].box.x0, boxed[0].box.y0, boxed[0].box.x1, boxed[0].box.y1) == (4, 6, 30, 28)
    assert split.seg_mask(0) is None and plain[0].box is None and split.seg_mask(2) is None
    box = masked[0].box  # a mask alone: its bounding box
    assert (box.x0, box.y0, box.x1, box.y1, box.label) == (20, 10, 44, 30, 1)
    mask = split.seg_mask(1)
    assert mask.shape == (40, 48) and mask.sum() == 20 * 24 and (mask[10:30, 20:44] == 1).all()
    assert split.load_image(4).size == (48, 40) and split.item_id(4) == "prefs.jsonl:5"


def test_trains_preference_jsonl_is_read_as_is(tmp_path: Path):
    from train.data import read_items, write_shapes_data

    files = write_shapes_data("shapes:n=8:seed=0:size=32", "val", tmp_path / "shapes")
    items, _ = read_items(files["preferences"])
    split = open_split(f"prefs:file={files['preferences']}", "val")
    assert len(split) == len(items)
    first = split.vqa_items(0)[0]
    assert (first.question, first.chosen, first.rejected) == (items[0].question, items[0].chosen, items[0].rejected)
    kinds = {split.vqa_items(i)[0].kind for i in range(len(split))}  # the writer's own kind field
    assert {"colour", "count", "presence"} <= kinds <= {"colour", "count", "presence", "position"}


def test_rlaif_v_style_parquet_with_embedded_images(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = {"ds_name": ["x"] * 3, "image": [{"bytes": png_bytes((20, 16), i), "path": f"{i}.jpg"} for i in range(3)],
            "question": ["Is it red?"] * 3, "chosen": ["yes", "no", "yes"], "rejected": ["no", "yes", "no"], "box": [[0, 0, 10, 8], None, None]}
    pq.write_table(pa.table(rows), tmp_path / "rlaif.parquet")
    split = open_split(f"prefs:file={tmp_path / 'rlaif.parquet'}", "val")
    assert len(split) == 3 and split.vqa_items(0)[0].box.x1 == 10 and split.vqa_items(1)[0].box is None
    assert split.load_image(2).size == (20, 16) and split.item_id(0) == "rlaif.parquet:row1"
    assert dataset_capabilities(f"prefs:file={tmp_path / 'rlaif.parquet'}") == {"preferences"}


def _write(folder: Path, records: list[dict], n_good: int = 40) -> Path:
    write_image(folder / "img.png", size=(48, 40))
    lines = [json.dumps({"image": "img.png", "question": f"q{i}", "chosen": "a", "rejected": "b"}) for i in range(n_good)]
    lines += [json.dumps({"image": "img.png", "question": "q", "chosen": "a", "rejected": "b", **record}) for record in records]
    path = folder / "prefs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("record, reason", [
    ({"box": [10, 10, 60, 30]}, r"box \[10, 10, 60, 30\] outside the image \(48x40\)"),
    ({"box": [-5, 0, 10, 10]}, r"box \[-5, 0, 10, 10\] outside the image"),
    ({"box": [10, 10, 5, 30]}, r"empty box"),
    ({"box": "0 0 4 4"}, r"malformed box \(expected \[x0, y0, x1, y1\] in pixels\)"),
    ({"mask": "nope.png"}, r"missing mask \(nope.png\)"),
    ({"mask": "small.png"}, r"mask 10x10 differs from its image 48x40 \(small.png\)"),
    ({"mask": "blank.png"}, r"empty mask \(blank.png\)"),
    ({"chosen": "b"}, r"chosen equals rejected"),
    ({"rejected": " "}, r"empty answer"),
    ({"question": ""}, r"empty question"),
    ({"image": "missing.png"}, r"missing image missing.png"),
])
def test_each_bad_item_is_skipped_counted_and_named(tmp_path: Path, record: dict, reason: str):
    Image.new("L", (10, 10), 255).save(tmp_path / "small.png")
    Image.new("L", (48, 40), 0).save(tmp_path / "blank.png")
    path = _write(tmp_path, [record])
    with pytest.warns(DataWarning, match=rf"prefs.jsonl: 1 of 41 records skipped .*line 41: {reason}"):
        split = open_split(f"prefs:file={path}", "val")
    assert len(split) == 40


def test_above_five_percent_bad_items_the_file_is_refused(tmp_path: Path):
    path = _write(tmp_path, [{"box": [0, 0, 99, 99]}] * 3)
    with pytest.raises(DataError, match=r"prefs.jsonl: 3 of 43 records skipped .* above 5% of the file\n  fix: each record needs image, question, chosen and rejected"):
        open_split(f"prefs:file={path}", "val")


def test_fractional_boxes_widen_to_whole_pixels_and_box_with_mask_intersect(tmp_path: Path):
    mask = np.zeros((40, 48), np.uint8)
    mask[0:20, 0:24] = 1
    Image.fromarray(mask * 255, "L").save(tmp_path / "m.png")
    path = _write(tmp_path, [{"box": [1.5, 2.2, 10.1, 12.0]}, {"box": [10, 10, 40, 30], "mask": "m.png"}], n_good=0)
    split = open_split(f"prefs:file={path}", "val")
    box = split.vqa_items(0)[0].box
    assert (box.x0, box.y0, box.x1, box.y1) == (1, 2, 11, 12)
    from benchmarks.suites.regions import item_region

    region = item_region(split, 1, split.vqa_items(1)[0])
    expected = np.zeros((40, 48), bool)
    expected[10:20, 10:24] = True
    assert np.array_equal(region, expected)
    assert item_region(split, 0, split.vqa_items(0)[0]).sum() == 10 * 10
