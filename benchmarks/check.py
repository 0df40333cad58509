"""Regression gate: compare one encoder's results in a run directory with a stored baseline.

    python -m benchmarks.check --results RUN_DIR --baseline baseline.json
        [--encoder NAME] [--tolerance METRIC=ABS ...]
    python -m benchmarks.check --results RUN_DIR --write-baseline baseline.json [--encoder NAME]

Exit status: 0 = no regression; 1 = at least one REGRESSION, MISSING, SKIPPED or FAILED entry;
2 = usage error (bad path, a directory where a file is expected, unreadable baseline, ambiguous encoder,
an encoder whose rows carry different weights hashes, malformed --tolerance, a --tolerance for a metric the
baseline lacks, --write-baseline of a run with NaN/Inf values).

Which encoder: ``--encoder NAME``; without it, the run's only encoder; when the run holds several,
the one the baseline was written from if it is among them, else a usage error listing them.

Entries are matched by a row's identity, ``ResultRow.identity`` = (suite, task, dataset, metric, variant),
the same identity the report uses; the variant holds the ``extra`` fields its suite declares (e.g.
``layer=6, pooling=mean``; ``protocol=pivot-eval`` for the VQA of PIVOT's fresh MLLMs), so per-layer rows
of one metric, or a fresh MLLM's and a lineage MLLM's VQA score, never stand for each other.

Verdict of one baseline entry, with ``drop`` = how much worse the new value is (``base - new`` when
higher is better, ``new - base`` otherwise) and ``tol`` = ``--tolerance`` for the metric name (default 0,
``*=ABS`` sets the default):

* ``REGRESSION`` when ``drop > tol`` *and* the drop is outside the statistical noise: the baseline
  value lies outside the new row's 95% CI (new ``ci_high < base`` when higher is better, new
  ``ci_low > base`` otherwise); when the new row has no CI, the new value lies outside the
  baseline's CI; when neither has a CI, ``drop > tol`` alone decides. Rationale: tolerance covers
  known run-to-run jitter, the CI covers sampling noise of the evaluation set; a real regression
  must exceed both.
* ``improved`` when the new value is better by more than ``tol``; ``ok`` otherwise (a drop inside the
  tolerance or the CI is ``ok``, with the reason printed).
* ``FAILED`` also when the new value or the baseline value is NaN or Inf (a NaN compares false with
  everything, so it would otherwise pass as ``ok``); the detail names the metric.
* ``MISSING`` when the new run has no row for the entry; ``SKIPPED`` / ``FAILED`` when its row has
  that status (or no value). All three fail the gate: a metric that silently stopped being
  computed is the regression this gate exists to catch.

Rows in the run that the baseline does not have are listed as ``new`` and do not fail the gate.

Baseline file (JSON, written by ``--write-baseline``)::

    {
      "format": "vision-encoder-eval/baseline",
      "format_version": 1,
      "created": "2026-01-01T00:00:00+00:00",   # UTC, ISO 8601
      "source": "runs/ci",                      # the run directory it was written from
      "encoder": "vit-pivot",                   # the encoder whose rows these are
      "weights_hash": "sha256-...",
      "entries": [
        {"suite": "cls", "task": "linear", "dataset": "imagenet-tiny", "metric": "top1",
         "variant": "pooling=mean", "value": 65.75, "ci_low": 61.0, "ci_high": 70.25,
         "higher_is_better": true, "n": 400, "encoder": "vit-pivot", "weights_hash": "sha256-...",
         "dataset_fingerprint": "...", "version": "0.1.0"}
      ]
    }

Only ok rows with a value become entries. Values are in the rows' units (accuracies in percent).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from benchmarks.results import RESULTS_FILE, STATUS_OK, STATUS_SKIPPED, ResultRow, read_rows
from common.errors import UsageError  # a problem with the command line or its files: main() prints it and exits 2

BASELINE_FORMAT = "vision-encoder-eval/baseline"
BASELINE_VERSION = 1

OK = "ok"
IMPROVED = "improved"
REGRESSION = "REGRESSION"
MISSING = "MISSING"
SKIPPED = "SKIPPED"
FAILED = "FAILED"
NEW = "new"
FAILING = (REGRESSION, MISSING, SKIPPED, FAILED)

EntryKey = tuple[str, str, str, str, str]


def entry_key(entry: dict[str, Any]) -> EntryKey:
    return (entry["suite"], entry["task"], entry["dataset"], entry["metric"], entry.get("variant", ""))


@dataclass
class Comparison:
    key: EntryKey
    base: float | None
    new: float | None
    delta: float | None
    verdict: str
    detail: str = ""


# ---------------------------------------------------------------- loading


def load_run_rows(results: Path) -> list[ResultRow]:
    """Rows of a run directory (or results.jsonl); UsageError naming the path and the fix when absent."""
    path = results / RESULTS_FILE if results.is_dir() else results
    if path.is_dir():
        raise UsageError(f"{path}: is a directory, not a results file; pass --results the run directory that holds {RESULTS_FILE}")
    if not path.is_file():
        raise UsageError(
            f"{path}: no results file. Pass --results a run directory written by "
            f"`python -m benchmarks.run --out DIR` (it holds {RESULTS_FILE})."
        )
    try:
        return read_rows(path)
    except ValueError as err:
        raise UsageError(str(err)) from err


def load_baseline(path: Path) -> dict[str, Any]:
    """Read and validate a baseline file; UsageError naming the file and the fix when it is absent or malformed."""
    if path.is_dir():
        raise UsageError(f"{path}: is a directory, not a baseline file; pass --baseline the baseline's file path (e.g. {path / 'baseline.json'})")
    if not path.is_file():
        raise UsageError(
            f"{path}: baseline file not found. Create it from a trusted run with "
            f"`python -m benchmarks.check --results RUN_DIR --write-baseline {path}`."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UsageError(f"{path}: not readable as JSON ({err}); rewrite it with --write-baseline") from err
    if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT:
        raise UsageError(f"{path}: not a baseline file (expected \"format\": \"{BASELINE_FORMAT}\"); rewrite it with --write-baseline")
    if data.get("format_version") != BASELINE_VERSION:
        raise UsageError(f"{path}: baseline format_version {data.get('format_version')!r}, this tool reads {BASELINE_VERSION}")
    entries = data.get("entries")
    required = ("suite", "task", "dataset", "metric", "value", "higher_is_better")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and all(k in e for k in required) for e in entries):
        raise UsageError(f"{path}: \"entries\" must be a list of objects with {', '.join(required)}")
    return data


def select_encoder(rows: list[ResultRow], requested: str | None, baseline_encoder: str | None, source: Path) -> str:
    """The encoder to check (see module docstring); UsageError listing the run's encoders when ambiguous."""
    names = list(dict.fromkeys(row.encoder for row in rows))
    if not names:
        raise UsageError(f"{source}: the run has no result rows")
    listing = ", ".join(repr(name) for name in names)
    if requested is not None:
        if requested not in names:
            raise UsageError(f"{source}: no encoder {requested!r} in this run; it has: {listing}")
        return requested
    if len(names) == 1:
        return names[0]
    if baseline_encoder in names:
        return baseline_encoder
    raise UsageError(f"{source}: the run has {len(names)} encoders ({listing}); choose one with --encoder NAME")


