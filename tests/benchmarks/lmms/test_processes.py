"""lmms-eval over several processes: ``accelerate launch --num_processes 2 -m lmms_eval --model vee_mllm`` and
``--vqa-processes 2`` score every document exactly as one process does (2 CPU processes on gloo)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import run
from benchmarks.lmms.shapes_task import write_shapes_tasks
from benchmarks.results import read_rows

from .conftest import DATA

pytest.importorskip("lmms_eval")

ROOT = Path(__file__).resolve().parents[3]
ITEMS = 12
TASKS = "shapes_vqa,shapes_vqa_mc"


@pytest.fixture(scope="module")
def varied_mllm(tiny_mllm, tmp_path_factory) -> Path:
    """The tiny MLLM with its LM weights x10 and its projector's output x30: the random one answers
    "assistant assistant ..." to every question; this one gives different answers to different documents,
    so a document scored with another document's answer would show."""
    import torch

    from train.mllm import load_mllm, save_mllm

    mllm = load_mllm(tiny_mllm)
    with torch.no_grad():
        for name, parameter in mllm.lm.named_parameters():
            if "norm" not in name:
                parameter.mul_(10)
        mllm.projector.fc2.weight.mul_(30)
    return save_mllm(mllm, tmp_path_factory.mktemp("varied") / "mllm")


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    return write_shapes_tasks(DATA, tmp_path_factory.mktemp("tasks"), n_items=ITEMS)


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "HF_DATASETS_CACHE": str(tmp / "hf"), **extra}


def _lmms_eval(launcher: list[str], mllm: Path, include: Path, out: Path, env: dict[str, str]) -> str:
    command = [*launcher, "-m", "lmms_eval", "--model", "vee_mllm", "--model_args", f"pretrained={mllm}", "--tasks", TASKS,
               "--include_path", str(include), "--output_path", str(out), "--log_samples", "--batch_size", "4", "--device", "cpu",
               "--verbosity", "INFO"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT, check=False)
    console = done.stdout + done.stderr
    assert done.returncode == 0 and list(out.rglob("*_results.json")), console[-3000:]  # lmms-eval exits 0 on failure: check the file
    return console


def _samples(out: Path, task: str) -> dict[int, dict]:
    (path,) = out.rglob(f"*_samples_{task}.jsonl")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    by_doc = {line["doc_id"]: line for line in lines}
    assert len(by_doc) == len(lines)  # no document scored twice
    return by_doc


