"""Benchmark: images/s of the suite's feature extraction vs. a plain timm forward, on this machine.

For each architecture (random init, nothing downloaded), one run compares:

- **baseline**, the obvious alternative: the timm model's eval forward in fp32 under
  ``torch.inference_mode``, batch 32, fed by a DataLoader (no workers) that renders and transforms
  the images with the encoder's own eval transform. It is timed before and after the suite's
  settings and the two timings are pooled, so a change of machine load during the run hits both sides.
- **suite**: ``benchmarks.features.extract_features`` end to end (rendering, transforms, forward,
  fp16 shards written to a fresh cache) for each candidate setting (precision, torch.compile), after
  a warm-up on a one-image split that prepares the reduced-precision copy / compiles (its time is
  printed as "setup").

The candidate settings follow this machine's measured arithmetic rates (a large matmul in fp32 and
bf16, a dynamic-int8 Linear): the bf16 modes are candidates only where bf16 runs at least as fast as
fp32 (native bf16), ``int8-dynamic`` only on CPU. The forward's FLOPs (one image, counted by
``torch.utils.flop_counter``) turn images/s into GFLOP/s, printed as a fraction of those rates.

Finally a linear probe (``probes.linear.linear_probe``) checks that each candidate precision's top-1
stays within 0.5 points of fp32's: features of scikit-learn's digits (32 px; fitted on train, scored
on the 718 val + test images) from a tiny random-init ViT, with the paired-bootstrap 95% interval of
each difference. Exit status 1 when a precision is outside the tolerance.

    python -m benchmarks.perf.bench_extraction                       # ViT-S/16 and ViT-B/16 at 224, 256 images
    python -m benchmarks.perf.bench_extraction --arch vit_small_patch16_224 --images 128
    python -m benchmarks.perf.bench_extraction --settings fp32+compile int8-dynamic
    python -m benchmarks.perf.bench_extraction --quick               # seconds-long smoke test

On a GPU (``--device cuda``) the run instead times, per architecture (default ViT-B/16 @224 and
SigLIP So400m/14 @384, random init) on ``--data`` (a dataset spec, or a folder of JPEGs; default the
shapes world): **data only** (the suite's DataLoader of uint8 pixels, nothing else), **forward only**
(bf16 weights on random device tensors: the ceiling), **plain timm** fp32 and bf16-autocast end to end
(DataLoader with the float transform in the workers, pinned memory), and each **suite** setting
(``extract_features``; with ``--decode cpu gpu`` for image files), printing each rate as a fraction of
the forward-only rate and as a multiple of plain fp32:

    python -m benchmarks.perf.bench_extraction --device cuda --data /data/jpegs --images 4096 --workers 14 --decode cpu gpu
    python -m benchmarks.perf.bench_extraction --device cpu --quick  # smoke test of the device modes
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from benchmarks.features import PRECISIONS, ExtractionConfig, extract_features
from benchmarks.features.pipeline import TransformedSplit, uint8_transform
from encoders import Encoder, load_encoder, save_encoder_checkpoint
from imagesets import IMAGE_FILES, open_split

ARCHS = ("vit_small_patch16_224", "vit_base_patch16_224")
BASELINE_BATCH = 32
TARGET_RATIO = 3.0
TOP1_TOLERANCE = 0.5  # points
# A tiny ViT for the accuracy check and for --quick.
TINY_ARCH = "vit_small_patch16_224"
TINY_OPTIONS = {"img_size": 32, "patch_size": 16, "embed_dim": 32, "depth": 2, "num_heads": 2}
# Random-init ViT features of the shapes world probe at chance level (its label is the largest
# shape's type), which would make the check vacuous; the digits' are informative (about 60% top-1).
PROBE_OPTIONS = {"img_size": 32, "patch_size": 4, "embed_dim": 96, "depth": 4, "num_heads": 3}
PROBE_DATASET = "digits:size=32"


@dataclass(frozen=True)
class Setting:
    """One way to run the suite's extraction: a feature-store precision, with or without torch.compile."""

    precision: str
    compile: bool = False

    @property
    def label(self) -> str:
        return self.precision + ("+compile" if self.compile else "")

    @classmethod
    def parse(cls, text: str) -> Setting:
        precision, _, suffix = text.partition("+")
        if precision not in PRECISIONS or suffix not in ("", "compile"):
            raise argparse.ArgumentTypeError(f"setting {text!r}: use PRECISION or PRECISION+compile, PRECISION one of {', '.join(PRECISIONS)}")
        return cls(precision, suffix == "compile")


