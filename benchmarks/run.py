"""``python -m benchmarks.run``: encoders -> features -> probes -> result rows -> HTML report.

Examples::

    python -m benchmarks.run --encoder ckpt.pt --suite all
    python -m benchmarks.run --encoder orig.safetensors --encoder pivot.pt --arch vit_base_patch16_siglip_224
    python -m benchmarks.run --encoders lineage.toml --suite cls --data imagenet:root=/data/imagenet --layers -1,-4
    python -m benchmarks.run --encoders lineage.toml --data cls=imagenet:root=/d/in --data seg=ade20k:root=/d/ade
    python -m benchmarks.run --encoders lineage.toml --plan plans/pivot-study.toml --set imagenet_root=/d/in
    python -m benchmarks.run --plan runs/X/config.json --out runs/X-again      # the same run, again

Every suite has its own dataset (``--data SPEC`` for all, ``--data SUITE=SPEC`` for one) and typed
options (the flags below, or a ``[suite]`` table of a ``--plan`` file). Everything is checked before any
model loads: every value given (a suite's flags too when it does not run; they are named on stderr), and
every split a suite reads is opened (files, records, thresholds). A bad value, or a suite named with
``--suite`` whose dataset lacks what it needs or fails to open, is a user error: one line and its fix,
exit 2; under ``--suite all`` such a suite writes skipped rows with the reason.

Writes ``results.jsonl``, ``results.csv``, ``config.json`` (with the resolved plan), ``run.log``,
``per_item/`` and ``report.html`` to ``--out`` (default ``runs/<timestamp>``). Any failed row makes
the exit status 1; a suite stopped by a user error found while it runs (e.g. too many unreadable images)
makes it 2, after the other suites' results are written.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import torch

from benchmarks.features import ExtractionConfig, FeatureError
from benchmarks.loading import load_run_encoder
from benchmarks.plan import PLAN_KEY, Inputs, Plan, PlanFile, add_plan_flags, all_options, check_requirements, resolve
from benchmarks.results import STATUS_FAILED, STATUS_SKIPPED, ResultRow, append_rows, environment, write_csv
from benchmarks.suites import LoadedEncoder, RunContext
from benchmarks.validate import UsageError, check_arch, check_cache_dir, check_device, check_encoder_paths, check_out, make_dir
from common.errors import UserError
from common.options import join_negative_values, negative_value_flags
from encoders import CheckpointError, EncoderSpec, ManifestError, load_manifest
from imagesets.files import set_verify_content

# What the user can fix, found while a suite runs: one line in the log and on stderr, no traceback.
# FeatureError (too many unreadable images, NaN features) comes from benchmarks.features.
USER_ERRORS = (UserError, FeatureError)


def build_parser() -> argparse.ArgumentParser:
    """The command line: generated from the inputs, the common settings and every suite's options."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_plan_flags(parser)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(join_negative_values(argv, negative_value_flags(all_options())))