def parse_tolerances(items: Sequence[str]) -> dict[str, float]:
    """``["top1=0.5", "*=0.1"]`` -> ``{"top1": 0.5, "*": 0.1}``; UsageError on a malformed item."""
    tolerances: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or not name.strip() or not math.isfinite(number) or number < 0:
            raise UsageError(f"--tolerance {item!r}: expected METRIC=ABS with ABS a number >= 0, e.g. top1=0.5 or *=0.1")
        tolerances[name.strip()] = number
    return tolerances


# ---------------------------------------------------------------- baseline


def make_baseline(rows: list[ResultRow], encoder: str, source: Path) -> dict[str, Any]:
    """A baseline document from the ok rows of one encoder."""
    entries = []
    hashes = []
    for row in rows:
        if row.encoder != encoder or row.status != STATUS_OK or row.value is None:
            continue
        if row.weights_hash and row.weights_hash not in hashes:
            hashes.append(row.weights_hash)
        suite, task, dataset, metric, variant = row.identity
        entries.append({
            "suite": suite, "task": task, "dataset": dataset, "metric": metric, "variant": variant,
            "value": row.value, "ci_low": row.ci_low, "ci_high": row.ci_high,
            "higher_is_better": bool(row.higher_is_better), "n": row.n,
            "encoder": row.encoder, "weights_hash": row.weights_hash,
            "dataset_fingerprint": row.dataset_fingerprint, "version": row.version,
        })
    # Later rows win, as when the run was resumed and a metric recomputed.
    unique = {entry_key(entry): entry for entry in entries}
    return {
        "format": BASELINE_FORMAT,
        "format_version": BASELINE_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": str(source),
        "encoder": encoder,
        "weights_hash": ", ".join(hashes),
        "entries": sorted(unique.values(), key=entry_key),
    }


