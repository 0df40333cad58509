"""The one reader of image-record JSONL: its record rules and skip accounting, and the two packages that
read preference files with it (train's training items, the prefs dataset) skipping the same lines."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.errors import DataError
from common.records import Caption, Preference, Skips, caption, preference, read_jsonl
from tests.imagesets.conftest import write_image


@pytest.mark.parametrize("fields, expected", [
    ({"question": " What colour? ", "chosen": "red ", "rejected": "blue"}, Preference("What colour?", "red", "blue")),
    ({"question": "q", "chosen": "a"}, "not a preference item (needs question, chosen, rejected)"),
    ({"question": "", "chosen": "a", "rejected": "b"}, "empty question"),
    ({"question": "q", "chosen": " ", "rejected": "b"}, "empty answer"),
    ({"question": "q", "chosen": "a", "rejected": " a "}, "chosen equals rejected"),
    ({"question": "q", "chosen": 3, "rejected": "b"}, "question, chosen and rejected must be text"),
])
def test_preference_rules(fields, expected):
    assert preference(fields) == expected


@pytest.mark.parametrize("fields, expected", [({"caption": " a cat "}, Caption("a cat")), ({}, "no caption field"), ({"caption": "  "}, "empty caption"),
                                              ({"caption": ["a"]}, "caption must be text")])
def test_caption_rules(fields, expected):
    assert caption(fields) == expected


def test_lines_that_are_not_records_are_counted_and_the_first_named(tmp_path: Path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"image": "a.png", "caption": "x"}\n\n{not json\n[1, 2]\n{"caption": "no image"}\n{"image": {"path": "b.png"}, "caption": "y"}\n')
    skips = Skips(path)
    records = read_jsonl(path, skips)
    assert [(r.number, r.image, r.fields) for r in records] == [(1, "a.png", {"caption": "x"}), (6, "b.png", {"caption": "y"})]
    assert skips.total == 5 and skips.kept == 2 and dict(skips.skipped) == {"not JSON": 1, "not a JSON object": 1, "no image path (a JSONL image is a path relative to the file)": 1}
    assert skips.examples[0] == "line 3: not JSON"


def test_the_threshold_and_the_file_level_errors(tmp_path: Path):
    skips = Skips(tmp_path / "f.jsonl", total=40)
    assert skips.check("fix it") == "" and "none skipped" in skips.summary()
    skips.skip("line 7", "empty answer")
    assert skips.check("fix it") == f"{tmp_path / 'f.jsonl'}: 1 of 40 records skipped (1 empty answer; line 7: empty answer)"
    skips.skip("line 9", "empty answer")
    skips.skip("line 12", "not JSON")
    with pytest.raises(DataError, match=r"3 of 40 records skipped .*: above 5% of the file\n  fix: fix it"):
        skips.check("fix it")
    with pytest.raises(DataError, match="no usable record"):
        Skips(tmp_path / "f.jsonl", total=2, skipped={"x": 2}).check("fix it")
    with pytest.raises(DataError, match=r"no records \(the file is empty\)"):
        Skips(tmp_path / "f.jsonl").check("fix it")
    (tmp_path / "binary.jsonl").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF")
    with pytest.raises(DataError, match=r"binary.jsonl: not UTF-8 text .*\n  fix: a .jsonl file holds one JSON object per line"):
        read_jsonl(tmp_path / "binary.jsonl", Skips(tmp_path / "binary.jsonl"))
    with pytest.raises(DataError, match="nowhere.jsonl does not exist"):
        read_jsonl(tmp_path / "nowhere.jsonl", Skips(tmp_path / "nowhere.jsonl"))


def test_train_and_the_prefs_dataset_skip_the_same_lines_for_the_same_reasons(tmp_path: Path):
    from imagesets import open_split
    from train.data import read_items

    write_image(tmp_path / "img.png", size=(48, 40))
    good = [{"image": "img.png", "question": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(80)]
    bad = [{"image": "img.png", "question": "q", "chosen": "a", "rejected": "a"}, {"image": "img.png", "question": " ", "chosen": "a", "rejected": "b"}]
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n".join(json.dumps(record) for record in good[:20] + bad[:1] + good[20:] + bad[1:]) + "\nnot json\n")
    items, skips = read_items(path)
    with pytest.warns(UserWarning):
        split = open_split(f"prefs:file={path}", "val")
    assert len(items) == len(split) == 80 and [item.line for item in items] == [int(split.item_id(i).split(":")[1]) for i in range(len(split))]
    assert dict(skips.skipped) == {"chosen equals rejected": 1, "empty question": 1, "not JSON": 1}
    assert split.notes == [skips.summary()]  # one reader, one account of the file
