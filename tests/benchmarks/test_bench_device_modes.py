"""Smoke test of bench_extraction's device modes (run on CPU here; the GPU numbers need a GPU)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from benchmarks.perf import bench_extraction


def test_device_modes_run_on_a_folder_of_jpegs(tmp_path, capsys):
    for i in range(6):
        pixels = np.random.default_rng(i).integers(0, 256, (40, 50, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"img{i}.jpg")
    results = bench_extraction.main(["--device", "cpu", "--quick", "--data", str(tmp_path), "--decode", "cpu", "gpu"])
    rates = results["archs"][bench_extraction.TINY_ARCH]
    assert {"data only (uint8 workers)", "forward only (bf16 weights)", "plain timm fp32", "plain timm bf16 autocast",
            "suite fp32 decode=cpu", "suite fp32 decode=gpu"} == set(rates)
    assert all(rate > 0 for rate in rates.values())
    assert "of forward-only" in capsys.readouterr().out