def non_finite_entries(document: dict[str, Any]) -> list[str]:
    """``suite/task/dataset/metric [variant]`` of entries whose value or CI bound is NaN or Inf."""
    bad = []
    for entry in document["entries"]:
        if not _finite(entry["value"]) or any(entry.get(k) is not None and not _finite(entry[k]) for k in ("ci_low", "ci_high")):
            suite, task, dataset, metric, variant = entry_key(entry)
            bad.append("/".join((suite, task, dataset, metric)) + (f" [{variant}]" if variant else "") + f" = {entry['value']!r}")
    return bad


def check_tolerances(tolerances: dict[str, float], baseline: dict[str, Any], path: Path) -> None:
    """UsageError for a ``--tolerance`` naming a metric the baseline does not have (a typo would
    otherwise silently leave the real metric at tolerance 0)."""
    metrics = sorted({str(entry["metric"]) for entry in baseline["entries"]})
    unknown = sorted(name for name in tolerances if name != "*" and name not in metrics)
    if unknown:
        raise UsageError(f"--tolerance for {', '.join(map(repr, unknown))}: no such metric in baseline {path}; its metrics are: {', '.join(metrics)} (or use *=ABS)")


def write_baseline(document: dict[str, Any], path: Path) -> None:
    """Write ``document`` to ``path`` atomically (temp file + rename); a directory is a UsageError, and a
    failed write leaves no temp file behind."""
    if path.is_dir():
        raise UsageError(f"{path}: is a directory; pass --write-baseline a file path (e.g. {path / 'baseline.json'})")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    try:
        temporary.write_text(json.dumps(document, indent=2, sort_keys=False, allow_nan=False) + "\n", encoding="utf-8")
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


def check_one_weights(rows: list[ResultRow], encoder: str, source: Path) -> None:
    """UsageError when the rows of ``encoder`` carry different weights hashes: the results file mixes runs
    of different checkpoints under one name, and comparing them as one encoder would merge them silently."""
    hashes = list(dict.fromkeys(row.weights_hash for row in rows if row.encoder == encoder and row.weights_hash))
    if len(hashes) > 1:
        raise UsageError(
            f"{source}: encoder {encoder!r} has rows from {len(hashes)} different weights (hashes {', '.join(h[:19] for h in hashes)}); "
            f"the results file mixes runs of different checkpoints under one name: rerun into a fresh --out, or give the encoders distinct names"
        )


# ---------------------------------------------------------------- comparison


