"""Benchmark: MLLM training at demo size, per stage, and DPO with cached vs recomputed reference log-probs.

Builds the demo's models (the 64 px, 4-block ViT and the tiny Qwen2) and shapes-world training files,
then runs each stage in a fresh child process and prints, per stage: optimiser steps, samples/s and
answer tokens/s over the training loop, wall time of the whole stage (loading, reference pass and
export included) and the child's peak resident memory (psutil, sampled every 5 ms, MiB). The last two
rows compare DPO with the reference log-probs computed once before training (default) against a frozen
reference copy run on every batch; the ratio is of stage wall time, the reference pass included.

    python -m benchmarks.perf.bench_train              # 120 images (~660 preference items), 3 epochs per stage
    python -m benchmarks.perf.bench_train --images 40  # quicker
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

MIB = 2**20


def _child(args: argparse.Namespace) -> None:
    from train.config import stage_config
    from train.loop import train_stage

    overrides = json.loads(args.overrides)
    result = train_stage(args.start, args.data, args.out, stage_config(args.stage, **overrides), progress=False, log=lambda message: None)
    print(json.dumps({"samples_per_s": result.summary["samples_per_s"], "tokens_per_s": result.summary["tokens_per_s"], "steps": result.steps}))


def _run_stage(stage: str, start: Path, data: Path, out: Path, overrides: dict) -> dict:
    command = [sys.executable, "-m", "benchmarks.perf.bench_train", "--child", "--stage", stage, "--start", str(start), "--data", str(data), "--out", str(out), "--overrides", json.dumps(overrides)]
    began = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched, peak, done = psutil.Process(process.pid), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                peak[0] = max(peak[0], watched.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    stdout, stderr = process.communicate()
    done.set()
    if process.returncode:
        raise RuntimeError(f"{stage} failed:\n{stderr[-3000:]}")
    return {**json.loads(stdout.strip().splitlines()[-1]), "wall_s": time.perf_counter() - began, "peak_mib": peak[0] / MIB}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.perf.bench_train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("stage", "start", "data", "out", "overrides"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return 0

    import timm
    import torch

    from encoders import save_encoder_checkpoint
    from train.data import write_shapes_data
    from train.demo import LM, STAGES, VIT, _corpus
    from train.mllm import IMAGE_TOKEN, build_mllm, save_mllm
    from train.tiny_lm import build_tiny_lm

    folder = Path(tempfile.mkdtemp(prefix="bench_train_"))
    files = write_shapes_data(f"shapes:n={args.images}:seed=1", "train", folder / "data")
    torch.manual_seed(0)
    vit = timm.create_model(VIT.arch, pretrained=False, num_classes=0, **VIT.options)
    encoder = save_encoder_checkpoint(vit.state_dict(), {"family": "timm", "arch": VIT.arch, "options": VIT.options}, folder / "vit.safetensors")
    lm = build_tiny_lm(folder / "lm", _corpus([files["captions"], files["preferences"]]), LM, extra_special=[IMAGE_TOKEN])
    start = save_mllm(build_mllm(encoder, lm), folder / "mllm0")
    print(f"demo-size models, {args.images} shapes images: {len(files['captions'].read_text().splitlines())} captions, "
          f"{len(files['preferences'].read_text().splitlines())} preference items; {torch.get_num_threads()} threads")
    plan = [
        ("align", files["captions"], {}),
        ("pretrain", files["preferences"], {}),
        ("sft", files["preferences"], {}),
        ("dpo (cached reference)", files["preferences"], {"cache_reference": True}),
        ("dpo (reference every batch)", files["preferences"], {"cache_reference": False}),
    ]
    header = f"{'stage':30s} {'steps':>5s} {'samples/s':>10s} {'tokens/s':>9s} {'wall s':>7s} {'peak MiB':>9s}"
    print(header)
    results = {}
    for name, data, extra in plan:
        stage = name.split()[0]
        config = STAGES[stage].to_dict()
        overrides = {key: config[key] for key in ("lr", "encoder_lr", "epochs", "global_batch", "micro_batch", "beta")}
        overrides.update(save_every=0, epochs=3.0, **extra)  # the study runs 3 epochs: the cached reference pays off per extra epoch
        row = _run_stage(stage, start, data, folder / name.replace(" ", "_").replace("(", "").replace(")", ""), overrides)
        results[name] = row
        print(f"{name:30s} {row['steps']:5d} {row['samples_per_s']:10.1f} {row['tokens_per_s']:9.1f} {row['wall_s']:7.1f} {row['peak_mib']:9.0f}")
    cached, live = results["dpo (cached reference)"], results["dpo (reference every batch)"]
    print(f"\nDPO, reference every batch / cached (stage wall time): {live['wall_s'] / cached['wall_s']:.2f}x; "
          f"training-loop samples/s cached / every batch: {cached['samples_per_s'] / live['samples_per_s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
