"""Several ``python -m benchmarks.run`` invocations side by side, one process each, on the CPU cores there are.

A run of small encoders keeps about one core busy (its probes and mmseg's head run single-threaded: on a few
shared cores OpenMP's waits cost more than a second thread gains), so independent runs in parallel finish
sooner than one after the other. Each process gets ``cores // workers`` threads (``OMP_NUM_THREADS``), so the
processes together never ask for more threads than there are cores; its console output goes to its own log.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class RunJob:
    """One ``benchmarks.run`` invocation: ``name`` (its log is ``<log_dir>/<name>.log``) and its ``argv``."""

    name: str
    argv: list[str]


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_many(jobs: list[RunJob], log_dir: str | os.PathLike, workers: int | None = None, log: Callable[[str], None] = print) -> int:
    """Run ``jobs`` in order, at most ``workers`` (default: the usable cores) at a time; returns the bitwise
    OR of their exit statuses (0 when every run succeeded). A job's console output is in its log file."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    cores = usable_cores()
    workers = max(1, min(workers or cores, len(jobs)))
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // workers))}
    waiting, running, status = list(jobs), {}, 0
    log(f"{len(jobs)} runs, {workers} at a time with {env['OMP_NUM_THREADS']} thread(s) each; console output in {log_dir}/<run>.log")
    try:
        while waiting or running:
            while waiting and len(running) < workers:
                job = waiting.pop(0)
                handle = open(log_dir / f"{job.name}.log", "w")
                process = subprocess.Popen([sys.executable, "-m", "benchmarks.run", *job.argv], stdout=handle, stderr=subprocess.STDOUT, env=env)
                running[process] = (job, handle, time.perf_counter())
            finished = [process for process in running if process.poll() is not None]
            if not finished:
                time.sleep(0.2)
            for process in finished:
                job, handle, started = running.pop(process)
                handle.close()
                code = process.returncode if process.returncode >= 0 else 128 - process.returncode  # killed by a signal: the shell's 128 + N
                status |= code
                outcome = "done" if code == 0 else f"exit {code}: see {log_dir / (job.name + '.log')}"
                log(f"{job.name}: {outcome} in {time.perf_counter() - started:.0f} s")
    finally:  # interrupted: no run is left behind writing into the results
        for process, (_, handle, _) in running.items():
            process.terminate()
            process.wait()
            handle.close()
    return status