def _outside_noise(entry: dict[str, Any], row: ResultRow, higher: bool) -> tuple[bool, str]:
    """Whether a drop from the baseline to ``row`` is outside the 95% CIs (see module docstring)."""
    base = float(entry["value"])
    if _finite(row.ci_low) and _finite(row.ci_high):
        outside = row.ci_high < base if higher else row.ci_low > base
        return outside, f"new 95% CI [{row.ci_low:.4g}, {row.ci_high:.4g}] {'excludes' if outside else 'contains'} base"
    base_low, base_high = entry.get("ci_low"), entry.get("ci_high")
    if _finite(base_low) and _finite(base_high):
        new = float(row.value)
        outside = new < base_low if higher else new > base_high
        return outside, f"new value {'outside' if outside else 'inside'} base 95% CI [{base_low:.4g}, {base_high:.4g}]"
    return True, "no CI"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def compare_entry(entry: dict[str, Any], row: ResultRow | None, tolerance: float) -> Comparison:
    """Verdict for one baseline entry against the run's row for it (None when absent)."""
    key = entry_key(entry)
    if not _finite(entry["value"]):
        # A NaN baseline compares False with everything: it would pass any new value.
        return Comparison(key, None, None if row is None or not _finite(row.value) else float(row.value), None, FAILED,
                          f"baseline value of {entry['metric']!r} is {entry['value']!r}, not a finite number; rewrite the baseline from a trusted run (--write-baseline)")
    base = float(entry["value"])
    if row is None:
        return Comparison(key, base, None, None, MISSING, "no row in the new run")
    if row.status == STATUS_SKIPPED:
        return Comparison(key, base, None, None, SKIPPED, row.reason or "skipped (no reason given)")
    if row.status != STATUS_OK or row.value is None:
        # Any other status (failed, or ok without a value) means the metric was not produced.
        return Comparison(key, base, None, None, FAILED, row.reason or f"status {row.status!r} without a value")
    if not _finite(row.value):
        return Comparison(key, base, None, None, FAILED, f"new value of {entry['metric']!r} is {row.value!r}, not a finite number; the run produced a broken metric")
    higher = bool(entry["higher_is_better"])
    new = float(row.value)
    delta = new - base
    drop = -delta if higher else delta
    # Float round-off (0.95 - 0.9 > 0.05) must not turn an on-the-edge tolerance into a verdict.
    tolerance = tolerance + 1e-9 * max(1.0, abs(base))
    if drop > tolerance:
        outside, why = _outside_noise(entry, row, higher)
        if outside:
            return Comparison(key, base, new, delta, REGRESSION, f"worse by {drop:.4g} > tolerance {tolerance:.4g}; {why}")
        return Comparison(key, base, new, delta, OK, f"worse by {drop:.4g} but within noise: {why}")
    if -drop > tolerance:
        return Comparison(key, base, new, delta, IMPROVED)
    detail = f"within tolerance {tolerance:.4g}" if drop > 0 else ""
    return Comparison(key, base, new, delta, OK, detail)


