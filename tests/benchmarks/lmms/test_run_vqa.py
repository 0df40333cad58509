"""``--suite vqa`` running lmms-eval on MLLMs: the offline shapes tasks end to end, and bad input."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from benchmarks import run
from benchmarks.lmms.shapes_task import write_shapes_tasks
from benchmarks.results import read_rows

from .conftest import DATA, write_lmms_results

pytest.importorskip("lmms_eval")


def test_shapes_tasks_load_in_lmms_eval(tmp_path):
    from lmms_eval.utils import load_yaml_config

    task = write_shapes_tasks(DATA, tmp_path / "tasks", n_items=30)
    assert task.n_items == 30 and set(task.kinds) == {"colour", "count", "presence", "position"}
    docs = [json.loads(line) for line in task.docs.read_text().splitlines()]
    assert len(docs) == 30 and all(doc["choices"][doc["label"]] == doc["answer"] for doc in docs)
    assert {doc["label"] for doc in docs} == {0, 1}  # the correct choice is not always first
    for name in ("shapes_vqa", "shapes_vqa_mc"):
        config = load_yaml_config(str(tmp_path / "tasks" / f"{name}.yaml"))
        assert config["task"] == name and config["dataset_path"] == "json"
        assert config["dataset_kwargs"]["data_files"]["test"] == str(task.docs)
        image = config["doc_to_visual"](docs[0])[0]
        assert image.mode == "RGB" and image.size == (224, 224)
        assert config["doc_to_text"](docs[0]) == docs[0]["question"]
    again = write_shapes_tasks(DATA, tmp_path / "tasks", n_items=30)
    assert again.docs == task.docs and again.docs.read_text() == task.docs.read_text()


def test_unknown_task_lists_close_names(tmp_path):
    from lmms_eval.tasks import TaskManager

    from benchmarks.lmms.runner import unknown_tasks

    task = write_shapes_tasks(DATA, tmp_path / "tasks", n_items=4)
    known = TaskManager("WARNING", include_path=str(task.include_path)).all_tasks
    message = unknown_tasks(["shapes_vqa", "chartqaa", "zzzz_nothing"], known)
    assert "'chartqaa' (close: chartqa" in message and "'zzzz_nothing' (no close name)" in message
    assert "shapes_vqa'" not in message and "--tasks list" in message
    assert unknown_tasks(["shapes_vqa", "gqa", "mme"], known) == ""


def test_shapes_vqa_end_to_end_and_an_mllm_without_lm(tmp_path, tiny_mllm):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_mllm, broken)
    shutil.rmtree(broken / "lm")
    fresh = tmp_path / "fresh"  # as `python -m train pivot-eval` marks its MLLMs
    shutil.copytree(tiny_mllm, fresh)
    meta = json.loads((fresh / "mllm.json").read_text())
    (fresh / "mllm.json").write_text(json.dumps({**meta, "protocol": "pivot-eval"}))
    encoder = tiny_mllm / "encoder.safetensors"
    manifest = tmp_path / "lineage.toml"
    manifest.write_text(f'[[encoder]]\nname = "orig"\ncheckpoint = "{encoder}"\nrole = "original"\nmllm = "{fresh}"\n\n'
                        f'[[encoder]]\nname = "sft"\ncheckpoint = "{encoder}"\nrole = "sft"\nbase = "orig"\nmllm = "{broken}"\n')
    # A results file an earlier run left in this run's lmms-eval folder, dated later than any real one:
    # it must not be read back as this run's score.
    stale = write_lmms_results(tmp_path / "run" / "vqa" / "lmms" / "orig" / "earlier", {"shapes_vqa": {"exact_match": (0.999, None)}}, date="20991231_000000")
    status = run.main(["--encoders", str(manifest), "--suite", "vqa", "--vqa-tasks", "shapes_vqa,shapes_vqa_mc", "--vqa-items", "12",
                       "--data", DATA, "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"), "--no-report"])
    all_rows = read_rows(tmp_path / "run")
    rows = {(row.encoder, row.task): row for row in all_rows if not row.metric.endswith("_vision_gain")}
    gains = {(row.encoder, row.task): row for row in all_rows if row.metric.endswith("_vision_gain")}
    assert status == 1  # the broken MLLM
    for task, metric in (("shapes_vqa", "exact_match"), ("shapes_vqa_mc", "acc")):
        row = rows[("orig", task)]
        assert row.status == "ok" and row.metric == metric and row.n == 12 and row.extra["category"] == "uncategorised"
        scores = np.load(tmp_path / "run" / row.per_item)
        assert scores.shape == (12,) and row.value == pytest.approx(100 * scores.mean())
        assert row.extra["mllm"] == str(fresh) and row.extra["lmms"]["model"] == "vee_mllm"
        assert row.identity[-1] == "protocol=pivot-eval"  # never mixed with the same encoder's rows from a lineage MLLM
        by_kind = [r for (name, t), r in rows.items() if name == "orig" and t.startswith(f"{task}:")]
        assert {r.extra["kind"] for r in by_kind} <= {"colour", "count", "presence", "position"} and len(by_kind) >= 2
        assert sum(r.n for r in by_kind) == 12 and all(r.metric == metric and r.status == "ok" for r in by_kind)
        assert sum(r.value * r.n for r in by_kind) / 12 == pytest.approx(row.value)  # the kinds partition the questions
        (docs_file,) = (tmp_path / "run" / "vqa" / "tasks").glob("*.jsonl")
        docs = [json.loads(line) for line in docs_file.read_text().splitlines()]
        for r in by_kind:
            kind_scores = np.load(tmp_path / "run" / r.per_item)
            assert kind_scores.tolist() == [s for s, d in zip(scores.tolist(), docs) if d["kind"] == r.extra["kind"]]
        gain = gains[("orig", task)]  # the same MLLM scored blind: its score minus the blind score
        assert gain.metric == f"{metric}_vision_gain" and gain.status == "ok" and gain.n == 12
        assert gain.value == pytest.approx(row.value - row.extra["blind_score"])
        bad = rows[("sft", task)]
        assert bad.status == "failed" and f"{broken / 'lm'} is missing" in bad.reason
    assert not stale.exists() and rows[("orig", "shapes_vqa")].value != pytest.approx(99.9)
    results_files = list((tmp_path / "run" / "vqa" / "lmms" / "orig").rglob("*_results.json"))
    assert len(results_files) == 1  # a real lmms-eval results file, then ingested


def test_protocol_mark_is_read_and_an_unreadable_mllm_json_is_left_to_the_loader(tmp_path):
    from benchmarks.suites.vqa import _protocol

    (tmp_path / "mllm.json").write_text(json.dumps({"format": "x", "protocol": "pivot-eval"}))
    assert _protocol(tmp_path) == {"protocol": "pivot-eval"}
    (tmp_path / "mllm.json").write_text("{not json")
    assert _protocol(tmp_path) == {}


def test_every_vqa_row_gets_its_vision_gain_and_an_mllm_that_ignores_its_image_measures_no_vision(tmp_path, tiny_mllm):
    from safetensors.torch import load_file, save_file

    blind = tmp_path / "ignores-image"  # the projector's output no longer depends on the image
    shutil.copytree(tiny_mllm, blind)
    weights = load_file(blind / "projector.safetensors")
    weights["fc2.weight"].zero_()
    save_file(weights, blind / "projector.safetensors")
    manifest = tmp_path / "lineage.toml"
    manifest.write_text(f'[[encoder]]\nname = "sees"\ncheckpoint = "{tiny_mllm}"\nrole = "original"\nmllm = "{tiny_mllm}"\n\n'
                        f'[[encoder]]\nname = "ignores"\ncheckpoint = "{blind}"\nrole = "pivot"\nbase = "sees"\nmllm = "{blind}"\n')
    assert run.main(["--encoders", str(manifest), "--suite", "vqa", "--vqa-tasks", "shapes_vqa,shapes_vqa_mc", "--vqa-items", "16",
                     "--data", DATA, "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"), "--no-report"]) == 0
    rows = read_rows(tmp_path / "run")
    scores = [r for r in rows if r.status == "ok" and not r.metric.endswith("_vision_gain")]
    gains = {(r.encoder, r.task, r.metric): r for r in rows if r.metric.endswith("_vision_gain")}
    assert scores and all((r.encoder, r.task, f"{r.metric}_vision_gain") in gains for r in scores)  # every VQA row has its gain
    for r in scores:
        gain = gains[(r.encoder, r.task, f"{r.metric}_vision_gain")]
        assert gain.value == pytest.approx(r.value - r.extra["blind_score"]) and gain.ci_low <= gain.value <= gain.ci_high
        if r.encoder == "ignores":  # same answers with and without the image: gain 0, not measuring vision
            assert gain.value == pytest.approx(0.0) and gain.ci_low == pytest.approx(0.0) and gain.ci_high == pytest.approx(0.0)
            assert not gain.extra["measures_vision"] and "does not measure vision" in r.extra["degenerate"]
    assert (tmp_path / "run" / "vqa" / "lmms-blind" / "sees").is_dir()
