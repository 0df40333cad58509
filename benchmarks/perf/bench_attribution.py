"""Benchmark: attribution maps at demo size.

1. Grad-CAM (``probes.gradcam.grad_cam``, captum's ``LayerGradCam`` on the encoder's grid) on a batch
   of images in one backward pass vs the obvious alternative, captum called once per image. Both give
   the same maps (checked here); printed: maps/s of each and the ratio.
2. SFT + DPO gradient maps (``probes.gradients.gradient_maps``, both losses, both sites) of an MLLM
   built from the same encoder and a tiny Qwen2 (``train.tiny_lm``): items/s batched vs one item at a
   time, and the ratio.

    python -m benchmarks.perf.bench_attribution            # demo size: 64 px 4-block ViT (embed 96, patch 8)
    python -m benchmarks.perf.bench_attribution --quick    # smoke test; timings mean nothing

Random weights: timings do not depend on what the weights learned. Both run with the suites' thread
setting (``probes.threads.threads_for``: one thread for demo-sized models).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

DEMO_ARCH = "vit_small_patch16_224"
DEMO_OPTIONS = {"img_size": 64, "patch_size": 8, "embed_dim": 96, "depth": 4, "num_heads": 3}
QUICK_OPTIONS = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


def _encoder(options: dict, folder: Path):
    import timm

    from encoders import load_encoder, save_encoder_checkpoint

    torch.manual_seed(0)
    state = timm.create_model(DEMO_ARCH, pretrained=False, num_classes=0, **options).state_dict()
    return load_encoder(save_encoder_checkpoint(state, {"family": "timm", "arch": DEMO_ARCH, "options": options}, folder / "encoder.safetensors"))


def _rate(fn, count: int, repeats: int) -> float:
    """Best-of-``repeats`` items per second of ``fn`` (which handles ``count`` items)."""
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return count / best


def bench_gradcam(encoder, n: int, repeats: int) -> dict:
    from probes.gradcam import grad_cam

    size = encoder.preprocess.resolution
    images = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    weight = torch.randn(encoder.embed_dim, 10, generator=torch.Generator().manual_seed(1))
    targets = torch.arange(n) % 10
    score = lambda pooled: pooled @ weight
    batched = grad_cam(encoder, images, targets, [-1], score)
    single = torch.cat([grad_cam(encoder, images[i : i + 1], targets[i : i + 1], [-1], score)[encoder.num_layers - 1] for i in range(n)])
    max_diff = float((batched[encoder.num_layers - 1] - single).abs().max() / single.abs().max().clamp_min(1e-30))
    rate_batched = _rate(lambda: grad_cam(encoder, images, targets, [-1], score), n, repeats)
    rate_single = _rate(lambda: [grad_cam(encoder, images[i : i + 1], targets[i : i + 1], [-1], score) for i in range(n)], n, repeats)
    return {"batched": rate_batched, "single": rate_single, "ratio": rate_batched / rate_single, "max_rel_diff": max_diff}


def bench_gradients(encoder, folder: Path, n: int, repeats: int, quick: bool) -> dict:
    from probes.gradients import Objectives, gradient_maps
    from train.losses import dpo_loss, sft_loss
    from train.mllm import IMAGE_TOKEN, build_mllm
    from train.tiny_lm import TinyLMConfig, build_tiny_lm

    words = ["What colour is the circle ?", "red green blue yes no", "Is there a star in the image ?"]
    config = TinyLMConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64) if quick else TinyLMConfig()
    mllm = build_mllm(encoder, build_tiny_lm(folder / "lm", words, config, extra_special=[IMAGE_TOKEN])).eval()
    size = encoder.preprocess.resolution
    images = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    questions = ["What colour is the circle?"] * n
    chosen, rejected = ["red"] * n, ["blue"] * n
    objectives = Objectives(sft_loss, dpo_loss)
    rate_batched = _rate(lambda: gradient_maps(mllm, images, questions, chosen, rejected, objectives=objectives), n, repeats)
    rate_single = _rate(lambda: [gradient_maps(mllm, images[i : i + 1], questions[:1], chosen[:1], rejected[:1], objectives=objectives) for i in range(n)], n, repeats)
    return {"batched": rate_batched, "single": rate_single, "ratio": rate_batched / rate_single, "lm": f"Qwen2 hidden {config.hidden_size}, {config.num_hidden_layers} layers"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.perf.bench_attribution", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (a smoke test)")
    parser.add_argument("--images", type=int, default=64, help="images per Grad-CAM batch")
    parser.add_argument("--items", type=int, default=16, help="preference items per gradient-map batch")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    options = QUICK_OPTIONS if args.quick else DEMO_OPTIONS
    n_images, n_items, repeats = (8, 4, 1) if args.quick else (args.images, args.items, args.repeats)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; encoder {DEMO_ARCH} {options}")
    with tempfile.TemporaryDirectory() as tmp:
        encoder = _encoder(options, Path(tmp))
        from probes.threads import threads_for

        with threads_for(encoder):  # the suites' thread setting (one thread for demo-sized models)
            threads = torch.get_num_threads()
            cam = bench_gradcam(encoder, n_images, repeats)
        print(f"Grad-CAM (last block, {n_images} images, {threads} thread(s)): batched {cam['batched']:.1f} maps/s, captum once per image {cam['single']:.1f} maps/s, "
              f"ratio {cam['ratio']:.1f}x (max relative difference of the maps {cam['max_rel_diff']:.1e})")
        with threads_for(encoder):
            grads = bench_gradients(encoder, Path(tmp), n_items, repeats, args.quick)
        print(f"SFT+DPO gradient maps ({grads['lm']}, {n_items} items, 2 losses x 2 sites): batched {grads['batched']:.1f} items/s, "
              f"one item at a time {grads['single']:.1f} items/s, ratio {grads['ratio']:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