def compare(baseline: dict[str, Any], rows: list[ResultRow], encoder: str, tolerances: dict[str, float]) -> list[Comparison]:
    """Compare every baseline entry with the run's rows of ``encoder``; then list rows the baseline lacks as ``new``."""
    by_key: dict[EntryKey, ResultRow] = {}
    for row in rows:
        if row.encoder == encoder:
            by_key[row.identity] = row  # later rows win (a resumed run recomputed the metric)
    default = tolerances.get("*", 0.0)
    results = []
    seen = set()
    for entry in baseline["entries"]:
        key = entry_key(entry)
        seen.add(key)
        results.append(compare_entry(entry, by_key.get(key), tolerances.get(entry["metric"], default)))
    for key, row in by_key.items():
        if key not in seen and row.status == STATUS_OK and row.value is not None:
            results.append(Comparison(key, None, float(row.value), None, NEW, "not in the baseline; not checked"))
    return results


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def format_table(comparisons: list[Comparison]) -> str:
    """A plain-text table: key | base | new | delta | verdict | detail."""
    header = ("suite/task/dataset/metric", "base", "new", "delta", "verdict", "detail")
    lines = [header]
    for item in comparisons:
        suite, task, dataset, metric, variant = item.key
        name = "/".join((suite, task, dataset, metric)) + (f" [{variant}]" if variant else "")
        lines.append((name, _fmt(item.base), _fmt(item.new), _fmt(item.delta, signed=True), item.verdict, item.detail))
    widths = [max(len(line[column]) for line in lines) for column in range(len(header) - 1)]
    text = []
    for index, line in enumerate(lines):
        cells = [line[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(line[1:4], widths[1:4])]
        cells.append(line[4].ljust(widths[4]))
        text.append("  ".join(cells + [line[5]]).rstrip())
        if index == 0:
            text.append("-" * len(text[0]))
    return "\n".join(text)


# ---------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.check",
        description="Compare a run's results with a baseline; exit 1 on a regression, 2 on a usage error.",
    )
    parser.add_argument("--results", required=True, type=Path, help="run directory (holds results.jsonl)")
    parser.add_argument("--baseline", type=Path, help="baseline JSON file to compare with (or to write, see --write-baseline)")
    parser.add_argument("--encoder", help="encoder of the run to check (required when the run has several)")
    parser.add_argument("--tolerance", action="append", default=[], metavar="METRIC=ABS",
                        help="allowed drop in the metric's unit before a regression is flagged; repeatable; *=ABS sets the default (0)")
    parser.add_argument("--write-baseline", nargs="?", const=True, default=None, metavar="PATH",
                        help="write a baseline from the run to PATH (or to --baseline) instead of checking")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 pass, 1 regression, 2 usage error)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        rows = load_run_rows(args.results)
        if args.write_baseline is not None:
            target = args.baseline if args.write_baseline is True else Path(args.write_baseline)
            if target is None:
                raise UsageError("--write-baseline needs a PATH (or --baseline PATH)")
            encoder = select_encoder(rows, args.encoder, None, args.results)
            check_one_weights(rows, encoder, args.results)
            document = make_baseline(rows, encoder, args.results)
            if not document["entries"]:
                raise UsageError(f"{args.results}: encoder {encoder!r} has no ok rows; nothing to write")
            bad = non_finite_entries(document)
            if bad:
                raise UsageError(f"{args.results}: refusing to write baseline {target}: {len(bad)} non-finite value(s) ({'; '.join(bad[:5])}); fix the run (a diverged checkpoint?) and rerun it")
            try:
                write_baseline(document, target)
            except OSError as err:
                raise UsageError(f"{target}: cannot write the baseline ({err.strerror or err}); pass a writable file path") from err
            print(f"wrote {target}: {len(document['entries'])} entries for encoder {encoder!r}")
            return 0
        if args.baseline is None:
            raise UsageError("--baseline PATH is required (or --write-baseline PATH to create one)")
        tolerances = parse_tolerances(args.tolerance)
        baseline = load_baseline(args.baseline)
        check_tolerances(tolerances, baseline, args.baseline)
        encoder = select_encoder(rows, args.encoder, baseline.get("encoder"), args.results)
        check_one_weights(rows, encoder, args.results)
    except UsageError as err:
        print(f"benchmarks.check: error: {err}", file=sys.stderr)
        return 2

    comparisons = compare(baseline, rows, encoder, tolerances)
    print(f"encoder {encoder!r} in {args.results} vs baseline {args.baseline} "
          f"(encoder {baseline.get('encoder')!r}, weights {baseline.get('weights_hash') or '?'})")
    print(format_table(comparisons))
    failing = [item for item in comparisons if item.verdict in FAILING]
    counts = {verdict: sum(item.verdict == verdict for item in comparisons)
              for verdict in (OK, IMPROVED, NEW, *FAILING)}
    summary = ", ".join(f"{count} {verdict}" for verdict, count in counts.items() if count)
    if failing:
        print(f"FAIL: {summary}")
        return 1
    print(f"PASS: {summary or 'nothing to compare'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