@pytest.fixture(scope="module")
def one_process(varied_mllm, tasks, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one")
    _lmms_eval([sys.executable], varied_mllm, tasks.include_path, out / "lmms", _env(out))
    return out / "lmms"


def _two_process_launcher() -> list[str]:
    from benchmarks.lmms.runner import launch_command

    command, _ = launch_command("SPEC", 2, "cpu")
    return command[: command.index("-m", 2)]  # accelerate launch ... without the runner module


def test_two_processes_under_accelerate_launch_score_every_document_as_one_process(varied_mllm, tasks, one_process, tmp_path):
    console = _lmms_eval(_two_process_launcher(), varied_mllm, tasks.include_path, tmp_path / "lmms", _env(tmp_path, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1"))
    assert "Running on rank 1" in console  # two processes, each with its shard
    for task, metric in (("shapes_vqa", "exact_match"), ("shapes_vqa_mc", "acc")):
        one, two = _samples(one_process, task), _samples(tmp_path / "lmms", task)
        assert sorted(one) == sorted(two) == list(range(ITEMS))
        for doc in one:
            assert (two[doc]["doc_hash"], two[doc]["target"], two[doc][metric]) == (one[doc]["doc_hash"], one[doc]["target"], one[doc][metric])
            if task == "shapes_vqa":
                assert two[doc]["filtered_resps"] == one[doc]["filtered_resps"]
            else:  # the choices' answer losses: the same up to float summation order (1 vs 2 threads, other batches)
                ours = np.array([[float(loss), greedy == "True"] for loss, greedy in two[doc]["filtered_resps"]])
                theirs = np.array([[float(loss), greedy == "True"] for loss, greedy in one[doc]["filtered_resps"]])
                np.testing.assert_allclose(ours, theirs, atol=1e-4)
    answers = [line["filtered_resps"] for line in _samples(one_process, "shapes_vqa").values()]
    assert len(set(map(str, answers))) > 3  # documents get different answers, so a mix-up could not hide
    (one_file,), (two_file,) = one_process.rglob("*_results.json"), (tmp_path / "lmms").rglob("*_results.json")
    one_results, two_results = json.loads(one_file.read_text())["results"], json.loads(two_file.read_text())["results"]
    for task, metric in (("shapes_vqa", "exact_match,none"), ("shapes_vqa_mc", "acc,none")):
        assert two_results[task][metric] == one_results[task][metric]


def test_vqa_processes_runs_the_suite_over_two_processes_with_one_process_scores(varied_mllm, tasks, one_process, tmp_path):
    manifest = tmp_path / "lineage.toml"
    manifest.write_text(f'[[encoder]]\nname = "m"\ncheckpoint = "{varied_mllm}"\nrole = "original"\nmllm = "{varied_mllm}"\n')
    status = run.main(["--encoders", str(manifest), "--suite", "vqa", "--vqa-tasks", TASKS, "--vqa-items", str(ITEMS), "--vqa-batch-size", "4",
                       "--vqa-processes", "2", "--no-vqa-blind", "--data", DATA, "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"), "--no-report"])
    assert status == 0
    folder = tmp_path / "run" / "vqa" / "lmms" / "m"
    assert (folder / "lmms-eval.log").is_file() and (folder / "lmms-eval.rank1.log").is_file()
    assert "accelerate.commands.launch --multi_gpu --num_processes 2" in (tmp_path / "run" / "vqa" / "lmms_runner.log").read_text()
    rows = {row.task: row for row in read_rows(tmp_path / "run")}
    for task, metric in (("shapes_vqa", "exact_match"), ("shapes_vqa_mc", "acc")):
        row = rows[task]
        assert row.status == "ok" and row.n == ITEMS
        single = _samples(one_process, task)
        expected = [single[doc][metric] for doc in range(ITEMS)]  # the same shapes items, written again by the suite
        assert np.load(tmp_path / "run" / row.per_item).tolist() == expected
        assert row.value == pytest.approx(100 * np.mean(expected))


def test_a_job_failing_in_one_process_stops_that_launch_and_the_other_jobs_run_again(varied_mllm, tasks, tmp_path):
    """Document 1 (process 1's shard) names a missing image: process 1 reports the job and exits, the
    launcher stops process 0, and the next job runs in a new launch."""
    from benchmarks.lmms.runner import Job, run_jobs

    include = tmp_path / "tasks"
    shutil.copytree(tasks.include_path, include)
    docs = [json.loads(line) for line in tasks.docs.read_text().splitlines()][:4]
    docs[1]["image"] = str(tmp_path / "missing.png")
    broken_docs = include / "broken.jsonl"
    broken_docs.write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    config = (include / "shapes_vqa.yaml").read_text().replace("task: shapes_vqa\n", "task: shapes_vqa_broken\n").replace(json.dumps(str(tasks.docs)), json.dumps(str(broken_docs)))
    (include / "shapes_vqa_broken.yaml").write_text(config)
    jobs = [Job("broken", str(varied_mllm), str(tmp_path / "out" / "broken"), ["shapes_vqa_broken"], batch_size=4),
            Job("fine", str(varied_mllm), str(tmp_path / "out" / "fine"), ["shapes_vqa_mc"], batch_size=4, limit=4)]
    messages: list[str] = []
    broken, fine = run_jobs(jobs, include, tmp_path / "work", tmp_path / "hf", log=messages.append, processes=2)
    assert broken.error.startswith("process 1 of 2: ") and "missing.png" in broken.error
    assert not list((tmp_path / "out" / "broken").rglob("*_results.json"))
    assert fine.error == "" and list((tmp_path / "out" / "fine").rglob("*_results.json"))
    assert any("starting it again for the other 1" in message for message in messages)


def test_launch_command_for_one_and_several_processes(monkeypatch):
    from benchmarks.lmms.runner import launch_command
    from benchmarks.run_many import usable_cores

    assert launch_command("spec.json", 1, "cpu") == ([sys.executable, "-m", "benchmarks.lmms.runner", "spec.json"], {})
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    command, env = launch_command("spec.json", 2, "cpu")
    assert command[:7] == [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines"]
    assert command[-3:] == ["-m", "benchmarks.lmms.runner", "spec.json"]
    assert env == {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": str(max(1, usable_cores() // 2))}
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's own setting wins
    assert launch_command("spec.json", 2, "cpu")[1] == {"ACCELERATE_USE_CPU": "1"}
    assert launch_command("spec.json", 2, "cuda")[1] == {}  # one GPU per process, NCCL


def test_more_processes_than_gpus_is_refused_by_name():
    import torch

    from benchmarks.suites.vqa import processes_problem

    assert processes_problem(1, "cuda") == "" and processes_problem(4, "cpu") == ""
    asked = max(2, torch.cuda.device_count() + 1)
    problem = processes_problem(asked, "cuda")
    assert problem == f"--vqa-processes {asked} runs one process per GPU, and {torch.cuda.device_count()} GPU(s) are visible; lower --vqa-processes"


def test_a_timeout_stops_every_process_of_the_launch(varied_mllm, tasks, tmp_path):
    """torchrun starts its workers in sessions of their own: stopping only the launcher would leave them running."""
    import psutil

    from benchmarks.lmms.runner import Job, run_jobs

    # A task whose every image takes a minute to load: the launch is still running when its 15 s are up, on any machine.
    slow = tmp_path / "slow_tasks"
    shutil.copytree(tasks.include_path, slow)
    (slow / "slow_visual.py").write_text("import time\nfrom benchmarks.lmms.shapes_task import doc_to_visual as shown\n\n\n"
                                         "def doc_to_visual(doc):\n    time.sleep(60)\n    return shown(doc)\n")
    yaml = slow / "shapes_vqa.yaml"
    yaml.write_text(yaml.read_text().replace("!function benchmarks.lmms.shapes_task.doc_to_visual", "!function slow_visual.doc_to_visual"))
    assert "slow_visual" in yaml.read_text()
    job = Job("m", str(varied_mllm), str(tmp_path / "out"), ["shapes_vqa"], batch_size=4)
    (outcome,) = run_jobs([job], slow, tmp_path / "work", tmp_path / "hf", log=lambda message: None, processes=2, timeout=15)
    assert "timed out after 15 s" in outcome.error
    spec = str(tmp_path / "work" / "lmms_jobs.json")
    left = [p.pid for p in psutil.process_iter(["cmdline"]) if spec in " ".join(p.info["cmdline"] or [])]
    assert left == []
