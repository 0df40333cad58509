"""Benchmark: peak memory of feature extraction stays flat as the dataset grows (shards are streamed).

Extracts ``shapes:n=N`` and ``shapes:n=4N`` (64 px) with a small random-init ViT, each in a fresh
child process, while a thread samples the process's resident set size (RSS, psutil) every few ms.
Printed per size, in MiB above the RSS just before ``extract_features`` is called (after a warm-up
extraction of a small split, so one-off allocations are not counted):

- *extraction*: peak growth while shards are computed and written (should not depend on N);
- *whole call*: peak growth over the whole call, including opening the finished entry and checking
  it (this part holds the features themselves, so it grows with N by about the size of the
  features: ``images x dims x features x 2 bytes`` plus transient float32 copies).

For scale, it also prints what keeping every feature row in RAM (float32) would cost.

    python -m benchmarks.perf.bench_memory              # N = 5000 and 20000
    python -m benchmarks.perf.bench_memory --n 2000     # smaller
    python -m benchmarks.perf.bench_memory --quick      # seconds-long smoke test
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

import psutil

MIB = 2**20
ARCH = "vit_small_patch16_224"
# Wide enough (384 dims, every block's features) that holding all rows in RAM would show clearly.
OPTIONS = {"img_size": 64, "patch_size": 16, "embed_dim": 384, "depth": 2, "num_heads": 6}
SAMPLE_SECONDS = 0.005


class RssSampler:
    """Samples this process's RSS (bytes) in a background thread; ``mark()`` stamps phase changes."""

    def __init__(self, interval: float = SAMPLE_SECONDS) -> None:
        self.process, self.interval = psutil.Process(), interval
        self.samples: list[tuple[float, int]] = []
        self.marks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self.process.memory_info().rss))
            time.sleep(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.perf_counter(), self.process.memory_info().rss))

    def mark(self, name: str) -> None:
        self.marks[name] = time.perf_counter()

    def peak(self, until: float | None = None) -> int:
        return max(rss for when, rss in self.samples if until is None or when <= until)


def measure(n: int, size: int, batch_size: int, shard_size: int, workers: int) -> dict:
    """In this process: warm up, then extract ``shapes:n=n:size=size`` and return RSS figures (bytes)."""
    import timm
    import torch

    from benchmarks.features import ExtractionConfig, extract_features, feature_names
    from encoders import load_encoder, save_encoder_checkpoint
    from imagesets import open_split

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        state = timm.create_model(ARCH, pretrained=False, num_classes=0, **OPTIONS).state_dict()
        encoder = load_encoder(save_encoder_checkpoint(state, {"family": "timm", "arch": ARCH, "options": OPTIONS}, Path(tmp, "enc.safetensors")))
        config = ExtractionConfig(batch_size=batch_size, shard_size=shard_size, workers=workers, progress=False)
        quiet = lambda *_: None
        extract_features(encoder, open_split(f"shapes:n={2 * batch_size}:size={size}:seed=1", "train"), Path(tmp, "warm"), layers="all", config=config, log=quiet)
        split = open_split(f"shapes:n={n}:size={size}", "train")
        before = psutil.Process().memory_info().rss
        started = time.perf_counter()
        with RssSampler() as sampler:
            # extract_features logs once, right after the last shard is written.
            features = extract_features(encoder, split, Path(tmp, "cache"), layers="all", config=config, log=lambda *_: sampler.mark("extracted"))
        seconds = time.perf_counter() - started
        dims = sum(array.shape[1] for array in features.arrays.values())
        return {
            "n": n,
            "seconds": seconds,
            "rss_before": before,
            "extraction_peak": sampler.peak(until=sampler.marks["extracted"]),
            "call_peak": sampler.peak(),
            "samples": len(sampler.samples),
            "feature_dims": dims,
            "features": len(feature_names(encoder.resolve_layers("all"))),
            "all_rows_float32": n * dims * 4,
        }


def _child(args: argparse.Namespace, n: int) -> dict:
    command = [sys.executable, "-m", "benchmarks.perf.bench_memory", "--measure", str(n), "--size", str(args.size),
               "--batch-size", str(args.batch_size), "--shard-size", str(args.shard_size), "--workers", str(args.workers)]
    done = subprocess.run(command, check=False, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode != 0:
        raise RuntimeError(f"memory measurement for n={n} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run both sizes in fresh processes, print the table, and return the growths (MiB) and ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000, help="images of the smaller run (the larger has 4x)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (their RSS is not counted)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test (figures not meaningful)")
    parser.add_argument("--measure", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.size, args.batch_size, args.shard_size, args.workers)))
        return {}
    if args.quick:
        args.n, args.size, args.batch_size, args.shard_size = 48, 32, 8, 16

    print(f"model: {ARCH} {OPTIONS} (random init); images {args.size} px; batch {args.batch_size}, shard {args.shard_size} images, "
          f"layers=all; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    runs = [_child(args, args.n), _child(args, 4 * args.n)]
    print(f"\n{'images':>8} {'shards':>7} {'seconds':>8} {'RSS before':>11} {'extraction +':>13} {'whole call +':>13} {'all rows f32':>13}   (MiB)")
    for run in runs:
        shards = -(-run["n"] // args.shard_size)
        print(f"{run['n']:>8} {shards:>7} {run['seconds']:>8.1f} {run['rss_before'] / MIB:>11.1f} "
              f"{(run['extraction_peak'] - run['rss_before']) / MIB:>13.1f} {(run['call_peak'] - run['rss_before']) / MIB:>13.1f} "
              f"{run['all_rows_float32'] / MIB:>13.1f}")
    small, large = runs
    growth = {name: [(run[f"{name}_peak"] - run["rss_before"]) / MIB for run in runs] for name in ("extraction", "call")}
    # A floor of 1 MiB keeps the ratio meaningful when the smaller run barely grows at all.
    ratios = {name: max(values[1], 1.0) / max(values[0], 1.0) for name, values in growth.items()}
    print(f"\npeak RSS growth during extraction, {large['n']} vs {small['n']} images: {growth['extraction'][1]:.1f} vs "
          f"{growth['extraction'][0]:.1f} MiB (ratio {ratios['extraction']:.2f}; 1.0 = flat, 4.0 = grows with the data)")
    print(f"peak RSS growth over the whole call (incl. opening the entry): {growth['call'][1]:.1f} vs {growth['call'][0]:.1f} MiB "
          f"(ratio {ratios['call']:.2f}); keeping all rows as float32 would take {large['all_rows_float32'] / MIB:.1f} vs "
          f"{small['all_rows_float32'] / MIB:.1f} MiB")
    if args.quick:
        print("(--quick: tiny sizes, figures are not meaningful)")
    return {
        "extraction_growth_mib_small": growth["extraction"][0],
        "extraction_growth_mib_large": growth["extraction"][1],
        "extraction_ratio": ratios["extraction"],
        "call_growth_mib_small": growth["call"][0],
        "call_growth_mib_large": growth["call"][1],
        "call_ratio": ratios["call"],
        "seconds_small": small["seconds"],
        "seconds_large": large["seconds"],
    }


if __name__ == "__main__":
    main()
