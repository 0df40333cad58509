"""The feature store never silently degrades features (fp16 under/overflow kept in fp32), names the
images it could not read, and never serves a replaced file from a stale cache."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from benchmarks.features import ExtractionConfig, FeatureError, extract_features, storage_dtype
from encoders import load_encoder, save_encoder_checkpoint
from imagesets import open_split
from imagesets.files import set_verify_content
from tests.benchmarks.conftest import TINY_ARCH, TINY_OPTIONS, ListSplit
from tests.imagesets.conftest import imagenet_root, write_image  # noqa: F401 - fixture

CONFIG = ExtractionConfig(batch_size=4, shard_size=8, progress=False)


@pytest.mark.parametrize("values,expected", [
    (np.random.default_rng(0).normal(size=(4, 16)), np.float16),  # ordinary features: fp16 keeps them
    (np.random.default_rng(0).normal(size=(4, 16)) * 1e-8, np.float32),  # underflow: a handful of subnormals
    (np.random.default_rng(0).normal(size=(4, 16)) * 1e5, np.float32),  # overflow beyond 65504
    (np.zeros((4, 16)), np.float16),
], ids=["normal", "underflow", "overflow", "zeros"])
def test_storage_dtype(values, expected):
    assert storage_dtype(values) == np.dtype(expected)


def _scaled_encoder(tmp_path, scale: float):
    """The tiny ViT with its final norm scaled, so the last block's features are ~``scale``."""
    import timm

    torch.manual_seed(0)
    state = timm.create_model(TINY_ARCH, pretrained=False, num_classes=0, **TINY_OPTIONS).state_dict()
    state["norm.weight"].fill_(scale)
    state["norm.bias"].zero_()
    path = save_encoder_checkpoint(state, {"family": "timm", "arch": TINY_ARCH, "options": TINY_OPTIONS}, tmp_path / f"s{scale:g}.safetensors")
    return load_encoder(path)


@pytest.mark.parametrize("scale", [1e-8, 1e6], ids=["underflow", "overflow"])
def test_features_fp16_cannot_keep_are_stored_in_fp32_and_recorded(tmp_path, scale):
    encoder = _scaled_encoder(tmp_path, scale)
    features = extract_features(encoder, ListSplit(12), tmp_path / "cache", layers=[0], config=CONFIG)
    cls = np.asarray(features.arrays["cls"])
    assert features.arrays["cls"].dtype == np.float32
    assert features.arrays["L0.cls"].dtype == np.float16  # the unaffected block stays compact
    assert np.isfinite(cls).all() and len(np.unique(cls)) > 100  # not collapsed to a few values or Inf
    assert 0.1 * scale < np.abs(cls).max() < 100 * scale
    done = json.loads((tmp_path / "cache" / features.key / "done.json").read_text())
    assert done["dtypes"]["cls"] == "float32" and done["dtypes"]["L0.cls"] == "float16"


def test_unreadable_images_are_named_in_the_log_and_the_error(tmp_path, tiny_encoder):
    lines: list[str] = []
    extract_features(tiny_encoder, ListSplit(40, bad={3}), tmp_path / "a", config=CONFIG, log=lines.append)
    assert any("unreadable" in line and "3" in line.split(":")[-1] for line in lines)
    with pytest.raises(FeatureError) as err:
        extract_features(tiny_encoder, ListSplit(40, bad={1, 2, 5, 7, 9}), tmp_path / "b", config=CONFIG)
    assert "1, 2, 5, 7, 9" in str(err.value) and "fix or remove" in str(err.value)


def test_replaced_file_of_the_same_size_changes_the_fingerprint(imagenet_root):  # noqa: F811
    spec = f"imagenet:root={imagenet_root}"
    target = imagenet_root / "train" / "n01440764" / "n01440764_0.JPEG"
    before = open_split(spec, "train").fingerprint
    size = target.stat().st_size
    replacement = target.with_name("tmp.bin")
    write_image(replacement, seed=999, fmt="JPEG")
    data = replacement.read_bytes()[:size].ljust(size, b"\0")  # another picture, same size
    replacement.unlink()
    target.write_bytes(data)
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    assert target.stat().st_size == size
    assert open_split(spec, "train").fingerprint != before


def test_verify_data_hashes_contents(imagenet_root):  # noqa: F811
    spec = f"imagenet:root={imagenet_root}"
    target = imagenet_root / "train" / "n01440764" / "n01440764_0.JPEG"
    stat = target.stat()
    plain = open_split(spec, "train").fingerprint
    set_verify_content(True)
    try:
        verified = open_split(spec, "train").fingerprint
        data = bytearray(target.read_bytes())
        data[-3] ^= 0xFF  # same size, and the modification time is put back
        target.write_bytes(bytes(data))
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert open_split(spec, "train").fingerprint != verified
    finally:
        set_verify_content(False)
    assert verified != plain
    assert open_split(spec, "train").fingerprint == plain  # without --verify-data such a rewrite is invisible (documented)


def test_unreadable_images_are_named_in_the_row_and_run_log(tmp_path):
    from benchmarks import run
    from benchmarks.results import read_frame
    from tests.benchmarks.conftest import write_tiny_checkpoint
    from tests.imagesets.conftest import write_image as image

    root = tmp_path / "imagenet"
    for split, count in (("train", 40), ("val", 10)):
        for label in ("n01", "n02"):
            for k in range(count // 2):
                image(root / split / label / f"{label}_{k}.JPEG", seed=k, fmt="JPEG")
    (root / "train" / "n01" / "n01_3.JPEG").write_bytes(b"not a jpeg")
    checkpoint = write_tiny_checkpoint(tmp_path / "enc.safetensors")
    out = tmp_path / "run"
    assert run.main(["--encoder", str(checkpoint), "--data", f"imagenet:root={root}", "--suite", "cls", "--out", str(out),
                     "--cache-dir", str(tmp_path / "cache"), "--workers", "0", "--linear-epochs", "1", "--no-report"]) == 0
    frame = read_frame(out)
    row = frame[frame.metric == "unreadable_images"].iloc[0]
    assert row.value == 1 and "n01/n01_3.JPEG" in row.extra["unreadable"]["train"]
    assert "n01/n01_3.JPEG" in (out / "run.log").read_text()
