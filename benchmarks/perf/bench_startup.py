"""Benchmark: a process's start-up with wandb deferred (``common.lazy_imports``) against importing timm as is.

timm imports wandb at import time only to see whether it is installed (lmms-eval installs it). Every process of
a run pays that: ``benchmarks.run``, each lmms-eval worker, each training stage. This starts fresh interpreters
in turn, A B A B ...:

- ``deferred``: ``defer_slow_imports()`` then ``import timm`` (what ``import encoders`` does);
- ``plain``: ``import timm``, which loads wandb.

Prints the median wall seconds of each and their pair-by-pair ratio, and checks that ``deferred`` did not load
wandb's SDK.

    python -m benchmarks.perf.bench_startup
    python -m benchmarks.perf.bench_startup --quick       # 2 pairs (its timings mean nothing)
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

DEFERRED = "from common.lazy_imports import defer_slow_imports; defer_slow_imports(); import sys, timm; print('wandb.sdk' in sys.modules)"
PLAIN = "import sys, timm; print('wandb.sdk' in sys.modules)"


def _wall(code: str) -> tuple[float, str]:
    """Wall seconds of a fresh interpreter running ``code``, and what it printed."""
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return time.perf_counter() - began, done.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.perf.bench_startup", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=8, help="A/B pairs after one warm-up pair")
    parser.add_argument("--quick", action="store_true", help="2 pairs")
    args = parser.parse_args(argv)
    pairs = 2 if args.quick else args.pairs
    _wall(DEFERRED), _wall(PLAIN)  # warm the file cache
    deferred, plain, ratios = [], [], []
    for _ in range(pairs):
        (a, loaded_a), (b, loaded_b) = _wall(DEFERRED), _wall(PLAIN)
        if loaded_a != "False" or loaded_b != "True":
            raise SystemExit(f"unexpected: wandb.sdk loaded deferred={loaded_a} plain={loaded_b}")
        deferred.append(a), plain.append(b), ratios.append(a / b)
    print(f"deferred {statistics.median(deferred):.2f} s, plain {statistics.median(plain):.2f} s (median wall of {pairs}); "
          f"deferred / plain {statistics.median(ratios):.2f} (pair by pair, min {min(ratios):.2f}, max {max(ratios):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
