"""``python -m benchmarks.run``: encoders -> features -> probes -> result rows -> HTML report.

Examples::

    python -m benchmarks.run --encoder ckpt.pt --suite all
    python -m benchmarks.run --encoder orig.safetensors --encoder pivot.pt --arch vit_base_patch16_siglip_224
    python -m benchmarks.run --encoders lineage.toml --suite cls --data imagenet:root=/data/imagenet --layers -1,-4

Writes ``results.jsonl``, ``results.csv``, ``config.json``, ``run.log``, ``per_item/`` and ``report.html``
to ``--out`` (default ``runs/<timestamp>``). Suites that are not built or do not apply are written as
skipped rows with the reason; any failure makes the exit status non-zero.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import torch

from benchmarks.features import PRECISIONS, ExtractionConfig
from benchmarks.results import STATUS_FAILED, STATUS_SKIPPED, ResultRow, append_rows, environment, package_version, write_csv
from benchmarks.suites import ALL_SUITES, PLANNED, SUITES, RunContext
from benchmarks.suites.base import LoadedEncoder
from benchmarks.loading import FEATURE_SOURCES, load_run_encoder
from benchmarks.validate import (
    UsageError,
    check_arch,
    check_attribution_options,
    check_cache_dir,
    check_data,
    check_device,
    check_encoder_paths,
    check_layers_in_range,
    check_numbers,
    check_out,
    join_negative_values,
    make_dir,
    parse_layers,
    parse_suites,
)
from encoders import CheckpointError, EncoderSpec, ManifestError, load_manifest

DEFAULT_DATA = "shapes:n=2000:seed=0"
DEFAULT_CACHE = Path(os.environ.get("VEE_CACHE", Path.home() / ".cache" / "vision-encoder-eval" / "features"))


@dataclass
class RunConfig:
    """The resolved configuration of a run (written to ``config.json``)."""

    encoders: list[dict]
    suites: list[str]
    data: str = DEFAULT_DATA
    out: str = ""
    cache_dir: str = str(DEFAULT_CACHE)
    device: str = "cpu"
    precision: str = "fp32"
    compile: bool = False
    seed: int = 0
    batch_size: int = 64
    workers: int = 0
    layers: str = ""
    linear_epochs: int = 10
    sklearn: bool = False
    features: str = "encoder"
    verify_data: bool = False
    seg_protocols: str = "patch_probe,fast_linear,mmseg_linear"
    seg_epochs: int = 5
    seg_seeds: int = 3
    seg_head_epochs: int = 20
    seg_iters: int = 40000
    seg_blocks: int = 1
    linear: str = "auto"
    grid_extend: bool = True
    decode: str = "cpu"
    loc_items: int = 500
    loc_layers: str = "-1,-2"
    align_items: int = 1000
    align_lm: str = ""
    grad_items: int = 64
    vqa_tasks: str = ""
    vqa_items: int = 0
    vqa_limit: int = 0
    vqa_results: str = ""
    note: str = ""
    report: bool = True
    version: str = field(default_factory=package_version)

    def config_hash(self) -> str:
        """Hash of everything that can change a number (not the output folder or the note)."""
        relevant = {k: v for k, v in asdict(self).items() if k not in ("out", "note", "report", "cache_dir", "workers", "compile")}
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def encoder_specs(args: argparse.Namespace) -> list[EncoderSpec]:
    """Specs from ``--encoders manifest.toml`` and/or repeated ``--encoder``; the first of the repeated
    ones is the base of the others (role original / candidate) unless a manifest says otherwise."""
    specs: list[EncoderSpec] = []
    if args.encoders:
        specs.extend(load_manifest(args.encoders))
    for position, path in enumerate(args.encoder or []):
        name = Path(path.rstrip("/")).stem
        base = "" if position == 0 else Path(args.encoder[0].rstrip("/")).stem
        specs.append(EncoderSpec(checkpoint=path, name=name, arch=args.arch, role="original" if position == 0 and len(args.encoder) > 1 else ("candidate" if base else ""), base=base, allow_partial=args.allow_partial, allow_resample=args.allow_resample))
    if args.allow_partial or args.allow_resample:
        for spec in specs:  # the flags apply to manifest entries too
            spec.allow_partial = spec.allow_partial or args.allow_partial
            spec.allow_resample = spec.allow_resample or args.allow_resample
    if not specs:
        raise UsageError("no encoder: pass --encoder PATH (repeatable) or --encoders manifest.toml")
    names = [spec.display_name() for spec in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UsageError(f"--encoder: two encoders are named {duplicates}; use a manifest (--encoders) to give them distinct names")
    return specs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", action="append", help="checkpoint file or HF directory (repeatable)")
    parser.add_argument("--encoders", help="lineage manifest (TOML) naming encoders, roles and bases")
    parser.add_argument("--arch", default="", help="architecture for --encoder files that do not embed one, e.g. vit_base_patch16_siglip_224, open_clip:ViT-B-32")
    parser.add_argument("--allow-partial", action="store_true", help="load checkpoints with missing/unexpected keys (recorded in every row)")
    parser.add_argument("--features", default="encoder", choices=FEATURE_SOURCES, help="encoder: the vision tower (default); projector: an MLLM's encoder + projector outputs (--encoder an MLLM directory, or manifest entries with mllm = ...)")
    parser.add_argument("--allow-resample", action="store_true", help="let converters resample position/patch embeddings to the architecture's shape (recorded in every row); without it a shape change is an error")
    parser.add_argument("--suite", action="append", help=f"all (default) or a comma list of {', '.join(ALL_SUITES)}; repeatable (merged)")
    parser.add_argument("--verify-data", action="store_true", help="add a content hash of every image file to the dataset fingerprint (the cache key); default: path, size and modification time")
    parser.add_argument("--data", default=DEFAULT_DATA, help="dataset spec: shapes:n=2000:seed=0, digits, imagenet:root=DIR, ade20k:root=DIR")
    parser.add_argument("--out", default="", help="run directory (default runs/<timestamp>)")
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="feature store (shared across runs; env VEE_CACHE)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="fp32; bf16 (autocast) and bf16-weights on GPUs or AMX/AVX-512-BF16 CPUs; int8-dynamic, an opt-in for trained encoders on other CPUs (see benchmarks/perf/README.md); part of the cache key")
    parser.add_argument("--compile", action="store_true", help="torch.compile the feature call (same numbers, faster on large splits; about a minute to compile)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=min(4, max(0, (os.cpu_count() or 1) - 1)), help="DataLoader workers")
    parser.add_argument("--layers", default="", help="extra blocks to probe: -1,-2,-4 (negative = from the end) or all")
    parser.add_argument("--linear-epochs", type=int, default=10)
    parser.add_argument("--sklearn", action="store_true", help="also run the scikit-learn LogisticRegression reference probe")
    parser.add_argument("--seg-protocols", default="patch_probe,fast_linear,mmseg_linear", help="seg suite protocols (comma list)")
    parser.add_argument("--seg-epochs", type=int, default=5, help="seg: patch-probe epochs (the study: 5)")
    parser.add_argument("--seg-seeds", type=int, default=3, help="seg: patch-probe seeds (mean and std)")
    parser.add_argument("--seg-head-epochs", type=int, default=20, help="seg: epochs of the fast linear head on cached tokens")
    parser.add_argument("--seg-iters", type=int, default=40000, help="seg: mmseg linear-head iterations (the literature: 40k-80k)")
    parser.add_argument("--seg-blocks", type=int, default=1, choices=(1, 4), help="seg: linear heads on the last block's patch map or the last four concatenated")
    parser.add_argument("--decode", default="cpu", choices=("cpu", "gpu"), help="cpu: PIL decode/resize/crop in the workers; gpu: workers read file bytes, torchvision decodes (nvJPEG on CUDA), resizes and crops on --device (image-file datasets only; part of the cache key)")
    parser.add_argument("--linear", default="auto", choices=("auto", "lbfgs", "sgd", "both"), help="cls linear probe: exact L-BFGS logistic regression (task linear), the SGD grid of heads (task linear_sgd), both, or auto: L-BFGS when the features fit the device's memory")
    parser.add_argument("--grid-extend", action=argparse.BooleanOptionalAction, default=True, help="extend the exact probe's C path and the SGD grid one step beyond an edge while the choice sits there (up to 3 steps)")
    parser.add_argument("--loc-items", type=int, default=500, help="loc: images of the eval split to explain (spread evenly; 0 = all)")
    parser.add_argument("--loc-layers", default="-1,-2", help="loc: blocks whose input Grad-CAM explains (default the last and the penultimate)")
    parser.add_argument("--align-items", type=int, default=1000, help="align: image-caption pairs of the eval split (spread evenly; 0 = all)")
    parser.add_argument("--align-lm", default="", help="align: a local transformers causal-LM directory for caption embeddings (default: <mllm>/lm of the lineage's original)")
    parser.add_argument("--grad-items", type=int, default=64, help="grad: preference items about one object to back-propagate (0 = all)")
    parser.add_argument("--vqa-tasks", default="", help="vqa suite: comma list of lmms-eval tasks to run on each encoder's MLLM (default: the 16 Cambrian benchmarks; shapes_vqa,shapes_vqa_mc = the offline shapes-world tasks)")
    parser.add_argument("--vqa-items", type=int, default=200, help="vqa suite: shapes-world VQA items written for shapes_vqa / shapes_vqa_mc")
    parser.add_argument("--vqa-limit", type=int, default=0, help="vqa suite: lmms-eval --limit (documents per task; rows are then marked partial)")
    parser.add_argument("--vqa-results", default="", help="vqa suite: ingest lmms-eval results (a file, or a folder with one subfolder per encoder name) instead of running anything")
    parser.add_argument("--note", default="", help="free text shown in the report (e.g. demo-sized schedules)")
    parser.add_argument("--no-report", action="store_true", help="do not build report.html")
    return parser


class _Log:
    """Print and append to ``run.log``."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        line = f"[{datetime.now().strftime('%H:%M:%S')}] {message}"
        print(line, flush=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def _init_distributed(device: str) -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        if device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return (torch.distributed.get_rank(), world) if world > 1 else (0, 1)


def _failed_rows(spec: EncoderSpec, suites: list[str], data: str, reason: str, config_hash: str, seed: int) -> list[ResultRow]:
    return [ResultRow(encoder=spec.display_name(), role=spec.role, base=spec.base, checkpoint=spec.checkpoint, suite=suite, task="-", dataset=data, metric="-", value=None, status=STATUS_FAILED, reason=reason, config_hash=config_hash, seed=seed) for suite in suites]


def validate(args: argparse.Namespace) -> tuple[list[EncoderSpec], list[str], list[int] | str | None, Path]:
    """Every argument and spec checked before any model is loaded (UsageError: one line, exit 2)."""
    check_encoder_paths(args.encoder or [])
    check_arch(args.arch)
    specs = _specs_or_exit(args)
    suites = parse_suites(args.suite, ALL_SUITES, extra=list(SUITES.names()))
    layers = parse_layers(args.layers)
    check_numbers(args.batch_size, args.workers, args.linear_epochs, args.seed)
    check_attribution_options(args.loc_items, args.loc_layers, args.grad_items, args.align_items, args.align_lm)
    check_device(args.device)
    out = Path(args.out or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S"))
    check_out(out)
    check_cache_dir(Path(args.cache_dir))
    if args.verify_data:
        from benchmarks.datasets.files import set_verify_content

        set_verify_content(True)
    check_data(args.data, ("train", "val") if "cls" in suites else ())
    return specs, suites, layers, out


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 a failed row, 2 a usage error)."""
    args = build_parser().parse_args(join_negative_values(sys.argv[1:] if argv is None else argv))
    try:
        specs, suites, layers, out = validate(args)
        rank, world = _init_distributed(args.device)
        make_dir(out, "--out")
        make_dir(Path(args.cache_dir), "--cache-dir")
        lock = _out_lock(out) if rank == 0 else contextlib.nullcontext()
        with lock:
            return _run(args, specs, suites, layers, out, rank)
    except UsageError as err:
        print(f"benchmarks.run: error: {err}", file=sys.stderr)
        return 2
    finally:
        if args.verify_data:
            from benchmarks.datasets.files import set_verify_content

            set_verify_content(False)


def _out_lock(out: Path):
    """One run per --out at a time: a second one is refused instead of interleaving rows."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(out / ".run.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UsageError(f"--out {out}: another benchmarks.run is writing to this directory (lock {out / '.run.lock'}); wait for it or pass another --out") from None
    held = contextlib.ExitStack()
    held.callback(lock.release)
    return held


def _run(args: argparse.Namespace, specs: list[EncoderSpec], suites: list[str], layers, out: Path, rank: int) -> int:
    log = _Log(out / "run.log", enabled=rank == 0)
    config = RunConfig(
        encoders=[asdict(spec) for spec in specs], suites=suites, data=args.data, out=str(out), cache_dir=args.cache_dir,
        device=args.device, precision=args.precision, compile=args.compile, seed=args.seed, batch_size=args.batch_size, workers=args.workers,
        layers=args.layers, linear_epochs=args.linear_epochs, sklearn=args.sklearn, features=args.features, verify_data=args.verify_data, note=args.note, report=not args.no_report,
        seg_protocols=args.seg_protocols, seg_epochs=args.seg_epochs, seg_seeds=args.seg_seeds, seg_head_epochs=args.seg_head_epochs,
        seg_iters=args.seg_iters, seg_blocks=args.seg_blocks, linear=args.linear, grid_extend=args.grid_extend, decode=args.decode,
        loc_items=args.loc_items, loc_layers=args.loc_layers, align_items=args.align_items, align_lm=args.align_lm, grad_items=args.grad_items,
        vqa_tasks=args.vqa_tasks, vqa_items=args.vqa_items, vqa_limit=args.vqa_limit, vqa_results=args.vqa_results,
    )
    config_hash = config.config_hash()
    torch.manual_seed(args.seed)
    timings: dict[str, float] = {}
    rows: list[ResultRow] = []

    def record(new_rows: list[ResultRow]) -> None:
        """Keep and append at once, so an interrupted run keeps every finished suite's rows."""
        rows.extend(new_rows)
        if rank == 0:
            append_rows(out, new_rows)

    loaded: list[LoadedEncoder] = []
    load_failures: list[ResultRow] = []
    for spec in specs:
        started = time.perf_counter()
        try:
            spec, encoder = load_run_encoder(spec, args.features, device=args.device)
        except CheckpointError as err:
            log(f"FAILED to load {spec.display_name()}: {err}")
            load_failures.extend(_failed_rows(spec, suites, args.data, f"checkpoint: {err}", config_hash, args.seed))
            continue
        timings[f"load {encoder.name}"] = round(time.perf_counter() - started, 3)
        log(f"loaded {encoder.name}: {encoder.family}:{encoder.arch}, {encoder.num_parameters():,} parameters, hash {encoder.weights_hash[:12]}, layout {encoder.remap.summary()}")
        loaded.append(LoadedEncoder(spec, encoder))
    check_layers_in_range(layers, loaded)  # a usage error: the earlier results stay where they are
    if "loc" in suites:
        from probes.gradcam import has_blocks

        blocks = check_attribution_options(args.loc_items, args.loc_layers, args.grad_items, args.align_items, args.align_lm)
        check_layers_in_range(blocks, [item for item in loaded if has_blocks(item.encoder)], "--loc-layers")
    results_path = out / "results.jsonl"
    if rank == 0 and results_path.exists():
        results_path.rename(out / f"results.{int(time.time())}.previous.jsonl")  # one results file per run; keep the old one
    record(load_failures)
    config_dict = {**asdict(config), **environment(), "config_hash": config_hash, "encoders": [{**asdict(l.spec), **l.encoder.describe(), "role": l.spec.role, "base": l.spec.base} for l in loaded] + [e for e in config.encoders if e["name"] not in {l.name for l in loaded}]}
    if rank == 0:
        (out / "config.json").write_text(json.dumps(config_dict, indent=2, sort_keys=True))
    context = RunContext(
        data=args.data, run_dir=out, cache_dir=Path(args.cache_dir),
        extraction=ExtractionConfig(batch_size=args.batch_size, workers=args.workers, precision=args.precision, compile=args.compile, device=args.device, decode=args.decode, progress=rank == 0 and sys.stderr.isatty()),
        seed=args.seed, config_hash=config_hash, layers=layers,
        options={"linear_epochs": args.linear_epochs, "sklearn": args.sklearn, "linear": args.linear, "grid_extend": args.grid_extend,
                 "seg_protocols": args.seg_protocols, "seg_epochs": args.seg_epochs, "seg_seeds": args.seg_seeds, "seg_head_epochs": args.seg_head_epochs,
                 "seg_iters": args.seg_iters, "seg_blocks": args.seg_blocks,
                 "loc_items": args.loc_items, "loc_layers": args.loc_layers, "align_items": args.align_items, "align_lm": args.align_lm, "grad_items": args.grad_items,
                 "vqa_tasks": [t.strip() for t in args.vqa_tasks.split(",") if t.strip()], "vqa_items": args.vqa_items, "vqa_limit": args.vqa_limit, "vqa_results": args.vqa_results}, log=log,
    )
    for suite in suites:
        started = time.perf_counter()
        if suite in PLANNED and suite not in SUITES:
            record([context.row(l, suite=suite, task="-", dataset=args.data, metric="-", value=None, status=STATUS_SKIPPED, reason=PLANNED[suite]) for l in loaded])
            log(f"suite {suite}: skipped ({PLANNED[suite]})")
            continue
        if not loaded:
            continue
        try:
            suite_rows = SUITES.get(suite)(context, loaded)
        except Exception as err:  # a failing suite must not lose the others' results
            log(f"suite {suite} FAILED: {err}\n{traceback.format_exc()}")
            suite_rows = [context.row(l, suite=suite, task="-", dataset=args.data, metric="-", value=None, status=STATUS_FAILED, reason=f"{type(err).__name__}: {err}") for l in loaded]
        record(suite_rows)
        timings[f"suite {suite}"] = round(time.perf_counter() - started, 3)
        log(f"suite {suite}: {len(suite_rows)} rows in {timings[f'suite {suite}']:.1f} s")
    if rank != 0:
        return 0
    write_csv(out)
    config_dict["timings"] = timings
    (out / "config.json").write_text(json.dumps(config_dict, indent=2, sort_keys=True))
    failed = [row for row in rows if row.status == STATUS_FAILED]
    log(f"results: {out / 'results.jsonl'} ({len(rows)} rows, {len(failed)} failed)")
    if not args.no_report:
        from reports.build import build_report

        report = build_report([out], out / "report.html")
        log(f"report: {report.resolve()}")
    return 1 if failed else 0


def _specs_or_exit(args: argparse.Namespace) -> list[EncoderSpec]:
    try:
        return encoder_specs(args)
    except ManifestError as err:
        raise UsageError(f"--encoders: {err}") from None


if __name__ == "__main__":
    sys.exit(main())
