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

``processes`` > 1: the subprocess is ``accelerate launch --multi_gpu --num_processes N`` (lmms-eval's documented
launcher; on CPU with ``ACCELERATE_USE_CPU=1``, N gloo processes of 1/N of the cores each, on GPUs one GPU
each). Every process runs every job, scores its shard of the documents, and rank 0 gathers and writes the
results. A job that fails in one process leaves the others waiting in a collective, so that process
writes the job's status and exits; the launcher then stops the others, and the jobs without a status are
launched again.
"""
from __future__ import annotations

import difflib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import benchmarks
from benchmarks.lmms.results import LEGACY_RESULTS_NAME, RESULTS_GLOB

STATUS_FILE = "status.json"
LOG_FILE = "lmms-eval.log"  # rank 0's; rank r > 0 writes lmms-eval.rank<r>.log
DISTRIBUTED_TIMEOUT_S = 60000  # what lmms-eval's own CLI gives its process group
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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop(process: subprocess.Popen, grace_s: float = 60.0) -> None:
    """Stop the subprocess and what it started: SIGTERM first (torchrun's agent, inside accelerate launch,
    then stops its workers, which run in sessions of their own), SIGKILL to its group after ``grace_s``."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        process.wait()


def launch_command(spec_path: str | os.PathLike, processes: int, device: str) -> tuple[list[str], dict[str, str]]:
    """The subprocess's command line and the environment it adds: ``python -m benchmarks.lmms.runner SPEC``
    for one process; for several, the same module under ``accelerate launch`` (see the module docstring).
    On CPU each process gets ``OMP_NUM_THREADS`` = usable cores / N unless the caller's environment sets it."""
    runner = ["-m", "benchmarks.lmms.runner", str(spec_path)]
    if processes <= 1:
        return [sys.executable, *runner], {}
    env: dict[str, str] = {}
    if device.split(":")[0] == "cpu":
        from benchmarks.run_many import usable_cores

        env["ACCELERATE_USE_CPU"] = "1"  # accelerate's multi-CPU state (gloo); its --cpu flag alone starts one process without MPI
        if "OMP_NUM_THREADS" not in os.environ:
            env["OMP_NUM_THREADS"] = str(max(1, usable_cores() // processes))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()), *runner]
    return command, env


def run_jobs(jobs: list[Job], include_path: str | os.PathLike | None, work_dir: str | os.PathLike, hf_cache: str | os.PathLike | None = None, log: Callable[[str], None] = print,
             timeout: float | None = None, processes: int = 1) -> list[Outcome]:
    """Run every job in one subprocess (lmms-eval is imported once) of ``processes`` processes; returns one
    outcome per job. When the subprocess stops after some jobs have a status and before the others do
    (a failed job in a multi-process run stops every process), it is started again for the others.

    ``hf_cache``: the datasets cache for the subprocess (None: the user's own, where benchmark datasets
    downloaded beforehand live; nothing is downloaded here, the subprocess runs offline)."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    devices = {job.device for job in jobs}
    if len(devices) > 1:
        raise ValueError(f"run_jobs: one device for all jobs of a launch, got {sorted(devices)}")
    for job in jobs:
        clear_previous_outputs(Path(job.output_dir))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if hf_cache is not None:
        env["HF_DATASETS_CACHE"] = str(hf_cache)
    console = work_dir / "lmms_runner.log"
    console.write_text("")
    where = f", {processes} processes" if processes > 1 else ""
    log(f"vqa: lmms-eval on {len(jobs)} MLLM(s){where}, tasks {sorted({t for job in jobs for t in job.tasks})} (log {console})")
    started = time.perf_counter()
    pending = list(jobs)
    returncode: int | str = 0
    while pending:
        spec_path = work_dir / "lmms_jobs.json"
        spec_path.write_text(json.dumps({"include_path": str(include_path) if include_path else None, "jobs": [asdict(job) for job in pending]}, indent=2))
        command, extra_env = launch_command(spec_path, processes, pending[0].device)
        left = None if timeout is None else max(1.0, timeout - (time.perf_counter() - started))
        with open(console, "a", encoding="utf-8") as handle:
            handle.write(f"$ {' '.join(command)}\n")
            handle.flush()
            process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env={**env, **extra_env}, start_new_session=True)
            try:
                returncode = process.wait(timeout=left)
            except BaseException as stop:  # a timeout, or Ctrl-C here
                _stop(process)
                if not isinstance(stop, subprocess.TimeoutExpired):
                    raise
                returncode = f"timed out after {timeout:.0f} s"
                break
        remaining = [job for job in pending if not (Path(job.output_dir) / STATUS_FILE).is_file()]
        if not remaining or len(remaining) == len(pending):  # all done, or no progress: never loop on a crash
            break
        log(f"vqa: lmms-eval stopped (exit {returncode}) after {len(pending) - len(remaining)} job(s); starting it again for the other {len(remaining)}")
        pending = remaining
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


def _write_status(job: Job, error: str, seconds: float, first: bool = False, **extra) -> None:
    """Write the job's status. ``first``: only when no process has written one yet (in a multi-process run
    the first failure is the cause; the others' are the broken connection to the process that stopped)."""
    path = Path(job.output_dir) / STATUS_FILE
    tmp = path.with_name(f"{STATUS_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"error": error, "seconds": round(seconds, 2), "extra": extra}, indent=2))
    if not first:
        tmp.replace(path)
        return
    try:
        os.link(tmp, path)  # atomic: fails when the file exists
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def _join_processes() -> tuple[int, int]:
    """This process's rank and the world size; under a launcher (``WORLD_SIZE`` > 1) the process group is
    joined first, as lmms-eval's CLI does before it evaluates (an ``Accelerator`` with its long timeout)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import datetime

        import torch.distributed
        from accelerate import Accelerator
        from accelerate.utils import InitProcessGroupKwargs

        if not torch.distributed.is_initialized():
            Accelerator(kwargs_handlers=[InitProcessGroupKwargs(timeout=datetime.timedelta(seconds=DISTRIBUTED_TIMEOUT_S))])
    return int(os.environ.get("RANK", "0")), world


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

    rank, world = _join_processes()
    _register_model()
    _share_task_index()
    sys.argv = sys.argv[:1]  # parse_eval_args parses sys.argv when it builds its defaults
    parser, _ = parse_eval_args()
    unknown_message = ""
    log_name = LOG_FILE if rank == 0 else LOG_FILE.replace(".log", f".rank{rank}.log")
    for job in jobs:
        if unknown_message:  # the same names would fail the same way
            _write_status(job, unknown_message, 0.0)
            continue
        started = time.perf_counter()
        sink = logger.add(str(Path(job.output_dir) / log_name), level="INFO")
        args = lmms_eval_args(job, include_path)
        error = ""
        in_step = True  # every process raised at the same point, before any collective: they stay in step
        try:
            results, _ = cli_evaluate_single(parser.parse_args(args))
            if results is None and rank == 0:
                error = "lmms-eval returned no results (see the log)"
        except Exception as err:  # noqa: BLE001 - reported per job; the other jobs still run
            logger.exception(f"vee_mllm on {job.pretrained} failed")
            cause = err.last_attempt.exception() if hasattr(err, "last_attempt") else None  # tenacity's RetryError
            error = f"{type(cause or err).__name__}: {cause or err}"
            if "Tasks not found" in str(err):  # lmms-eval's own check, before the model loads; add the close names it knows
                unknown_message = _unknown_message(job.tasks, include_path) or error
                error = unknown_message
            else:
                in_step = world == 1
                if world > 1:
                    error = f"process {rank} of {world}: {error}"
        finally:
            logger.remove(sink)
        if rank == 0 or error:  # the other ranks' results are gathered on rank 0, which reports them
            _write_status(job, error, time.perf_counter() - started, first=world > 1 and bool(error))
        if not in_step:
            print(f"lmms runner: {error}; stopping this process so that the launcher stops the others", file=sys.stderr, flush=True)
            os._exit(3)  # the other processes wait in a collective of this job: a normal exit would wait with them
    return 0


if __name__ == "__main__":
    sys.exit(main())
