"""Run lmms-eval on MLLM directories, in one subprocess for all of them, and say per MLLM what happened.

lmms-eval's CLI exits 0 even when an evaluation fails, so success is never judged from an exit
status: the subprocess (``python -m benchmarks.lmms.runner jobs.json``) calls lmms-eval's own
``cli_evaluate_single`` per job (the function its CLI runs), catches what it raises, and writes
``status.json`` into each job's output folder; the caller then reads the results file lmms-eval wrote
there and checks every requested task in it.

A task name lmms-eval does not know fails every job, with the close names lmms-eval's ``TaskManager``
knows (with the ``--include_path`` folder).
The subprocess runs offline (``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``: benchmark datasets must be in
the Hugging Face cache beforehand), and registers the ``vee_mllm`` model itself when the installed entry point is
not there yet (an editable install made before setup.cfg gained it).
"""
from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import benchmarks
from benchmarks.lmms.results import LEGACY_RESULTS_NAME, RESULTS_GLOB

STATUS_FILE = "status.json"
LOG_FILE = "lmms-eval.log"
PROJECT_ROOT = Path(benchmarks.__file__).resolve().parent.parent


@dataclass
class Job:
    """One lmms-eval evaluation: an MLLM directory on some tasks, written to ``output_dir``. ``blind``: the
    vision-disabled control (``vee_mllm``'s ``blind=true``: every image replaced by the encoder's mean colour)."""

    name: str
    pretrained: str
    output_dir: str
    tasks: list[str]
    batch_size: int = 16
    limit: int | None = None
    device: str = "cpu"
    blind: bool = False


@dataclass
class Outcome:
    """What the subprocess reported for one job: ``error`` is empty when lmms-eval returned results."""

    job: Job
    error: str = ""
    seconds: float = 0.0
    log: str = ""
    extra: dict = field(default_factory=dict)


def clear_previous_outputs(output_dir: Path) -> None:
    """Remove what an earlier run left in a job's folder (status, lmms-eval results and samples files), so
    that a task this run fails on can never be read back from an older file as if it were current."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / STATUS_FILE).unlink(missing_ok=True)
    for pattern in (RESULTS_GLOB, LEGACY_RESULTS_NAME, "*_samples_*.jsonl"):
        for stale in output_dir.rglob(pattern):
            stale.unlink()


def run_jobs(jobs: list[Job], include_path: str | os.PathLike | None, work_dir: str | os.PathLike, hf_cache: str | os.PathLike | None = None, log: Callable[[str], None] = print, timeout: float | None = None) -> list[Outcome]:
    """Run every job in one subprocess (lmms-eval is imported once); returns one outcome per job.

    ``hf_cache``: the datasets cache for the subprocess (None: the user's own, where benchmark datasets
    downloaded beforehand live; nothing is downloaded here, the subprocess runs offline)."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    spec = {"include_path": str(include_path) if include_path else None, "jobs": [asdict(job) for job in jobs]}
    spec_path = work_dir / "lmms_jobs.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    for job in jobs:
        clear_previous_outputs(Path(job.output_dir))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if hf_cache is not None:
        env["HF_DATASETS_CACHE"] = str(hf_cache)
    console = work_dir / "lmms_runner.log"
    log(f"vqa: lmms-eval on {len(jobs)} MLLM(s), tasks {sorted({t for job in jobs for t in job.tasks})} (log {console})")
    started = time.perf_counter()
    with open(console, "w", encoding="utf-8") as handle:
        try:
            process = subprocess.run([sys.executable, "-m", "benchmarks.lmms.runner", str(spec_path)], stdout=handle, stderr=subprocess.STDOUT, env=env, timeout=timeout, check=False)
            returncode = process.returncode
        except subprocess.TimeoutExpired:
            returncode = f"timed out after {timeout:.0f} s"
    outcomes = []
    for job in jobs:
        status_path = Path(job.output_dir) / STATUS_FILE
        if status_path.is_file():
            status = json.loads(status_path.read_text())
            outcomes.append(Outcome(job, status.get("error", ""), status.get("seconds", 0.0), str(Path(job.output_dir) / LOG_FILE), status.get("extra", {})))
        else:
            tail = console.read_text(encoding="utf-8", errors="replace")[-1500:] if console.exists() else ""
            outcomes.append(Outcome(job, f"the lmms-eval subprocess stopped before this job finished (exit {returncode}); end of {console}:\n{tail}", time.perf_counter() - started, str(console)))
    return outcomes


