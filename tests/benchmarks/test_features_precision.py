"""The store's speed settings: reduced precisions (keyed apart, close, encoder untouched) and torch.compile."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.features import PRECISIONS, ExtractionConfig, extract_features
from tests.benchmarks.conftest import ListSplit

CONFIG = {"batch_size": 4, "shard_size": 8, "progress": False}


def _relative_error(a, b) -> float:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("precision", [p for p in PRECISIONS if p != "fp32"])
def test_reduced_precisions_are_keyed_close_and_leave_the_encoder_alone(tmp_path, tiny_encoder, precision):
    before = {name: value.clone() for name, value in tiny_encoder.state_dict().items()}
    reference = extract_features(tiny_encoder, ListSplit(10), tmp_path, layers=[0], config=ExtractionConfig(**CONFIG))
    fast = extract_features(tiny_encoder, ListSplit(10), tmp_path, layers=[0], config=ExtractionConfig(precision=precision, **CONFIG))
    assert fast.key != reference.key, "a precision changes the numbers, so it must change the key"
    for name in reference.arrays:
        assert _relative_error(fast.arrays[name], reference.arrays[name]) < 0.1, name
    after = tiny_encoder.state_dict()
    assert all(after[name].dtype == torch.float32 and torch.equal(after[name], value) for name, value in before.items())


def test_compile_keeps_the_key_and_the_numbers_across_a_partial_last_batch(tmp_path, tiny_encoder):
    reference = extract_features(tiny_encoder, ListSplit(10), tmp_path / "eager", config=ExtractionConfig(**CONFIG))
    compiled = extract_features(tiny_encoder, ListSplit(10), tmp_path / "compiled", config=ExtractionConfig(compile=True, **CONFIG))
    assert compiled.key == reference.key  # same math in fused kernels: same store entry
    for name in reference.arrays:  # 10 images in batches of 4: the last batch of 2 is padded
        np.testing.assert_allclose(np.asarray(compiled.arrays[name], np.float32), np.asarray(reference.arrays[name], np.float32), atol=2e-3, rtol=2e-3)


def test_unknown_precision_and_int8_off_cpu_are_refused(tmp_path, tiny_encoder):
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        extract_features(tiny_encoder, ListSplit(4), tmp_path / "cache", config=ExtractionConfig(precision="fp8", **CONFIG))
    assert not (tmp_path / "cache").exists(), "nothing is written for a refused config"
    with pytest.raises(ValueError, match="int8-dynamic runs on CPU only"):
        extract_features(tiny_encoder, ListSplit(4), tmp_path / "cache", config=ExtractionConfig(precision="int8-dynamic", device="cuda", **CONFIG))


def test_bench_extraction_quick_runs():
    from benchmarks.perf.bench_extraction import main

    result = main(["--quick"])
    assert set(result["archs"]) == {"vit_small_patch16_224"}
    assert result["archs"]["vit_small_patch16_224"]["baseline_img_s"] > 0
    # which reduced precisions are timed depends on the rates measured on this CPU (bf16 only where it is fast)
    assert "fp32" in result["top1"] and "int8-dynamic" in result["top1"]
    assert set(result["top1"]) <= {"fp32", "int8-dynamic", "bf16", "bf16-weights"}
