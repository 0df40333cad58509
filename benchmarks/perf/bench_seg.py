"""Benchmark: segmentation protocols on the same data, each in a fresh child process.

1. The study's patch probe trained on cached patch tokens (the feature store) vs. the same probe
   running the frozen backbone on every step (images rendered, transformed and encoded per batch,
   as a probe without a cache must). Same config, seed and data; printed: wall seconds (cached:
   training alone and with the one-off extraction), the time ratio, and macro patch recall of both
   (equal up to fp16 storage of the tokens). Goal: cached >= 20x faster.
2. The fast linear head (BNHead on cached tokens, no augmentation) vs. the mmsegmentation linear
   head (frozen backbone in the loop, mmseg pipeline with augmentation, sliding-window inference),
   with the same number of image passes: wall seconds to the result (extraction included for the
   fast head, the folder export excluded for mmseg), peak RSS (MiB, ``ru_maxrss`` of the child) and
   the mIoU gap (mmseg minus fast).

    python -m benchmarks.perf.bench_seg               # shapes 800 train / 200 val, 64 px, 4-block ViT (embed 192)
    python -m benchmarks.perf.bench_seg --preset vit-b --parts probe --n 96 --n-val 32 --epochs 2
    python -m benchmarks.perf.bench_seg --quick       # seconds-long smoke test (timings mean nothing)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The patch probe's cost is fixed by the token count and width; what the cache saves is the backbone's
# forward, so the ratio grows with the encoder: "small" is a demo-sized ViT, "vit-b" ViT-B/16 at 224.
PRESETS = {
    "small": ("vit_small_patch16_224", {"img_size": 64, "patch_size": 8, "embed_dim": 192, "depth": 4, "num_heads": 3}),
    "vit-b": ("vit_base_patch16_224", {}),
}


def _setup(work: Path, n: int, n_val: int, preset: str):
    import timm
    import torch

    from encoders import load_encoder, save_encoder_checkpoint
    from imagesets import open_split

    arch, options = PRESETS[preset]
    path = work / f"encoder-{preset}.safetensors"
    if not path.exists():
        torch.manual_seed(0)
        state = timm.create_model(arch, pretrained=False, num_classes=0, **options).state_dict()
        save_encoder_checkpoint(state, {"family": "timm", "arch": arch, "options": options}, path)
    data = f"shapes:n={n}:n_val={n_val}:seed=0:size={options.get('img_size', 224)}"
    return load_encoder(path), open_split(data, "train"), open_split(data, "val")


def _child(args) -> dict:
    import torch

    from benchmarks.features import ExtractionConfig, extract_features, token_grid
    from benchmarks.suites.segmentation import encoder_masks, encoder_patch
    from probes.mmseg_linear import (
        BNHead,  # imported before any clock starts (mmseg takes seconds to import)
    )
    from probes.segmentation import (
        FastHeadConfig,
        PatchProbeConfig,
        cached_tokens,
        fast_linear_head,
        patch_probe,
        patch_targets,
    )

    work = Path(args.work)
    encoder, train, val = _setup(work, args.n, args.n_val, args.preset)
    classes = len(train.seg_classes)
    grid = token_grid(encoder)
    patch = encoder_patch(encoder, grid)
    train_masks, val_masks = encoder_masks(train, encoder, classes), encoder_masks(val, encoder, classes)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    config = ExtractionConfig(batch_size=64, progress=False)
    last = f"tokens.L{encoder.num_layers - 1}"
    started = time.perf_counter()
    out: dict = {}
    if args.child in ("probe-cached", "probe-backbone", "fast"):
        eval_features = extract_features(encoder, val, work / f"cache-{args.child}-{os.getpid()}", config=config, patch_layers=[-1], log=lambda _: None)
        eval_source = cached_tokens(eval_features.arrays[last])
    if args.child == "probe-cached" or args.child == "fast":
        features = extract_features(encoder, train, work / f"cache-{args.child}-{os.getpid()}", config=config, patch_layers=[-1], log=lambda _: None)
        source = cached_tokens(features.arrays[last])
        out["extract_s"] = time.perf_counter() - started
    elif args.child == "probe-backbone":
        transform = encoder.preprocess.transform()

        def source(indices):
            images = torch.stack([transform(train.load_image(int(i))) for i in indices])
            with torch.no_grad():
                return encoder.features(images).patch_tokens

        out["extract_s"] = 0.0
    trained = time.perf_counter()
    if args.child.startswith("probe"):
        probe = PatchProbeConfig(epochs=args.epochs, seeds=1)
        result = patch_probe(source, patch_targets(train_masks, grid, patch, classes), eval_source, patch_targets(val_masks, grid, patch, classes), encoder.embed_dim, probe)
        out["recall"] = result.mean["recall"]
    elif args.child == "fast":
        torch.manual_seed(0)
        head = BNHead(in_channels=encoder.embed_dim, channels=encoder.embed_dim, num_classes=classes, in_index=-1, dropout_ratio=0.0,
                      align_corners=False, loss_decode={"type": "mmseg.CrossEntropyLoss"})
        result = fast_linear_head(head, source, train_masks, eval_source, val_masks, grid, patch, classes, FastHeadConfig(epochs=args.epochs))
        out.update(result.metrics)
    else:  # mmseg
        from imagesets.seg_folder import export_seg_folder
        from probes.mmseg_linear import MMSegConfig, SegFolder, run_mmseg_linear

        folder = SegFolder(export_seg_folder(train, val, work / "folder"), list(train.seg_classes), img_suffix=".png", ade20k=False)
        config = MMSegConfig(iters=max(1, args.epochs * len(train) // 16), log_interval=10**6)
        trained = time.perf_counter()
        result = run_mmseg_linear(encoder, folder, work / "mmseg-work", config)
        out.update(result.metrics, iters=config.iters)
        out["extract_s"] = 0.0
    out["train_s"] = time.perf_counter() - trained
    out["total_s"] = out["extract_s"] + out["train_s"]
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["rss_before_mib"] = baseline
    out["threads"] = torch.get_num_threads()
    return out


def _spawn(child: str, args, work: Path) -> dict:
    command = [sys.executable, "-m", "benchmarks.perf.bench_seg", "--child", child, "--work", str(work), "--n", str(args.n), "--n-val", str(args.n_val),
               "--epochs", str(args.epochs), "--preset", args.preset]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{child} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.perf.bench_seg", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=800)
    parser.add_argument("--n-val", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS), help="encoder: small (64 px, 4 blocks, embed 192) or vit-b (ViT-B/16 at 224)")
    parser.add_argument("--parts", default="probe,heads", help="probe (cached vs backbone per step), heads (fast vs mmseg), or both")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--work", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.n_val, args.epochs = 48, 16, 1
    if args.child:
        print(json.dumps(_child(args)))
        return 0
    parts = set(args.parts.split(","))
    children = (["probe-cached", "probe-backbone"] if "probe" in parts else []) + (["fast", "mmseg"] if "heads" in parts else [])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _spawn(children[0], args, work)  # writes the checkpoint and warms the disk cache; re-measured below
        results = {child: _spawn(child, args, work) for child in children}
    print(f"shapes {args.n} train / {args.n_val} val, {args.preset}: {PRESETS[args.preset]}, {args.epochs} epochs")
    if "probe" in parts:
        cached, backbone = results["probe-cached"], results["probe-backbone"]
        print("\npatch probe (1 seed)       train s   +extract s   recall %")
        print(f"  cached tokens           {cached['train_s']:8.1f}   {cached['total_s']:10.1f}   {cached['recall']:7.2f}")
        print(f"  backbone every step     {backbone['train_s']:8.1f}   {'-':>10}   {backbone['recall']:7.2f}")
        print(f"  ratio backbone / cached: {backbone['train_s'] / cached['train_s']:.1f}x (training), {backbone['train_s'] / cached['total_s']:.1f}x (with extraction)")
    if "heads" in parts:
        fast, mmseg = results["fast"], results["mmseg"]
        print("\nlinear head                total s   peak RSS MiB   mIoU    mAcc    aAcc")
        for name, r in (("fast (cached tokens)", fast), (f"mmseg ({mmseg['iters']} iters)", mmseg)):
            print(f"  {name:24s} {r['total_s']:7.1f}   {r['peak_rss_mib']:12.0f}   {r['mIoU']:5.2f}   {r['mAcc']:5.2f}   {r['aAcc']:5.2f}")
        print(f"  time ratio mmseg / fast: {mmseg['total_s'] / fast['total_s']:.1f}x; mIoU gap (mmseg - fast): {mmseg['mIoU'] - fast['mIoU']:+.2f}")
    print("\n" + json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
