"""``--suite seg`` end to end on tiny data: the three protocols' rows, figures, per-item scores, bad input."""
from __future__ import annotations

import numpy as np
from PIL import Image

from benchmarks import run
from benchmarks.results import read_frame
from encoders import save_encoder_checkpoint
from tests.benchmarks.conftest import TINY_ARCH, write_tiny_checkpoint

SHAPES = "shapes:n=12:n_val=4:seed=0:size=32"
FAST = ["--seg-epochs", "1", "--seg-min-steps", "0", "--seg-seeds", "2", "--seg-head-epochs", "1", "--seg-iters", "2"]


def _run(tmp_path, checkpoint, data, *extra):
    out = tmp_path / "run"
    status = run.main(["--encoder", str(checkpoint), "--suite", "seg", "--data", data, "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                       "--workers", "0", "--no-report", *FAST, *extra])
    return status, read_frame(out), out


def test_all_protocols_write_rows_figures_and_per_item_scores(tmp_path):
    status, frame, out = _run(tmp_path, write_tiny_checkpoint(tmp_path / "tiny.safetensors"), SHAPES, "--seg-mmseg-lr", "0.02")
    assert status == 0, frame.reason.tolist()
    assert set(frame.task) == {"patch_probe", "fast_linear", "mmseg_linear"}
    assert {row.extra["lr"] for row in frame[frame.task == "mmseg_linear"].itertuples()} == {0.02}
    recall = frame[frame.metric == "macro_patch_recall"].iloc[0]
    assert 0 <= recall.value <= 100 and recall.extra["std"] >= 0 and len(recall.extra["per_seed"]) == 2
    assert np.load(out / recall.per_item).shape == (4,)
    for task in ("fast_linear", "mmseg_linear"):
        miou = frame[(frame.task == task) & (frame.metric == "mIoU")].iloc[0]
        assert miou.ci_low <= miou.value <= miou.ci_high and miou.n == 4
        assert np.load(out / miou.per_item).shape == (4,)
        assert (out / miou.extra["figure"]).read_bytes().startswith(b"\x89PNG")
        assert set(frame[frame.task == task].metric) == {"mIoU", "mAcc", "aAcc"}


def test_grid_that_does_not_divide_the_input_uses_the_encoders_own_grid(tmp_path):
    options = {"img_size": 40, "patch_size": 16, "embed_dim": 32, "depth": 2, "num_heads": 2}  # 2x2 grid over 32 of 40 px
    import timm
    import torch

    torch.manual_seed(0)
    state = timm.create_model(TINY_ARCH, pretrained=False, num_classes=0, **options).state_dict()
    checkpoint = save_encoder_checkpoint(state, {"family": "timm", "arch": TINY_ARCH, "options": options}, tmp_path / "odd.safetensors")
    status, frame, _ = _run(tmp_path, checkpoint, SHAPES, "--seg-protocols", "patch_probe,fast_linear")
    assert status == 0, frame.reason.tolist()
    assert {tuple(e["grid"]) for e in frame.extra} == {(2, 2)} and {tuple(e["patch"]) for e in frame.extra} == {(16, 16)}


def test_a_convolutional_stem_places_each_token_on_its_stride_not_on_its_one_cell_patch(tmp_path):
    """The demo's hybrid ViT embeds with patch_size 1 on a stride-8 stem: its tokens cover 8x8 pixels.
    Read as 1x1 pixels, the targets came from the image's corner and every probe sat at its baseline."""
    import timm
    import torch

    import encoders.families.conv_stem_vit  # noqa: F401  (registers vit_convstem_demo)

    options = {"img_size": 32, "embed_dim": 32, "depth": 2, "num_heads": 2}
    torch.manual_seed(0)
    state = timm.create_model("vit_convstem_demo", pretrained=False, num_classes=0, **options).state_dict()
    checkpoint = save_encoder_checkpoint(state, {"family": "timm", "arch": "vit_convstem_demo", "options": options}, tmp_path / "stem.safetensors")
    status, frame, _ = _run(tmp_path, checkpoint, SHAPES, "--seg-protocols", "patch_probe,fast_linear")
    assert status == 0, frame.reason.tolist()
    assert {tuple(e["grid"]) for e in frame.extra} == {(4, 4)} and {tuple(e["patch"]) for e in frame.extra} == {(8, 8)}


def test_ade20k_layout_runs_through_mmseg_ade20k_dataset(tmp_path, ade_root):
    status, frame, _ = _run(tmp_path, write_tiny_checkpoint(tmp_path / "tiny.safetensors"), f"ade20k:root={ade_root}", "--seg-protocols", "mmseg_linear,fast_linear")
    assert status == 0, frame.reason.tolist()
    assert set(frame.task) == {"mmseg_linear", "fast_linear"} and (frame.n == 1).all()


def _failure(tmp_path, data, capsys, protocols="patch_probe"):
    """A user's data error: exit 2 and one line (no traceback); found while the suite runs, also failed rows."""
    out = tmp_path / "run"
    status = run.main(["--encoder", str(write_tiny_checkpoint(tmp_path / "tiny.safetensors")), "--suite", "seg", "--data", data, "--out", str(out),
                       "--cache-dir", str(tmp_path / "cache"), "--workers", "0", "--no-report", *FAST, "--seg-protocols", protocols])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err and "error: " in err
    if (out / "results.jsonl").exists():
        assert (read_frame(out).status == "failed").all()
    return err


def test_dataset_without_masks_is_a_usage_error_before_any_load(tmp_path, capsys):
    status = run.main(["--encoder", str(write_tiny_checkpoint(tmp_path / "tiny.safetensors")), "--suite", "seg", "--data", "digits", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert status == 2 and "segmentation masks" in err and "--data seg=SPEC" in err and not (tmp_path / "run").exists()


def test_missing_label_file_is_named_before_any_load(tmp_path, ade_root, capsys):
    (ade_root / "annotations" / "validation" / "ADE_val_00000001.png").unlink()
    err = _failure(tmp_path, f"ade20k:root={ade_root}", capsys)
    assert "ADE_val_00000001" in err and not (tmp_path / "run" / "results.jsonl").exists()


def test_label_ids_beyond_the_classes_and_size_mismatch_are_named(tmp_path, ade_root, capsys):
    path = ade_root / "annotations" / "training" / "ADE_train_00000002.png"
    Image.fromarray(np.full((12, 16), 200, np.uint8), "L").save(path)
    assert "ADE_train_00000002.png" in (reason := _failure(tmp_path, f"ade20k:root={ade_root}", capsys)) and "0..150" in reason
    Image.fromarray(np.ones((10, 16), np.uint8), "L").save(path)
    assert "is 16x10 but its image" in _failure(tmp_path / "b", f"ade20k:root={ade_root}", capsys)
