"""How many CPU threads small attribution work, and the exact logistic probe's solver, should use.

Per-batch work of demo-sized models (a 64 px 4-block ViT, a tiny Qwen2) is many small matmuls; on CPU,
OpenMP threads then mostly wait on each other, and on shared cores each wait costs milliseconds.
Measured on the 2-core development machine under load from other jobs (load average 10-13): Grad-CAM of
100 images at 2 blocks ran at 13-15 images/s on 2 threads and 57-80 on 1; SFT+DPO gradient maps of 16
items at 1.5-3.4 items/s on 2 threads and 24-25 on 1. Models above ``SMALL_MODEL_PARAMETERS`` keep
every thread (their matmuls are large enough to share).

:func:`fastest_threads` times a unit of real work under a few thread counts and picks the fastest: the
exact logistic probe (``probes.logreg``) uses it, because there the right count depends on whether
another process keeps a core busy.

:func:`at_most_threads` caps the count inside a block; the training loops of the probes (the linear
grid, the exact logistic probe, the segmentation heads, mmseg's head) use it with ``SINGLE_THREAD_WORK``.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

SMALL_MODEL_PARAMETERS = 20_000_000
# Below this many multiply-adds per minibatch matmul, a probe's CPU training loop runs on one thread.
SINGLE_THREAD_WORK = 1 << 27


@contextlib.contextmanager
def at_most_threads(n: int) -> Iterator[None]:
    """torch's CPU threads capped at ``n`` inside the block (never raised), restored afterwards."""
    previous = torch.get_num_threads()
    if n >= previous:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def threads_for(*models: nn.Module, device: str | torch.device = "cpu") -> Iterator[None]:
    """One CPU thread while the ``models`` together have fewer than ``SMALL_MODEL_PARAMETERS``
    parameters (and the work runs on the CPU); no change otherwise."""
    small = torch.device(device).type == "cpu" and sum(p.numel() for m in models for p in m.parameters()) < SMALL_MODEL_PARAMETERS
    with at_most_threads(1 if small else torch.get_num_threads()):
        yield


def thread_candidates(available: int | None = None) -> list[int]:
    """Thread counts worth timing on this CPU: all of torch's threads, one less (leaves a core that another
    process keeps busy), and one. Distinct, largest first."""
    available = available or torch.get_num_threads()
    return sorted({available, max(1, available - 1), 1}, reverse=True)


def fastest_threads(work: Callable[[], object], candidates: Sequence[int] | None = None, *, repeats: int = 3) -> tuple[int, dict[int, float]]:
    """Run ``work`` (one unit of the real computation, e.g. one loss-and-gradient evaluation) under each
    candidate thread count (default :func:`thread_candidates`), once to warm up and ``repeats`` times
    timed; return the count with the smallest median wall time (ties: fewer threads) and the medians in
    seconds. torch's thread setting is restored.

    Why measure: on a core that another process keeps busy, each OpenMP parallel region waits for the
    thread the OS has parked there, so more threads can be many times slower (a 20k x 768 x 100 logistic
    fit went from 17.6 s to 138.5 s beside one busy process on 2 cores; one thread took 33 s). Neither the
    core count nor the load average says which count wins; the solver's own step does.
    """
    candidates = list(candidates) if candidates else thread_candidates()
    previous = torch.get_num_threads()
    medians: dict[int, float] = {}
    try:
        for count in candidates:
            torch.set_num_threads(count)
            work()
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                work()
                times.append(time.perf_counter() - started)
            medians[count] = sorted(times)[len(times) // 2]
    finally:
        torch.set_num_threads(previous)
    best = min(medians, key=lambda count: (medians[count], count))
    return best, medians
