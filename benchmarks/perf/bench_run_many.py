"""Benchmark: the demo's evaluation runs side by side (``benchmarks.run_many``) vs one after the other.

Takes a trained demo lineage (``make demo`` once, or ``python -m train demo``) and runs the demo's four
evaluation runs (``benchmarks.demo.eval_jobs``: seg, the other shapes suites, PIVOT's protocol, digits)
twice on the same feature cache: one at a time with every core to each, then ``run_many``'s default
(one process per core, each on ``cores // workers`` threads). Prints both wall times, their ratio, and
whether both wrote the same result rows (they must: parallelism changes when, not what).

    python -m benchmarks.perf.bench_run_many                      # the lineage in runs/demo/lineage
    python -m benchmarks.perf.bench_run_many --jobs digits,pivot-eval   # two short runs only
    python -m benchmarks.perf.bench_run_many --quick              # the digits run only (smoke test)
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.results import read_rows
from benchmarks.run_many import run_many, usable_cores


def _rows(out: Path, names: list[str]) -> dict[tuple, float]:
    return {(name, row.encoder, row.suite, row.task, row.metric, row.variant): row.value for name in names for row in read_rows(out / name)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.perf.bench_run_many", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lineage", default="runs/demo/lineage", help="a trained demo lineage folder (holds lineage.toml and pivot-eval/)")
    parser.add_argument("--cache-dir", default=".cache/features", help="the feature cache (warm it with one make demo so both sides read it)")
    parser.add_argument("--jobs", default="", help="comma list of the demo's runs to time (default: all four)")
    parser.add_argument("--quick", action="store_true", help="the digits run only (a smoke test: its timings mean nothing)")
    args = parser.parse_args(argv)
    from benchmarks.demo import EVAL_NOTE, eval_jobs

    if args.quick:
        args.jobs = "digits"
    manifest = Path(args.lineage) / "lineage.toml"
    if not manifest.exists():
        print(f"error: {manifest} does not exist; train the demo lineage first (make demo, or python -m train demo --out {args.lineage})", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench_run_many_") as tmp:
        results = {}
        for label, workers in (("one at a time", 1), ("side by side", None)):
            out = Path(tmp) / label.replace(" ", "-")
            jobs = [job for job in eval_jobs(out, manifest, args.cache_dir, EVAL_NOTE) if not args.jobs or job.name in args.jobs.split(",")]
            began = time.perf_counter()
            if run_many(jobs, out / "logs", workers=workers, log=lambda message: print(f"  {label}: {message}")):
                print(f"error: a run failed ({label}); logs in {out / 'logs'} are removed with {tmp}", file=sys.stderr)
                return 1
            results[label] = (time.perf_counter() - began, _rows(out, [job.name for job in jobs]))
        (sequential, rows_a), (parallel, rows_b) = results["one at a time"], results["side by side"]
    same = rows_a.keys() == rows_b.keys() and all(abs(rows_a[k] - rows_b[k]) <= 1e-9 * max(1.0, abs(rows_a[k])) for k in rows_a)
    print(f"{len(jobs)} runs on {usable_cores()} cores: one at a time {sequential:.1f} s, side by side {parallel:.1f} s, "
          f"ratio {sequential / parallel:.2f}x; {len(rows_a)} rows, {'the same values' if same else 'VALUES DIFFER'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