def encoder_specs(inputs: Inputs, plan_file: PlanFile | None) -> list[EncoderSpec]:
    """Specs from ``--encoders manifest.toml`` and/or repeated ``--encoder`` (the first of the repeated
    ones is the base of the others: role original / candidate), else from the plan file (its
    ``encoders`` manifest, relative to the plan, or the ``encoder_specs`` a run recorded)."""
    specs: list[EncoderSpec] = []
    if inputs.encoders:
        specs.extend(load_manifest(inputs.encoders))
    for position, path in enumerate(inputs.encoder):
        name = Path(path.rstrip("/")).stem
        base = "" if position == 0 else Path(inputs.encoder[0].rstrip("/")).stem
        role = "original" if position == 0 and len(inputs.encoder) > 1 else ("candidate" if base else "")
        specs.append(EncoderSpec(checkpoint=path, name=name, arch=inputs.arch, role=role, base=base))
    if not specs and plan_file is not None:
        specs = _plan_encoders(plan_file)
    for spec in specs:  # the flags apply to manifest entries too
        spec.allow_partial = spec.allow_partial or inputs.allow_partial
        spec.allow_resample = spec.allow_resample or inputs.allow_resample
    if not specs:
        raise UsageError("no encoder: pass --encoder PATH (repeatable) or --encoders manifest.toml")
    names = [spec.display_name() for spec in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UsageError(f"--encoder: two encoders are named {duplicates}; use a manifest (--encoders) to give them distinct names")
    return specs


def _plan_encoders(plan_file: PlanFile) -> list[EncoderSpec]:
    document = plan_file.document
    if "encoders" in document:
        manifest = Path(plan_file.expand(document["encoders"], "encoders"))
        return load_manifest(manifest if manifest.is_absolute() else Path(plan_file.path).parent / manifest)
    recorded = document.get("encoder_specs") or []
    try:
        return [EncoderSpec(**entry) for entry in recorded]
    except TypeError as err:
        raise UsageError(f"--plan {plan_file.path}: encoder_specs are not encoder specs ({err}); pass --encoder or --encoders") from None


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


def validate(namespace: argparse.Namespace) -> tuple[Plan, Path]:
    """The plan, every value, file and suite requirement checked and every suite's data opened before
    any model is loaded (a UserError: one line and its fix, exit 2). Values given for suites that do not
    run are named on stderr, one line each."""
    inputs, plan, plan_file = resolve(namespace)
    for notice in plan.notices:
        print(f"benchmarks.run: warning: {notice}", file=sys.stderr)
    check_encoder_paths(inputs.encoder)
    check_arch(inputs.arch)
    try:
        plan.encoder_specs = encoder_specs(inputs, plan_file)
    except ManifestError as err:
        raise UsageError(f"--encoders: {err}") from None
    check_device(plan.settings.device)
    out = Path(plan.settings.out or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S"))
    check_out(out)
    check_cache_dir(Path(plan.settings.cache_dir))
    set_verify_content(plan.settings.verify_data)  # the splits opened now carry the fingerprints the run's cache keys use
    check_requirements(plan)
    return plan, out


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 a failed row, 2 a usage error)."""
    namespace = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        plan, out = validate(namespace)
        rank, _ = _init_distributed(plan.settings.device)
        make_dir(out, "--out")
        make_dir(Path(plan.settings.cache_dir), "--cache-dir")
        lock = _out_lock(out) if rank == 0 else contextlib.nullcontext()
        with lock:
            return _run(plan, out, rank)
    except UserError as err:
        print(f"benchmarks.run: error: {err}", file=sys.stderr)
        return 2
    finally:
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


def _row(spec: EncoderSpec, plan: Plan, suite: str, **fields) -> ResultRow:
    """A row of an encoder that did not load (no weights hash)."""
    item = plan.suite(suite)
    return ResultRow(encoder=spec.display_name(), role=spec.role, base=spec.base, checkpoint=spec.checkpoint, suite=suite, task="-",
                     dataset=item.data if item else "", metric="-", value=None, config_hash=plan.config_hash(suite), seed=plan.settings.seed, **fields)


def _config(plan: Plan, out: Path, loaded: list[LoadedEncoder]) -> dict:
    """config.json: the resolved plan (``--plan`` reads it back), each suite's dataset, config hash,
    headlines and variant fields (the report reads them), the encoders' provenance, the environment."""
    names = {item.name for item in loaded}
    return {
        PLAN_KEY: plan.to_dict(), "out": str(out), "note": plan.settings.note, **environment(),
        "suites": {item.name: {"data": item.data, "config_hash": plan.config_hash(item.name), "headline": [list(h) for h in item.spec.headline],
                               "control_headline": [list(h) for h in item.spec.control_headline],
                               "variant_fields": list(item.spec.variant_fields), "skipped": item.unmet} for item in plan.suites},
        "encoders": [{**l.spec.record(), **l.encoder.describe(), "role": l.spec.role, "base": l.spec.base} for l in loaded]
        + [spec.record() for spec in plan.encoder_specs if spec.display_name() not in names],
    }


@dataclass
class _Results:
    """The rows of the run so far, appended to ``results.jsonl`` as they come (rank 0), so an interrupted
    run keeps every finished suite's rows; and the user errors that stopped a suite."""

    out: Path
    rank: int
    rows: list[ResultRow] = field(default_factory=list)
    user_errors: list[str] = field(default_factory=list)

    def record(self, new_rows: list[ResultRow]) -> None:
        self.rows.extend(new_rows)
        if self.rank == 0:
            append_rows(self.out, new_rows)


def _run(plan: Plan, out: Path, rank: int) -> int:
    settings = plan.settings
    log = _Log(out / "run.log", enabled=rank == 0)
    torch.manual_seed(settings.seed)
    timings: dict[str, float] = {}
    loaded, load_failures = _load_encoders(plan, log, timings)
    for item in plan.suites:  # usage errors found once loaded: the earlier results stay where they are
        if not item.unmet and item.spec.check_loaded is not None:
            problem = item.spec.check_loaded(item.options, loaded)
            if problem:
                raise UsageError(problem)
    results_path = out / "results.jsonl"
    if rank == 0 and results_path.exists():
        results_path.rename(out / f"results.{int(time.time())}.previous.jsonl")  # one results file per run; keep the old one
    results = _Results(out, rank)
    results.record(load_failures)
    config = _config(plan, out, loaded)
    if rank == 0:
        (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    _run_suites(plan, _base_context(plan, out, rank, log), loaded, results, timings)
    if rank != 0:
        return 0
    return _finish(plan, out, results, config, timings, log)


def _load_encoders(plan: Plan, log: _Log, timings: dict[str, float]) -> tuple[list[LoadedEncoder], list[ResultRow]]:
    """The encoders that load, and a failed row per suite for each one that does not (its checkpoint error)."""
    loaded: list[LoadedEncoder] = []
    failures: list[ResultRow] = []
    for spec in plan.encoder_specs:
        started = time.perf_counter()
        try:
            spec, encoder = load_run_encoder(spec, plan.settings.features, device=plan.settings.device)
        except CheckpointError as err:
            log(f"FAILED to load {spec.display_name()}: {err}")
            failures.extend(_row(spec, plan, item.name, status=STATUS_FAILED, reason=f"checkpoint: {err}") for item in plan.suites)
            continue
        timings[f"load {encoder.name}"] = round(time.perf_counter() - started, 3)
        log(f"loaded {encoder.name}: {encoder.family}:{encoder.arch}, {encoder.num_parameters():,} parameters, hash {encoder.weights_hash[:12]}, layout {encoder.remap.summary()}")
        loaded.append(LoadedEncoder(spec, encoder))
    return loaded, failures


def _base_context(plan: Plan, out: Path, rank: int, log: _Log) -> RunContext:
    """What every suite's context shares: where to write and cache, the extraction settings, the seed, the
    suites' options and the splits opened before loading."""
    settings = plan.settings
    extraction = ExtractionConfig(batch_size=settings.batch_size, workers=settings.workers, precision=settings.precision, compile=settings.compile,
                                  device=settings.device, decode=settings.decode, progress=rank == 0 and sys.stderr.isatty())
    return RunContext(data="", run_dir=out, cache_dir=Path(settings.cache_dir), extraction=extraction, seed=settings.seed,
                      log=log, options_of=plan.options_of, opened=plan.opened)


def _run_suites(plan: Plan, base: RunContext, loaded: list[LoadedEncoder], results: _Results, timings: dict[str, float]) -> None:
    """Every suite in order; one that cannot run writes skipped rows, one that fails a failed row (a user
    error as one line, a bug with its traceback), and the others go on."""
    log = base.log
    for item in plan.suites:
        started = time.perf_counter()
        context = replace(base, suite=item.name, data=item.data, options=item.options, config_hash=plan.config_hash(item.name), variant_fields=item.spec.variant_fields,
                          uses=item.spec.uses)
        if item.unmet:
            results.record([context.skipped(l, item.unmet) for l in loaded])
            log(f"suite {item.name}: skipped ({item.unmet})")
            continue
        if not loaded:
            continue
        try:
            suite_rows = item.spec.run(context, loaded)
        except USER_ERRORS as err:  # the user's to fix: one line, and the other suites' results are kept
            reason = err.one_line() if isinstance(err, UserError) else str(err)
            log(f"suite {item.name} FAILED: {reason}")
            results.user_errors.append(f"suite {item.name}: {err}")
            suite_rows = [context.row(l, suite=item.name, task="-", dataset=item.data, metric="-", value=None, status=STATUS_FAILED, reason=reason) for l in loaded]
        except Exception as err:  # a bug: its traceback, and the other suites' results are kept
            log(f"suite {item.name} FAILED: {err}\n{traceback.format_exc()}")
            suite_rows = [context.row(l, suite=item.name, task="-", dataset=item.data, metric="-", value=None, status=STATUS_FAILED, reason=f"{type(err).__name__}: {err}") for l in loaded]
        results.record(suite_rows)
        timings[f"suite {item.name}"] = round(time.perf_counter() - started, 3)
        log(f"suite {item.name}: {len(suite_rows)} rows in {timings[f'suite {item.name}']:.1f} s")


def _finish(plan: Plan, out: Path, results: _Results, config: dict, timings: dict[str, float], log: _Log) -> int:
    """results.csv, the timings in config.json, the report; the exit status: 2 when a suite stopped on a
    user error (each printed on stderr), else 1 when a row failed, else 0."""
    write_csv(out)
    config["timings"] = timings
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    failed = [row for row in results.rows if row.status == STATUS_FAILED]
    skipped = sum(row.status == STATUS_SKIPPED for row in results.rows)
    log(f"results: {out / 'results.jsonl'} ({len(results.rows)} rows, {len(failed)} failed, {skipped} skipped)")
    if plan.settings.report:
        from reports.build import build_report

        report = build_report([out], out / "report.html")
        log(f"report: {report.resolve()}")
    for error in results.user_errors:
        print(f"benchmarks.run: error: {error}", file=sys.stderr)
    return 2 if results.user_errors else 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