# --------------------------------------------------------------------------------------------------
# This machine's arithmetic rates


def _rate(call, flops: float, budget_s: float) -> float:
    """Peak GFLOP/s of ``call`` (``flops`` per call): its fastest call among those made in about
    ``budget_s`` after one warm-up. The fastest, not the mean, because on a shared machine the
    others' load only ever slows a call down."""
    call()
    fastest, started = float("inf"), time.perf_counter()
    while True:
        begin = time.perf_counter()
        call()
        end = time.perf_counter()
        fastest = min(fastest, end - begin)
        if end - started >= budget_s:
            return flops / fastest / 1e9


def _sized(make_call, budget_s: float) -> float:
    """Rate at a size large enough to be efficient but, for slow (emulated) arithmetic, still quick:
    the side doubles (up to 2048) while one call at the next size would take under a fifth of the budget."""
    side = 512
    while side < 2048:
        call, _ = make_call(side)
        call()
        started = time.perf_counter()
        call()
        if (time.perf_counter() - started) * 8 >= budget_s / 5:
            break
        side *= 2
    call, flops = make_call(side)
    return _rate(call, flops, budget_s)


def matmul_rates(budget_s: float = 2.0, device: str = "cpu") -> dict[str, float]:
    """Peak GFLOP/s (fastest call; 2 * m * n * k per product) of square matmuls in fp32 and bf16, and of a
    dynamic-int8 ``nn.Linear`` (CPU only; activation quantisation included)."""

    def matmul(dtype):
        def make(side: int):
            a = torch.randn(side, side, device=device).to(dtype)
            b = torch.randn(side, side, device=device).to(dtype)
            return (lambda: torch.mm(a, b)), 2.0 * side**3
        return make

    def int8_linear(side: int):
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            layer = quantize_dynamic(torch.nn.Sequential(torch.nn.Linear(side, side)), {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
        x = torch.randn(side, side)
        return (lambda: layer(x)), 2.0 * side**3

    with torch.inference_mode():
        rates = {"fp32": _sized(matmul(torch.float32), budget_s), "bf16": _sized(matmul(torch.bfloat16), budget_s)}
        if torch.device(device).type == "cpu":
            rates["int8"] = _sized(int8_linear, budget_s)
    return rates


def arithmetic_of(setting: Setting) -> str:
    return {"fp32": "fp32", "bf16": "bf16", "bf16-weights": "bf16", "int8-dynamic": "int8"}[setting.precision]


def candidate_settings(rates: dict[str, float], device: str = "cpu", *, compile_candidates: bool = True) -> tuple[list[Setting], list[str]]:
    """The settings worth timing here, and a note per skipped family of settings."""
    settings, notes = [], []
    if rates["bf16"] >= rates["fp32"]:
        settings += [Setting("bf16-weights"), Setting("bf16")]
    else:
        notes.append(f"bf16 modes skipped: a bf16 matmul runs at {rates['bf16']:.1f} GFLOP/s vs {rates['fp32']:.1f} in fp32 "
                     f"here (no native bf16: CPU capability {torch.backends.cpu.get_cpu_capability()})")
    if "int8" in rates:
        settings.append(Setting("int8-dynamic"))
    if compile_candidates:
        settings += [Setting(s.precision, True) for s in settings if s.precision != "bf16"] + [Setting("fp32", True)]
    return settings, notes


def forward_gflops(model: torch.nn.Module, resolution: int) -> float:
    """GFLOP (2 x multiply-adds of matmuls, convolutions, attention) of one image's eval forward."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.zeros(1, 3, resolution, resolution))
    return counter.get_total_flops() / 1e9


# --------------------------------------------------------------------------------------------------
# The two paths


def build_encoder(arch: str, options: dict[str, Any], folder: Path, seed: int = 0) -> Encoder:
    """A random-init timm model saved as a project checkpoint and loaded the suite's way."""
    import timm

    torch.manual_seed(seed)
    state = timm.create_model(arch, pretrained=False, num_classes=0, **options).state_dict()
    path = save_encoder_checkpoint(state, {"family": "timm", "arch": arch, "options": options}, folder / f"{arch}-{seed}.safetensors")
    return load_encoder(path)


def run_baseline(encoder: Encoder, split, batch_size: int = BASELINE_BATCH) -> float:
    """Seconds for the plain fp32 forward of every image, DataLoader rendering and transforms included."""
    dataset = TransformedSplit(split, encoder.preprocess.transform(), encoder.preprocess.resolution, range(len(split)))
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=0)
    model = encoder.model
    with torch.inference_mode():
        model(torch.zeros(2, 3, encoder.preprocess.resolution, encoder.preprocess.resolution))  # one-off kernel setup
        started = time.perf_counter()
        for images, *_ in loader:
            model(images)
        return time.perf_counter() - started


def run_suite(encoder: Encoder, split, setting: Setting, batch_size: int, workers: int, cache: Path) -> tuple[float, float]:
    """(setup seconds, extraction seconds) of ``extract_features`` with ``setting`` into a fresh cache.

    Setup is a warm-up extraction of a one-image split: it makes the reduced-precision copy and
    compiles (for the padded full batch shape), which the timed extraction then reuses."""
    config = ExtractionConfig(batch_size=batch_size, workers=workers, precision=setting.precision, compile=setting.compile, progress=False)
    quiet = lambda *_: None
    started = time.perf_counter()
    warm = open_split(f"shapes:n=1:size={encoder.preprocess.resolution}:seed=99", "train")
    extract_features(encoder, warm, cache / f"warm-{setting.label}", config=config, log=quiet)
    setup = time.perf_counter() - started
    started = time.perf_counter()
    extract_features(encoder, split, cache / setting.label, config=config, log=quiet)
    return setup, time.perf_counter() - started


# --------------------------------------------------------------------------------------------------
# Accuracy of the fast precisions


def probe_check(precisions: list[str], folder: Path, options: dict[str, Any] = PROBE_OPTIONS, spec: str = PROBE_DATASET) -> dict[str, dict[str, Any]]:
    """Linear-probe top-1 (percent) for fp32 and each of ``precisions``, per pooled feature ("cls",
    "mean") of a tiny random-init ViT: fitted on the train split of ``spec``, scored on val + test.

    Each precision gets the whole protocol (its own features, its own hyperparameter selection), as a
    user would run it. Also returned: the paired-bootstrap 95% interval of each difference to fp32."""
    from probes.linear import linear_probe
    from evidence.stats import paired_bootstrap

    encoder = build_encoder(TINY_ARCH, options, folder, seed=1)
    train = open_split(spec, "train")
    evaluation = [open_split(spec, name) for name in ("val", "test")]
    results: dict[str, dict[str, Any]] = {}
    for precision in ["fp32"] + [p for p in dict.fromkeys(precisions) if p != "fp32"]:
        config = ExtractionConfig(batch_size=64, precision=precision, progress=False)
        fit, *parts = (extract_features(encoder, split, folder / "probe", config=config, log=lambda *_: None) for split in [train, *evaluation])
        results[precision] = {}
        for name in ("cls", "mean"):
            eval_x = torch.cat([part.tensor(name) for part in parts])
            eval_y = torch.cat([part.valid_labels() for part in parts])
            outcome = linear_probe(fit.tensor(name), fit.valid_labels(), eval_x, eval_y)
            entry = {"top1": outcome.top1, "correct": outcome.correct, "n_eval": outcome.n_eval}
            if precision != "fp32":
                paired = paired_bootstrap(results["fp32"][name]["correct"], outcome.correct, scale=100.0)
                entry.update(diff=paired.delta, ci=(paired.ci_low, paired.ci_high))
            results[precision][name] = entry
    return results


# --------------------------------------------------------------------------------------------------


def _load() -> str:
    return f"load average {os.getloadavg()[0]:.1f}"


def bench_arch(arch: str, options: dict[str, Any], settings: list[Setting], images: int, batch_size: int, workers: int,
               rates: dict[str, float], folder: Path) -> dict[str, Any]:
    """Time the baseline (twice, pooled) and every setting on ``images`` images for one architecture."""
    encoder = build_encoder(arch, options, folder)
    resolution = encoder.preprocess.resolution
    split = open_split(f"shapes:n={images}:size={resolution}", "train")
    gflop = forward_gflops(encoder.model, resolution)
    print(f"\n== {arch} {options or ''} at {resolution} px: {encoder.num_parameters() / 1e6:.1f} M parameters, "
          f"{gflop:.1f} GFLOP per image; {images} images; {_load()}")
    first = run_baseline(encoder, split)
    print(f"baseline (timm fp32 forward, batch {BASELINE_BATCH}), first run: {images / first:.2f} img/s  [{_load()}]", flush=True)
    suite = {}
    for setting in settings:
        setup, seconds = run_suite(encoder, split, setting, batch_size, workers, folder / arch)
        suite[setting] = (setup, seconds)
        print(f"suite {setting.label:<22} {images / seconds:.2f} img/s (setup {setup:.1f} s)  [{_load()}]", flush=True)
    second = run_baseline(encoder, split)
    print(f"baseline second run: {images / second:.2f} img/s  [{_load()}]")
    baseline = 2 * images / (first + second)

    print(f"\n{'path':<34} {'img/s':>7} {'x base':>7} {'GFLOP/s':>8} {'of its peak':>12} {'of bf16 peak':>13} {'setup s':>8}")
    print(f"{'baseline fp32 (pooled)':<34} {baseline:>7.2f} {1.0:>7.2f} {baseline * gflop:>8.1f} {baseline * gflop / rates['fp32']:>12.1%} "
          f"{baseline * gflop / rates['bf16']:>13.1%} {'':>8}")
    rows = {}
    for setting, (setup, seconds) in suite.items():
        rate = images / seconds
        peak = rates[arithmetic_of(setting)]
        rows[setting.label] = {"img_s": rate, "ratio": rate / baseline, "gflops": rate * gflop, "of_peak": rate * gflop / peak,
                               "of_bf16_peak": rate * gflop / rates["bf16"], "setup_s": setup}
        print(f"{'suite ' + setting.label:<34} {rate:>7.2f} {rate / baseline:>7.2f} {rate * gflop:>8.1f} {rate * gflop / peak:>12.1%} "
              f"{rate * gflop / rates['bf16']:>13.1%} {setup:>8.1f}")
    best = max(rows, key=lambda label: rows[label]["img_s"]) if rows else None
    if best:
        print(f"fastest suite setting: {best}, {rows[best]['ratio']:.2f}x the baseline (target {TARGET_RATIO:.0f}x: "
              f"{'met' if rows[best]['ratio'] >= TARGET_RATIO else 'NOT met'})")
    return {"gflop_per_image": gflop, "baseline_img_s": baseline, "baseline_runs_img_s": (images / first, images / second),
            "settings": rows, "best": best, "best_ratio": rows[best]["ratio"] if best else None}


# --------------------------------------------------------------------------------------------------
# Device modes (--device): where the time goes on a GPU

DEVICE_ARCHS = ("vit_base_patch16_224", "vit_so400m_patch14_siglip_384")


class JpegFolder:
    """Every image file under a folder (recursively, sorted), unlabelled: ``--data /path/to/jpegs``."""

    CAPABILITIES = frozenset({IMAGE_FILES})

    def __init__(self, root: str | Path, limit: int) -> None:
        from imagesets.base import hash_parts, open_rgb
        from imagesets.files import IMAGE_EXTENSIONS

        self.root = Path(root)
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())[:limit]
        if not files:
            raise ValueError(f"--data {root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) under this folder")
        self.files, self._open = files, open_rgb
        self.spec, self.split, self.name = f"folder:{root}", "train", "folder"
        self.classes, self.seg_classes = [], []
        self.labels = np.full(len(files), -1, dtype=np.int64)
        self.fingerprint = hash_parts([f"{p.relative_to(self.root)}\t{p.stat().st_size}" for p in files])

    def __len__(self) -> int:
        return len(self.files)

    def path(self, index: int) -> Path:
        return self.files[index]

    def load_image(self, index: int):
        return self._open(self.files[index])


