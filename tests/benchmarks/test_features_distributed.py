"""The feature store under torch.distributed: two CPU ranks (gloo) fill one entry, rank 0 closes it,
and the merged features equal a single-process extraction."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as torch_mp

from benchmarks.features import ExtractionConfig, extract_features
from encoders import load_encoder
from imagesets import open_split
from tests.benchmarks.conftest import write_tiny_checkpoint

SPEC = "shapes:n=40:size=32"
CONFIG = ExtractionConfig(batch_size=4, shard_size=8, progress=False)
WORLD = 2


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, checkpoint: str, cache: str, out: str) -> None:
    """One rank: join the gloo group, extract its shards into the shared cache, record what it did."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)  # two ranks on a shared 2-core machine
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        logs: list[str] = []
        features = extract_features(load_encoder(checkpoint), open_split(SPEC, "train"), cache, config=CONFIG, log=logs.append)
        Path(out, f"rank{rank}.json").write_text(json.dumps({"logs": logs, "key": features.key, "rows": len(features.valid)}))
    finally:
        dist.destroy_process_group()


def test_two_ranks_fill_one_entry_equal_to_single_process(tmp_path):
    checkpoint = str(write_tiny_checkpoint(tmp_path / "tiny.safetensors"))
    cache, out = tmp_path / "cache", tmp_path / "out"
    out.mkdir()
    torch_mp.spawn(_rank_main, args=(WORLD, _free_port(), checkpoint, str(cache), str(out)), nprocs=WORLD, join=True)

    reports = [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(WORLD)]
    assert reports[0]["key"] == reports[1]["key"], "both ranks must address one store entry"
    assert all(report["rows"] == 40 for report in reports), "every rank reads the whole merged entry"
    # 5 shards of 8: rank 0 extracts shards 0, 2, 4 and rank 1 shards 1, 3.
    extracted = [report["logs"][0].split()[1] for report in reports]
    assert extracted == ["24", "16"], reports
    entry = cache / reports[0]["key"]
    assert (entry / "done.json").exists() and json.loads((entry / "done.json").read_text())["shards"] == 5
    assert sorted(p.name for p in entry.glob("*.npy")) == sorted(f"{name}.npy" for name in ["cls", "mean", "labels", "valid"])
    assert not list(entry.glob("shard-*")), "the shards are merged into one file per array and removed"
    assert not list(entry.glob("*.tmp*"))

    encoder = load_encoder(checkpoint)
    split = open_split(SPEC, "train")
    merged = extract_features(encoder, split, cache, config=CONFIG, log=lambda *_: None)  # a finished entry: read only
    single = extract_features(encoder, split, tmp_path / "single", config=CONFIG, log=lambda *_: None)
    assert merged.key == single.key == reports[0]["key"]
    for name in single.arrays:
        np.testing.assert_allclose(np.asarray(merged.arrays[name], np.float32), np.asarray(single.arrays[name], np.float32), rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(merged.labels, split.labels)
    np.testing.assert_array_equal(merged.labels, single.labels)
    assert merged.valid.all()