# -- inside the subprocess -------------------------------------------------------------------------------
def _register_model() -> None:
    from lmms_eval.models import MODEL_REGISTRY_V2

    from benchmarks.lmms.model import MODEL_ID, manifest

    if MODEL_ID not in MODEL_REGISTRY_V2.list_model_names():
        MODEL_REGISTRY_V2.register_manifest(manifest())


def unknown_tasks(tasks: list[str], known: list[str]) -> str:
    """An error message for task names not in ``known`` (with up to 5 close names each), or ''."""
    lines = []
    for task in tasks:
        if task not in known:
            close = difflib.get_close_matches(task, known, n=5, cutoff=0.6)
            lines.append(f"{task!r} (close: {', '.join(close)})" if close else f"{task!r} (no close name)")
    if not lines:
        return ""
    return ("lmms-eval does not know the task(s) " + "; ".join(lines) +
            ". Fix --vqa-tasks; `python -m lmms_eval --tasks list` lists every task name.")


def _unknown_message(tasks: list[str], include_path: str | None) -> str:
    from lmms_eval.tasks import TaskManager

    return unknown_tasks(tasks, TaskManager("WARNING", include_path=include_path).all_tasks)


def lmms_eval_args(job: Job, include_path: str | None) -> list[str]:
    """lmms-eval's command-line arguments for ``job`` (what ``cli_evaluate_single`` is given)."""
    model_args = f"pretrained={job.pretrained}" + (",blind=true" if job.blind else "")
    args = ["--model", "vee_mllm", "--model_args", model_args, "--tasks", ",".join(job.tasks),
            "--output_path", job.output_dir, "--log_samples", "--batch_size", str(job.batch_size), "--device", job.device,
            "--verbosity", "INFO"]
    if include_path:
        args += ["--include_path", include_path]
    if job.limit:
        args += ["--limit", str(job.limit)]
    return args


def _write_status(job: Job, error: str, seconds: float, **extra) -> None:
    (Path(job.output_dir) / STATUS_FILE).write_text(json.dumps({"error": error, "seconds": round(seconds, 2), "extra": extra}, indent=2))


def _share_task_index() -> None:
    """Index lmms-eval's task folders once per process instead of once per job: ``cli_evaluate_single``
    builds a ``TaskManager`` (a walk over every task YAML, seconds) on each call; same arguments, same index."""
    import lmms_eval.__main__ as cli

    made: dict[tuple, object] = {}
    original = cli.TaskManager

    def shared(*args, **kwargs):
        key = (args, tuple(sorted((k, str(v)) for k, v in kwargs.items())))
        if key not in made:
            made[key] = original(*args, **kwargs)
        return made[key]

    cli.TaskManager = shared


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    jobs = [Job(**job) for job in spec["jobs"]]
    include_path = spec.get("include_path")
    from loguru import logger
    from lmms_eval.__main__ import cli_evaluate_single, parse_eval_args

    _register_model()
    _share_task_index()
    sys.argv = sys.argv[:1]  # parse_eval_args parses sys.argv when it builds its defaults
    parser, _ = parse_eval_args()
    unknown_message = ""
    for job in jobs:
        if unknown_message:  # the same names would fail the same way
            _write_status(job, unknown_message, 0.0)
            continue
        started = time.perf_counter()
        sink = logger.add(str(Path(job.output_dir) / LOG_FILE), level="INFO")
        args = lmms_eval_args(job, include_path)
        error = ""
        try:
            results, _ = cli_evaluate_single(parser.parse_args(args))
            if results is None:
                error = "lmms-eval returned no results (see the log)"
        except Exception as err:  # noqa: BLE001 - reported per job; the other jobs still run
            logger.exception(f"vee_mllm on {job.pretrained} failed")
            cause = err.last_attempt.exception() if hasattr(err, "last_attempt") else None  # tenacity's RetryError
            error = f"{type(cause or err).__name__}: {cause or err}"
            if "Tasks not found" in str(err):  # lmms-eval's own check; add the close names it knows
                unknown_message = _unknown_message(job.tasks, include_path) or error
                error = unknown_message
        finally:
            logger.remove(sink)
        _write_status(job, error, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