def _device_split(data: str | None, images: int, resolution: int):
    if data and Path(data).expanduser().is_dir():
        return JpegFolder(Path(data).expanduser(), images)
    split = open_split(data or f"shapes:n={images}:size={resolution}", "train")
    return split


def _timed(fn, device: str) -> float:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    fn()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def bench_device(arch: str, options: dict[str, Any], device: str, data: str | None, images: int, batch_size: int, workers: int,
                 settings: list[Setting], decodes: list[str], folder: Path) -> dict[str, float]:
    """img/s of each mode (see the module docstring) for one architecture on ``device``."""
    encoder = build_encoder(arch, options, folder)
    encoder.model.to(device)
    resolution = encoder.preprocess.resolution
    split = _device_split(data, images, resolution)
    n = len(split)
    print(f"\n== {arch} at {resolution} px on {device}: {encoder.num_parameters() / 1e6:.1f} M parameters; {n} images of {split.spec}; "
          f"batch {batch_size}, {workers} workers; {_load()}", flush=True)
    pin = torch.device(device).type == "cuda"
    rates: dict[str, float] = {}

    def loader(transform):
        dataset = TransformedSplit(split, transform, resolution, range(n))
        return DataLoader(dataset, batch_size=batch_size, num_workers=workers, pin_memory=pin)

    rates["data only (uint8 workers)"] = n / _timed(lambda: [None for _ in loader(uint8_transform(encoder.preprocess))], device)
    model16 = copy.deepcopy(encoder.model).to(torch.bfloat16)
    batch = torch.randn(batch_size, 3, resolution, resolution, device=device, dtype=torch.bfloat16)
    with torch.inference_mode():
        model16(batch)
        steps = max(1, n // batch_size)
        rates["forward only (bf16 weights)"] = steps * batch_size / _timed(lambda: [model16(batch) for _ in range(steps)], device)
    del model16

    def plain(autocast: bool) -> None:
        with torch.inference_mode(), torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=autocast):
            for images_, *_ in loader(encoder.preprocess.transform()):
                encoder.model(images_.to(device, non_blocking=True))

    for label, autocast in (("plain timm fp32", False), ("plain timm bf16 autocast", True)):
        plain(autocast) if n <= batch_size else None  # warm-up of kernels on small runs only costs one pass
        rates[label] = n / _timed(lambda: plain(autocast), device)
    for setting in settings:
        for decode in decodes:
            config = ExtractionConfig(batch_size=batch_size, workers=workers, precision=setting.precision, compile=setting.compile,
                                      device=device, decode=decode, progress=False)
            quiet = lambda *_: None
            extract_features(encoder, _device_split(data, min(n, batch_size), resolution), folder / f"warm-{setting.label}-{decode}", config=config, log=quiet)
            label = f"suite {setting.label}" + (f" decode={decode}" if len(decodes) > 1 or decode != "cpu" else "")
            rates[label] = n / _timed(lambda: extract_features(encoder, split, folder / f"{arch}-{setting.label}-{decode}", config=config, log=quiet), device)
    ceiling, plain32 = rates["forward only (bf16 weights)"], rates["plain timm fp32"]
    print(f"{'mode':<40} {'img/s':>9} {'of forward-only':>16} {'x plain fp32':>13}")
    for label, rate in rates.items():
        print(f"{label:<40} {rate:>9.1f} {rate / ceiling:>16.1%} {rate / plain32:>13.2f}", flush=True)
    return rates


