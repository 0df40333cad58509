"""pairs:file=F: image-caption pairs from parquet (embedded bytes, as Hugging Face exports) or JSONL."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from common.errors import DataError
from imagesets import BadImageError, available_splits, dataset_capabilities, open_split
from imagesets.records import DataWarning

from .conftest import write_image
from .real_layouts import png_bytes, write_pairs_parquet


def test_parquet_with_embedded_image_bytes(tmp_path: Path):
    path = write_pairs_parquet(tmp_path / "prh" / "wit.parquet", n=16)  # row groups of 5
    spec = f"pairs:file={path}"
    assert available_splits(spec) == ["val"] and dataset_capabilities(spec) == {"captions"}  # no image files on disk
    split = open_split(spec, "val")
    assert len(split) == 16 and (split.labels == -1).all() and split.classes == [] and split.notes == []
    assert split.caption(6) == "a blue square with a red star"
    for index in (0, 7, 15, 3):  # across row groups, out of order
        image = split.load_image(index)
        expected = np.random.default_rng(900 + index).integers(0, 256, (36, 40, 3), dtype=np.uint8)
        assert image.mode == "RGB" and np.array_equal(np.asarray(image), expected)
    assert split.item_id(7) == "wit.parquet:row8"
    with pytest.raises(NotImplementedError, match="embedded"):
        split.path(0)
    state = pickle.dumps(split)
    assert len(state) < 4000  # offsets, not bytes, travel to the workers
    assert np.array_equal(np.asarray(pickle.loads(state).load_image(12)), np.asarray(split.load_image(12)))


def test_trains_caption_jsonl_is_read_as_is(tmp_path: Path):
    from train.data import write_shapes_data

    files = write_shapes_data("shapes:n=12:seed=0:size=32", "val", tmp_path / "shapes")
    split = open_split(f"pairs:file={files['captions']}", "val")
    source = open_split("shapes:n=12:seed=0:size=32", "val")
    assert len(split) == len(source) and [split.caption(i) for i in range(len(split))] == [source.caption(i) for i in range(len(source))]
    assert dataset_capabilities(f"pairs:file={files['captions']}") == {"captions", "image_files"}
    assert split.path(1) == tmp_path / "shapes" / "images" / "val-000001.png" and split.item_id(1) == "captions.jsonl:2"
    assert np.array_equal(np.asarray(split.load_image(2)), np.asarray(source.load_image(2)))


def test_parquet_of_image_paths_is_image_files(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    for i in range(3):
        write_image(tmp_path / "img" / f"{i}.png", seed=i)
    pq.write_table(pa.table({"image": [f"img/{i}.png" for i in range(3)], "caption": ["a", "b", "c"], "url": ["x", "y", "z"]}), tmp_path / "p.parquet")
    spec = f"pairs:file={tmp_path / 'p.parquet'}"
    assert dataset_capabilities(spec) == {"captions", "image_files"}
    assert open_split(spec, "val").path(2) == tmp_path / "img" / "2.png"


def test_a_parquet_file_without_an_image_column_names_the_columns_and_the_fix(tmp_path: Path):
    path = write_pairs_parquet(tmp_path / "wit.parquet", n=4, image_column="jpg")
    with pytest.raises(DataError, match=r"wit.parquet: parquet file has no 'image' column \(columns: jpg, caption\)\n  fix: name the image column image"):
        open_split(f"pairs:file={path}", "val")
    assert dataset_capabilities(f"pairs:file={path}") == {"captions"}  # decided without failing; the split check says why


def test_a_bad_pairs_file_is_a_usage_error_before_any_load(tmp_path: Path, capsys):
    from benchmarks import run
    from tests.benchmarks.conftest import write_tiny_checkpoint

    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.safetensors")
    path = write_pairs_parquet(tmp_path / "wit.parquet", n=4, image_column="jpg")
    for data, words in ((f"pairs:file={path}", "has no 'image' column"), (f"pairs:file={tmp_path / 'none.parquet'}", "none.parquet does not exist")):
        assert run.main(["--encoder", str(checkpoint), "--suite", "align", "--data", data, "--out", str(tmp_path / "run")]) == 2
        assert words in capsys.readouterr().err


def test_empty_captions_are_counted_and_many_are_an_error(tmp_path: Path):
    captions = [f"caption {i}" for i in range(30)]
    captions[4] = "   "
    path = write_pairs_parquet(tmp_path / "a.parquet", n=30, captions=captions)
    with pytest.warns(DataWarning, match=r"a.parquet: 1 of 30 records skipped \(1 empty caption; row 5: empty caption\)"):
        split = open_split(f"pairs:file={path}", "val")
    assert len(split) == 29 and split.caption(4) == "caption 5" and "row 5: empty caption" in split.notes[0]
    captions[7] = ""
    path = write_pairs_parquet(tmp_path / "b.parquet", n=30, captions=captions)
    with pytest.raises(DataError, match=r"b.parquet: 2 of 30 records skipped .* above 5% of the file\n  fix: each record needs an image .* and a non-empty caption"):
        open_split(f"pairs:file={path}", "val")


def test_jsonl_lines_with_missing_images_or_no_caption_are_counted(tmp_path: Path):
    lines = []
    for i in range(40):
        if i != 3:
            write_image(tmp_path / "images" / f"{i}.png", seed=i)
        lines.append(json.dumps({"image": f"images/{i}.png", "caption": f"pair {i}"}))
    lines[9] = json.dumps({"image": "images/9.png", "question": "q", "chosen": "a", "rejected": "b"})
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n\n")
    with pytest.warns(DataWarning, match=r"2 of 40 records skipped \(1 missing image images/3.png, 1 no caption field; line 4: missing image images/3.png; line 10: no caption field\)"):
        split = open_split(f"pairs:file={tmp_path / 'pairs.jsonl'}", "val")
    assert len(split) == 38 and split.item_id(3) == "pairs.jsonl:5"


def test_a_preference_file_given_as_pairs_is_refused_naming_it(tmp_path: Path):
    write_image(tmp_path / "a.png")
    (tmp_path / "prefs.jsonl").write_text(json.dumps({"image": "a.png", "question": "q", "chosen": "a", "rejected": "b"}) + "\n")
    with pytest.raises(ValueError, match="prefs.jsonl: 1 of 1 records skipped .*no usable record"):
        open_split(f"pairs:file={tmp_path / 'prefs.jsonl'}", "val")


def test_corrupt_embedded_bytes_are_a_bad_image_naming_the_row(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = [{"bytes": png_bytes((8, 8), i), "path": None} for i in range(3)]
    images[1] = {"bytes": b"\x89PNG not really", "path": None}
    pq.write_table(pa.table({"image": images, "caption": ["a", "b", "c"]}), tmp_path / "x.parquet")
    split = open_split(f"pairs:file={tmp_path / 'x.parquet'}", "val")
    with pytest.raises(BadImageError, match=r"x.parquet row 2 \(embedded image\)"):
        split.load_image(1)
    assert split.load_image(2).size == (8, 8)


@pytest.mark.parametrize("name, words", [("pairs.csv", "unknown table format .csv"), ("none.jsonl", "does not exist")])
def test_unknown_format_or_missing_file(tmp_path: Path, name: str, words: str):
    (tmp_path / "pairs.csv").write_text("image,caption\n")
    with pytest.raises((ValueError, FileNotFoundError), match=words):
        open_split(f"pairs:file={tmp_path / name}", "val")
