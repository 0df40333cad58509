"""Benchmark: the vqa suite's lmms-eval run in 1 process vs N processes (``--vqa-processes``), same MLLM, same
shapes tasks, same batch size.

Each side is ``benchmarks.lmms.runner.run_jobs`` as the suite calls it (one MLLM, ``shapes_vqa`` and
``shapes_vqa_mc``), with its own fresh datasets cache, so wall time includes what a user waits for:
starting the processes, importing lmms-eval, loading the MLLM, preparing the tasks, scoring, gathering.
1 process uses torch's default threads (every core), as a user's run does; N processes get cores / N
threads each. A third run, 1 process with cores / N threads, separates the gain of the processes from
that of fewer threads per process (on busy cores, multi-threaded small matmuls stall on OpenMP waits).
Printed: the wall time of each, the ratio, lmms-eval's own time on rank 0, and whether every per-document
score (lmms-eval's samples files) is the same in all runs.

    python -m benchmarks.perf.bench_vqa_processes                  # random demo-sized MLLM, 200 items, 2 processes
    python -m benchmarks.perf.bench_vqa_processes --mllm runs/demo/lineage/dpo/mllm --items 400
    python -m benchmarks.perf.bench_vqa_processes --quick          # 16 items (its timings mean nothing)
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks.lmms.shapes_task import TASKS


def _scores(output_dir: str) -> dict[tuple[str, str], dict]:
    """(task, metric) -> {doc_id: score} from the samples files lmms-eval wrote."""
    from benchmarks.lmms.results import PerItem, collect_results, per_item_scores

    found = {}
    for task, result in collect_results(output_dir).tasks.items():
        for metric in result.metrics:
            per_item = per_item_scores(result, metric)
            if isinstance(per_item, PerItem):
                found[(task, metric)] = dict(zip(per_item.doc_ids, per_item.scores.tolist()))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.perf.bench_vqa_processes", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mllm", default="", help="MLLM directory (default: a random demo-sized one, built here)")
    parser.add_argument("--items", type=int, default=200, help="shapes VQA items (documents per task)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data", default="shapes:n=400:seed=0")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    from benchmarks.lmms.runner import Job, run_jobs
    from benchmarks.lmms.shapes_task import write_shapes_tasks
    from benchmarks.perf.bench_vqa_model import random_mllm
    from benchmarks.run_many import usable_cores

    items = 16 if args.quick else args.items
    threads = str(max(1, usable_cores() // args.processes))
    runs = (("1 process", 1, None), (f"{args.processes} processes", args.processes, None), (f"1 process, {threads} thread(s)", 1, threads))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        mllm = args.mllm or random_mllm(root / "model", args.data)
        task = write_shapes_tasks(args.data, root / "tasks", n_items=items)
        timings, outcomes, scores = {}, {}, {}
        for index, (name, processes, omp) in enumerate(runs):
            job = Job(f"run{index}", mllm, str(root / f"out-{index}"), list(TASKS), batch_size=args.batch_size)
            saved = os.environ.get("OMP_NUM_THREADS")
            if omp:
                os.environ["OMP_NUM_THREADS"] = omp  # the runner's subprocess inherits it
            try:
                started = time.perf_counter()
                (outcomes[name],) = run_jobs([job], task.include_path, root / f"work-{index}", root / f"hf-{index}", log=lambda message: None, processes=processes)
                timings[name] = time.perf_counter() - started
            finally:
                if omp:
                    os.environ.pop("OMP_NUM_THREADS") if saved is None else os.environ.__setitem__("OMP_NUM_THREADS", saved)
            if outcomes[name].error:
                print(f"{name} failed: {outcomes[name].error}")
                return 1
            scores[name] = _scores(job.output_dir)
    reference = scores[runs[0][0]]
    complete = len(reference) == len(TASKS) and all(len(per_doc) == task.n_items for per_doc in reference.values())
    same = complete and all(found == reference for found in scores.values())
    print(f"{task.n_items} documents x {len(TASKS)} tasks ({', '.join(TASKS)}), batch {args.batch_size}, MLLM {args.mllm or 'random demo-sized'}; "
          f"{usable_cores()} usable cores, load average {os.getloadavg()[0]:.1f}")
    for name, _, _ in runs:
        print(f"{name + ':':24s} {timings[name]:7.1f} s wall (lmms-eval on rank 0: {outcomes[name].seconds:.1f} s)")
    one, many, thin = (timings[name] for name, _, _ in runs)
    print(f"ratio 1 process / {args.processes} processes: {one / many:.2f}x (vs 1 process with {threads} thread(s): {thin / many:.2f}x); "
          f"per-document scores equal in all runs: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