def main_device(args) -> dict[str, Any]:
    settings = args.settings or [Setting("fp32"), Setting("bf16"), Setting("bf16-weights"), Setting("bf16-weights", True)]
    archs = args.arch if args.arch != list(ARCHS) else list(DEVICE_ARCHS)
    options: dict[str, Any] = {}
    if args.quick:
        archs, args.images, args.batch_size, args.workers, options = [TINY_ARCH], 8, 4, 0, TINY_OPTIONS
        settings = args.settings or [Setting("fp32")]
    print(f"torch {torch.__version__}, device {args.device}" + (f" ({torch.cuda.get_device_name(args.device)})" if args.device.startswith("cuda") else "") + f"; {_load()}")
    results: dict[str, Any] = {"archs": {}, "accuracy_ok": True}
    with tempfile.TemporaryDirectory(prefix="bench_extraction_") as tmp:
        for arch in archs:
            results["archs"][arch] = bench_device(arch, options, args.device, args.data, args.images, args.batch_size, args.workers, settings, args.decode, Path(tmp))
    if args.quick:
        print("(--quick: tiny model and few images, timings are not meaningful)")
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the tables, and return its numbers."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", default=list(ARCHS), help="timm architectures (random init)")
    parser.add_argument("--images", type=int, default=256, help="images per timed run")
    parser.add_argument("--batch-size", type=int, default=32, help="the suite's batch size")
    parser.add_argument("--workers", type=int, default=1, help="the suite's DataLoader workers")
    parser.add_argument("--settings", nargs="+", type=Setting.parse, default=None,
                        help="suite settings to time, e.g. fp32+compile int8-dynamic (default: chosen from the measured rates)")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile settings out of the default candidates")
    parser.add_argument("--check-precisions", nargs="*", default=[], choices=PRECISIONS, help="more precisions for the accuracy check")
    parser.add_argument("--quick", action="store_true", help="tiny model and few images for a smoke test (timings meaningless)")
    parser.add_argument("--device", default=None, help="time the device modes on this device (cuda; cpu for a smoke test) instead of the CPU comparison")
    parser.add_argument("--data", default=None, help="with --device: a dataset spec or a folder of JPEGs (default: the shapes world)")
    parser.add_argument("--decode", nargs="+", default=["cpu"], choices=("cpu", "gpu"), help="with --device: the suite's decode modes to time")
    args = parser.parse_args(argv)
    if args.device is not None:
        return main_device(args)
    options: dict[str, Any] = {}
    probe_options, probe_dataset, matmul_budget = PROBE_OPTIONS, PROBE_DATASET, 3.0
    if args.quick:
        args.arch, args.images, args.batch_size, args.workers = [TINY_ARCH], 8, 4, 0
        options, probe_options, probe_dataset, matmul_budget = TINY_OPTIONS, TINY_OPTIONS, "shapes:n=100:size=32", 0.05

    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cores; {_load()}")
    rates = matmul_rates(matmul_budget)
    print("measured rates (GFLOP/s): " + ", ".join(f"{name} {value:.1f}" for name, value in rates.items()) +
          "  (fp32/bf16: square matmul; int8: dynamic-int8 Linear incl. activation quantisation)")
    settings, notes = candidate_settings(rates, compile_candidates=not (args.no_compile or args.quick))
    settings = args.settings or settings
    for note in notes:
        print(note)
    print("suite settings: " + ", ".join(s.label for s in settings) + f"; batch {args.batch_size}, {args.workers} DataLoader worker(s)")

    results: dict[str, Any] = {"rates": rates, "archs": {}}
    with tempfile.TemporaryDirectory(prefix="bench_extraction_") as tmp:
        for arch in args.arch:
            results["archs"][arch] = bench_arch(arch, options, settings, args.images, args.batch_size, args.workers, rates, Path(tmp))
        precisions = [s.precision for s in settings if s.precision != "fp32"] + list(args.check_precisions)
        print(f"\n== accuracy check: linear probe, {probe_dataset} train -> val+test, tiny random-init ViT {probe_options}")
        top1 = probe_check(precisions, Path(tmp), probe_options, probe_dataset)
    ok = True
    for precision, scores in top1.items():
        parts = []
        for name, entry in scores.items():
            text = f"{name} {entry['top1']:.2f}%"
            if "diff" in entry:
                text += f" ({entry['diff']:+.2f}, 95% CI {entry['ci'][0]:+.2f}..{entry['ci'][1]:+.2f})"
            parts.append(text)
        within = all(abs(entry.get("diff", 0.0)) <= TOP1_TOLERANCE for entry in scores.values())
        ok &= within
        verdict = "" if precision == "fp32" else f"  {'within' if within else 'NOT within'} {TOP1_TOLERANCE} points of fp32"
        print(f"{precision:<14} top-1 " + ", ".join(parts) + f" on {next(iter(scores.values()))['n_eval']} images{verdict}")
    for scores in top1.values():
        for entry in scores.values():
            entry.pop("correct")
    results.update(top1=top1, accuracy_ok=ok)
    if args.quick:
        print("(--quick: tiny model and few images, timings are not meaningful)")
    return results


if __name__ == "__main__":
    sys.exit(0 if main()["accuracy_ok"] else 1)
