"""Patch tokens in the feature store: part of the key, resumable after a kill, refused when the disk is too small."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.features import (
    ExtractionConfig,
    FeatureError,
    extract_features,
    token_grid,
)

from .conftest import ListSplit

CONFIG = ExtractionConfig(batch_size=4, shard_size=8, progress=False)


def test_tokens_are_stored_per_block_and_keyed(tmp_path, tiny_encoder):
    plain = extract_features(tiny_encoder, ListSplit(10), tmp_path, config=CONFIG)
    tokens = extract_features(tiny_encoder, ListSplit(10), tmp_path, config=CONFIG, patch_layers=[0, -1])
    assert plain.key != tokens.key and "tokens.L1" not in plain.arrays
    h, w = token_grid(tiny_encoder)
    assert (h, w) == (2, 2)
    for name in ("tokens.L0", "tokens.L1"):
        array = tokens.arrays[name]
        assert isinstance(array, np.memmap) and array.dtype == np.float16 and array.shape == (10, h * w, 32)
    # The last block's tokens average to the stored patch mean.
    np.testing.assert_allclose(np.asarray(tokens.arrays["tokens.L1"], np.float32).mean(1), np.asarray(plain.arrays["mean"], np.float32), atol=2e-2)


def test_killed_token_extraction_resumes_to_a_fresh_extraction(tmp_path, tiny_encoder):
    fresh = extract_features(tiny_encoder, ListSplit(30), tmp_path / "fresh", config=CONFIG, patch_layers=[-1])
    with pytest.raises(KeyboardInterrupt):
        extract_features(tiny_encoder, ListSplit(30, explode_at=19), tmp_path / "cache", config=CONFIG, patch_layers=[-1])
    entry = next((tmp_path / "cache").iterdir())
    assert sorted(p.name for p in entry.glob("*.tokens.L1.npy")) == ["shard-00000.tokens.L1.npy", "shard-00001.tokens.L1.npy"]
    resumed = extract_features(tiny_encoder, ListSplit(30), tmp_path / "cache", config=CONFIG, patch_layers=[-1])
    assert resumed.key == fresh.key
    for name in fresh.arrays:
        np.testing.assert_array_equal(np.asarray(fresh.arrays[name]), np.asarray(resumed.arrays[name]))


def test_size_is_printed_and_a_full_disk_refused(tmp_path, tiny_encoder, monkeypatch):
    lines: list[str] = []
    extract_features(tiny_encoder, ListSplit(6), tmp_path / "a", config=CONFIG, patch_layers=[-1], log=lines.append)
    assert any("MiB on disk" in line for line in lines)
    monkeypatch.setattr("benchmarks.features.extract.shutil.disk_usage", lambda path: type("U", (), {"free": 100})())
    with pytest.raises(FeatureError, match=r"GiB free; point --cache-dir"):
        extract_features(tiny_encoder, ListSplit(6), tmp_path / "b", config=CONFIG, patch_layers=[-1])
