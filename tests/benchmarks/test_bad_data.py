"""Bad data files in the real on-disk layouts (COCO, ImageNet, ADE20K, image-caption pairs, preference
items): ``benchmarks.run`` opens every split a suite reads before any model loads. A suite named with
``--suite`` whose data fails is exit 2 with one line naming the file (and record) plus its ``fix:`` line,
no traceback, no model loaded and ``--out`` untouched; under ``--suite all`` it is a skipped row with that
reason. What only decoding finds (unreadable images in a split) is reported when the suite runs: one
line, a failed row, exit 2, the other suites' rows kept."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import run
from benchmarks.results import read_frame
from tests.benchmarks.conftest import write_tiny_checkpoint
from tests.imagesets.conftest import write_image
from tests.imagesets.real_layouts import write_coco, write_pairs_parquet, write_prefs

pytestmark = pytest.mark.filterwarnings("ignore::imagesets.records.DataWarning")
PREVIOUS = '{"computed": "earlier results that must survive"}\n'


@pytest.fixture
def no_model(monkeypatch):
    """A data-file error must come before any encoder loads."""
    monkeypatch.setattr(run, "load_run_encoder", lambda *a, **k: pytest.fail("an encoder was loaded before the data-file error"))


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    return write_tiny_checkpoint(tmp_path / "enc.safetensors")


def _refused(tmp_path, capsys, encoder, suite: str, data: str, *needles: str, extra=()) -> str:
    """Run ``--suite suite --data data``: exit 2, the error line naming ``needles`` and a fix line, nothing else."""
    out = tmp_path / "run"
    out.mkdir(exist_ok=True)
    (out / "results.jsonl").write_text(PREVIOUS)
    status = run.main(["--encoder", str(encoder), "--suite", suite, "--data", data, "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                       "--workers", "0", "--no-report", *extra])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status == 2, captured.err
    assert "Traceback" not in captured.err + captured.out
    assert len(lines) == 2 and lines[0].startswith("benchmarks.run: error: ") and lines[1].startswith("  fix: "), captured.err
    for needle in needles:
        assert needle in captured.err, f"{needle!r} not in {captured.err!r}"
    assert (out / "results.jsonl").read_text() == PREVIOUS and not (tmp_path / "cache").exists()
    return captured.err


# ------------------------------------------------------------------ COCO


def test_a_truncated_coco_instances_file(tmp_path, capsys, checkpoint, no_model):
    root = write_coco(tmp_path / "coco")
    path = root / "annotations" / "instances_val2017.json"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    _refused(tmp_path, capsys, checkpoint, "cls", f"coco:root={root}", "instances_val2017.json: not valid JSON", "fix: restore the file from the COCO annotations archive")


def test_coco_images_missing_above_five_percent(tmp_path, capsys, checkpoint, no_model):
    root = write_coco(tmp_path / "coco", n_val=20)
    for path in sorted((root / "val2017").iterdir())[:5]:
        path.unlink()
    _refused(tmp_path, capsys, checkpoint, "seg", f"coco:root={root}", "5 of 20 images named in", "instances_val2017.json", "above 5%",
             "fix: restore the image folder (re-extract val2017.zip)")


def test_coco_polygons_with_fewer_than_three_points(tmp_path, capsys, checkpoint, no_model):
    root = write_coco(tmp_path / "coco")
    path = root / "annotations" / "instances_val2017.json"
    document = json.loads(path.read_text())
    for annotation in document["annotations"]:
        if isinstance(annotation["segmentation"], list):
            annotation["segmentation"] = [annotation["segmentation"][0][:4]]  # two points
    path.write_text(json.dumps(document))
    _refused(tmp_path, capsys, checkpoint, "loc", f"coco:root={root}", "instances_val2017.json", "malformed polygon (fewer than 3 points)", "annotation ",
             "above 5%", "fix: restore it from the COCO annotations archive")


# ------------------------------------------------------------------ image-caption pairs


@pytest.mark.parametrize("content, words", [
    (b"", "no records (the file is empty)"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xd8\xff\xe0 binary", "not UTF-8 text"),
    (b"image,caption\na.png,a cat\nb.png,a dog\n", "3 of 3 records skipped (3 not JSON; line 1: not JSON; line 2: not JSON; line 3: not JSON): no usable record"),
], ids=["empty", "binary", "not-json"])
def test_a_pairs_file_that_is_empty_binary_or_not_json(tmp_path, capsys, checkpoint, no_model, content, words):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(content)
    _refused(tmp_path, capsys, checkpoint, "align", f"pairs:file={path}", str(path), words, "fix: ")


def test_a_pairs_parquet_without_a_caption_column(tmp_path, capsys, checkpoint, no_model):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = write_pairs_parquet(tmp_path / "wit.parquet", n=4)
    table = pq.read_table(path)
    pq.write_table(pa.table({"image": table.column("image"), "text": table.column("caption")}), path)
    _refused(tmp_path, capsys, checkpoint, "align", f"pairs:file={path}", "wit.parquet: parquet file has no 'caption' column (columns: image, text)",
             "fix: name the caption column caption")


# ------------------------------------------------------------------ preference items


@pytest.fixture
def mllm_encoder(tmp_path) -> Path:
    """An MLLM directory as --encoder (grad runs only on MLLMs); a data error must come before it loads."""
    folder = tmp_path / "mllm"
    folder.mkdir()
    (folder / "mllm.json").write_text("{}")
    return folder


@pytest.mark.parametrize("change, words", [
    ({"rejected": "red"}, "chosen equals rejected"),
    ({"box": [10, 10, 90, 30]}, "box [10, 10, 90, 30] outside the image (48x40)"),
], ids=["chosen-equals-rejected", "box-outside-image"])
def test_preference_items_above_five_percent_bad(tmp_path, capsys, mllm_encoder, no_model, change, words):
    path = write_prefs(tmp_path / "mmpr", n=12, regions=False)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for record in lines[:3]:
        record.update(change, chosen="red")
    path.write_text("\n".join(json.dumps(record) for record in lines) + "\n")
    _refused(tmp_path, capsys, mllm_encoder, "grad", f"prefs:file={path}", "prefs.jsonl: 3 of 12 records skipped", f"line 1: {words}", "above 5% of the file",
             "fix: each record needs image, question, chosen and rejected")


# ------------------------------------------------------------------ ImageNet and ADE20K


def _imagenet(root: Path, wnids=("n01440764", "n01443537"), train: int = 3, val: int = 2) -> Path:
    for c, wnid in enumerate(wnids):
        for k in range(train):
            write_image(root / "train" / wnid / f"{wnid}_{k}.JPEG", seed=10 * c + k, fmt="JPEG")
        for k in range(val):
            write_image(root / "val" / wnid / f"ILSVRC2012_val_{c}{k:07d}.JPEG", seed=100 + 10 * c + k, fmt="JPEG")
    return root


def test_an_imagenet_folder_with_one_class(tmp_path, capsys, checkpoint, no_model):
    root = _imagenet(tmp_path / "imagenet", wnids=("n01440764",))
    _refused(tmp_path, capsys, checkpoint, "cls", f"imagenet:root={root}", "has one class folder (n01440764)", "at least 2 classes", "fix: add the other class folders")


def test_an_imagenet_class_without_images(tmp_path, capsys, checkpoint, no_model):
    root = _imagenet(tmp_path / "imagenet")
    for path in (root / "val" / "n01443537").iterdir():
        path.unlink()
    _refused(tmp_path, capsys, checkpoint, "cls", f"imagenet:root={root}", f"empty class folder(s) in {root / 'val'}: n01443537", "fix: every class needs at least one image")


def test_imagenet_classes_that_differ_between_train_and_val(tmp_path, capsys, checkpoint, no_model):
    root = _imagenet(tmp_path / "imagenet")
    (root / "val" / "n01443537").rename(root / "val" / "n09999999")
    _refused(tmp_path, capsys, checkpoint, "cls", f"imagenet:root={root}", "missing in val: n01443537", "not in train: n09999999", "fix: both splits need the same class folders")


def test_an_ade20k_image_without_its_annotation(tmp_path, capsys, checkpoint, no_model, ade_root):
    (ade_root / "annotations" / "validation" / "ADE_val_00000001.png").unlink()
    _refused(tmp_path, capsys, checkpoint, "seg", f"ade20k:root={ade_root}", "ADE_val_00000001.jpg", "have no annotation", "fix: restore the annotations")


def test_decode_gpu_on_a_generated_dataset(tmp_path, capsys, checkpoint, no_model):
    out = tmp_path / "run"
    status = run.main(["--encoder", str(checkpoint), "--suite", "cls", "--data", "shapes:n=20:size=32", "--decode", "gpu", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert status == 2 and "\n" not in err and "Traceback" not in err and not out.exists()
    assert "--decode gpu reads image files" in err and "shapes:n=20:size=32 has none" in err and "pass --decode cpu" in err


# ------------------------------------------------------------------ under --suite all, and what only decoding finds


def test_under_all_a_suite_whose_data_fails_is_a_skipped_row_with_the_reason(tmp_path, checkpoint):
    root = write_coco(tmp_path / "coco")
    path = root / "annotations" / "instances_val2017.json"
    path.write_text(path.read_text()[:100])
    out = tmp_path / "run"
    status = run.main(["--encoder", str(checkpoint), "--suite", "all", "--data", f"coco:root={root}", "--data", "cls=shapes:n=100:n_val=20:size=32",
                       "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--workers", "0", "--no-report", "--linear", "sgd", "--linear-epochs", "1"])
    assert status == 0
    frame = read_frame(out)
    assert set(frame[frame.status == "ok"].suite) == {"cls"}
    skipped = frame[frame.status == "skipped"].set_index("suite").reason
    for suite in ("seg", "loc", "align"):
        assert "instances_val2017.json: not valid JSON" in skipped[suite] and "; restore the file from the COCO annotations archive" in skipped[suite]


def test_the_records_read_before_loading_are_the_ones_the_suites_use(tmp_path, checkpoint, monkeypatch):
    from imagesets import coco

    reads = []
    real = coco.read_instances
    monkeypatch.setattr(coco, "read_instances", lambda path: reads.append(Path(path).name) or real(path))
    root = write_coco(tmp_path / "coco")
    status = run.main(["--encoder", str(checkpoint), "--suite", "cls,loc", "--data", f"coco:root={root}", "--out", str(tmp_path / "run"),
                       "--cache-dir", str(tmp_path / "cache"), "--workers", "0", "--no-report", "--linear", "sgd", "--linear-epochs", "1", "--loc-items", "4"])
    assert status == 0
    assert sorted(reads) == ["instances_train2017.json", "instances_val2017.json"]  # once per file, for both suites
    assert set(read_frame(tmp_path / "run").query("status == 'ok'").suite) == {"cls", "loc"}


def test_unreadable_images_in_a_split_are_one_line_and_a_failed_row_later(tmp_path, capsys, checkpoint):
    root = _imagenet(tmp_path / "imagenet", train=6, val=3)
    for path in sorted((root / "train" / "n01440764").iterdir())[:2]:  # 2 of 12 train images: above 5%
        path.write_bytes(path.read_bytes()[:40])
    out = tmp_path / "run"
    status = run.main(["--encoder", str(checkpoint), "--suite", "cls,align", "--data", f"imagenet:root={root}", "--out", str(out),
                       "--cache-dir", str(tmp_path / "cache"), "--workers", "0", "--no-report", "--linear", "sgd", "--linear-epochs", "1"])
    captured = capsys.readouterr()
    assert status == 2 and "Traceback" not in captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("benchmarks.run: error: ")]
    assert len(errors) == 1 and "suite cls: 2 of 12 images of imagenet" in errors[0] and "could not be read" in errors[0] and "n01440764_0.JPEG" in errors[0]
    frame = read_frame(out)
    assert (frame[frame.suite == "cls"].status == "failed").all() and "could not be read" in frame[frame.suite == "cls"].reason.iloc[0]
    assert (frame[frame.suite == "align"].status != "failed").all()  # the other suite ran and kept its rows
    log = (out / "run.log").read_text()
    assert "suite cls FAILED: 2 of 12 images" in log and "Traceback" not in log
