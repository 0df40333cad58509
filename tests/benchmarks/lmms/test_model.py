"""The lmms-eval model of the project's MLLMs: discovered by lmms-eval's own registry through the
entry point, and its request methods checked against the MLLM itself."""
from __future__ import annotations

import configparser
import importlib.metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

lmms_eval = pytest.importorskip("lmms_eval")

from lmms_eval.api.instance import GenerationResult, Instance  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]


def test_setup_cfg_declares_the_entry_point():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = [line.strip() for line in config["options.entry_points"]["lmms_eval.models"].splitlines() if line.strip()]
    assert lines == ["vee_mllm = benchmarks.lmms.model:manifest"]


def test_entry_point_is_discovered_by_lmms_evals_registry(tmp_path, monkeypatch):
    """A dist-info carrying setup.cfg's entry point (what `pip install -e .` writes) on sys.path: lmms-eval's
    ModelRegistryV2 loads it from the `lmms_eval.models` group and resolves vee_mllm to our class."""
    from lmms_eval.models.registry_v2 import ModelRegistryV2

    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    dist = tmp_path / "vision_encoder_eval_probe-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: vision-encoder-eval-probe\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text("[lmms_eval.models]\n" + config["options.entry_points"]["lmms_eval.models"].strip() + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    registry = ModelRegistryV2()
    assert "vee_mllm" not in registry.list_model_names()
    registry.load_entrypoint_manifests()
    from benchmarks.lmms.model import ProjectMLLM

    assert registry.get_model_class("vee_mllm") is ProjectMLLM
    assert registry.resolve("vee_mllm").model_type == "simple"


def _requests(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(request_type=kind, arguments=a, idx=0, metadata={"task": "t", "doc_id": i, "repeats": 1}) for i, a in enumerate(args)]


@pytest.fixture(scope="module")
def model(tiny_mllm):
    from benchmarks.lmms.model import ProjectMLLM

    instance = ProjectMLLM(pretrained=str(tiny_mllm), batch_size=3)
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40), (20, 20, 20)]
    docs = [{"image": Image.new("RGB", (48, 48), colour), "q": "What colour is the circle?", "a": name}
            for colour, name in zip(colours, ["red", "green", "blue", "yellow", "black"])]
    instance.task_dict = {"t": {"test": docs}}
    return instance, docs


def _visual(doc):
    return [doc["image"]]


def _answer_losses(mllm, images, questions, answers) -> list[float]:
    batch = mllm.prepare(images, questions, answers)
    with torch.no_grad():
        logps, _ = mllm.answer_logprobs(batch)
    return (-logps / (batch.labels[:, 1:] != -100).sum(1)).tolist()


def test_loglikelihood_is_the_answers_mean_token_loss_and_batching_does_not_change_it(model):
    instance, docs = model
    requests = _requests("loglikelihood", [(d["q"], " " + d["a"], _visual, i, "t", "test") for i, d in enumerate(docs)])
    out = instance.loglikelihood(requests)
    assert all(isinstance(item, GenerationResult) for item in out)
    losses = [item.text[0] for item in out]
    mllm = instance.mllm
    images = torch.stack([instance.transform(d["image"]) for d in docs])
    assert losses == pytest.approx(_answer_losses(mllm, images, [d["q"] for d in docs], [d["a"] for d in docs]), abs=1e-4)
    single = [instance.loglikelihood([r])[0].text[0] for r in requests]
    assert single == pytest.approx(losses, abs=1e-4)
    assert all(v > 0 for v in losses) and all(isinstance(item.text[1], bool) for item in out)
    # The choices of one document share its image pass; each still gets its own answer's loss.
    pair = instance.loglikelihood(_requests("loglikelihood", [(docs[0]["q"], " " + a, _visual, 0, "t", "test") for a in ("red", "blue")]))
    expected = _answer_losses(mllm, images[:1].repeat(2, 1, 1, 1), [docs[0]["q"]] * 2, ["red", "blue"])
    assert [item.text[0] for item in pair] == pytest.approx(expected, abs=1e-4)


def test_multiple_choice_scoring_picks_the_answer_the_mllm_finds_most_likely(model):
    """lmms-eval's multiple_choice takes argmin over what loglikelihood returns (its models return a loss):
    returning log-probabilities instead inverted every multiple-choice accuracy (shapes_vqa_mc colour 11.7%)."""
    instance, docs = model
    answers = ("red", "blue", "green")
    mllm = instance.mllm
    images = torch.stack([instance.transform(docs[0]["image"])] * len(answers))
    with torch.no_grad():
        logps, _ = mllm.answer_logprobs(mllm.prepare(images, [docs[0]["q"]] * len(answers), list(answers)))
    returned = [item.text[0] for item in instance.loglikelihood(_requests("loglikelihood", [(docs[0]["q"], " " + a, _visual, 0, "t", "test") for a in answers]))]
    assert int(np.argmin(returned)) == int(torch.argmax(logps))


def test_generate_until_matches_mllm_generate_and_cuts_at_stop_strings(model):
    instance, docs = model
    requests = _requests("generate_until", [(d["q"], {"max_new_tokens": 4, "until": ["\n"]}, _visual, i, "t", "test") for i, d in enumerate(docs)])
    answers = instance.generate_until(requests)
    images = torch.stack([instance.transform(d["image"]) for d in docs])
    assert answers == [a.split("\n")[0] for a in instance.mllm.generate(images, [d["q"] for d in docs], max_new_tokens=4)]
    first = answers[0].split(" ")[0] if answers[0] else ""
    if first:
        stopped = instance.generate_until(_requests("generate_until", [(docs[0]["q"], {"max_new_tokens": 4, "until": [first]}, _visual, 0, "t", "test")]))
        assert stopped == [answers[0].split(first)[0]]


def test_multi_round_follows_doc_to_text_until_it_stops(model):
    instance, docs = model
    calls = []

    def doc_to_text(doc, previous_output=None, round_idx=None, previous_round_info=None):
        calls.append((round_idx, list(previous_output)))
        return [doc["image"]], "How many shapes are there?", round_idx == 3, previous_output, {"round": round_idx}

    out = instance.generate_until_multi_round(_requests("generate_until_multi_round", [(docs[0]["q"], {"max_new_tokens": 3}, _visual, doc_to_text, 0, "t", "test")]))
    assert len(out) == 1 and len(out[0]) == 3 and all(isinstance(text, str) for text in out[0])
    assert [round_idx for round_idx, _ in calls] == [1, 2, 3] and len(calls[-1][1]) == 3


def test_document_without_an_image_is_a_clear_error(model):
    instance, docs = model
    with pytest.raises(ValueError, match="t document 0 has no image; vee_mllm answers questions about exactly one image"):
        instance.generate_until(_requests("generate_until", [("q", {}, lambda doc: [], 0, "t", "test")]))


def test_mllm_without_lm_directory(tiny_mllm, tmp_path):
    import shutil

    from benchmarks.lmms.model import ProjectMLLM
    from train.mllm import MLLMError

    broken = tmp_path / "broken"
    shutil.copytree(tiny_mllm, broken)
    shutil.rmtree(broken / "lm")
    with pytest.raises(MLLMError, match=r"lm: missing from the MLLM directory"):
        ProjectMLLM(pretrained=str(broken))


@pytest.fixture(scope="module")
def blind_model(tiny_mllm, model):
    from benchmarks.lmms.model import ProjectMLLM

    instance = ProjectMLLM(pretrained=str(tiny_mllm), batch_size=3, blind="true")  # as lmms-eval passes model_args text
    instance.task_dict = model[0].task_dict
    return instance, model[1]


def test_blind_answers_and_log_likelihoods_do_not_depend_on_the_image(model, blind_model):
    seeing, docs = model
    blind, _ = blind_model
    # The same question about a red and a blue image: the seeing model scores them differently, the blind one identically.
    pairs = [(docs[0]["q"], " red", _visual, i, "t", "test") for i in (0, 2)]
    seen = [item.text[0] for item in seeing.loglikelihood(_requests("loglikelihood", pairs))]
    unseen = [item.text[0] for item in blind.loglikelihood(_requests("loglikelihood", pairs))]
    assert abs(seen[0] - seen[1]) > 1e-4
    assert unseen[0] == pytest.approx(unseen[1], abs=1e-6)
    asked = [(docs[0]["q"], {"max_new_tokens": 4}, _visual, i, "t", "test") for i in range(len(docs))]
    answers = blind.generate_until(_requests("generate_until", asked))
    assert len(set(answers)) == 1
    # What the blind model sees: the encoder's mean colour at its input size (zero after normalisation, up to rounding).
    preprocess = blind.mllm.encoder.preprocess
    constant = blind._pixels(docs[0]["image"])
    assert constant.shape == (3, preprocess.resolution, preprocess.resolution) and constant.abs().max() < 0.02
    mean_image = Image.new("RGB", (preprocess.resolution,) * 2, tuple(int(round(255 * m)) for m in preprocess.mean))
    assert answers[0] == blind.mllm.generate(seeing.transform(mean_image).unsqueeze(0), [docs[0]["q"]], max_new_tokens=4)[0]


def test_blind_flag_values_and_the_runner_passes_it(tiny_mllm):
    from benchmarks.lmms.model import ProjectMLLM, _flag
    from benchmarks.lmms.runner import Job, lmms_eval_args

    assert _flag("blind", True) and _flag("blind", "True") and not _flag("blind", "false") and not _flag("blind", False)
    with pytest.raises(ValueError, match=r"--model_args blind='maybe' is not true or false; write blind=true or blind=false"):
        ProjectMLLM(pretrained=str(tiny_mllm), blind="maybe")
    job = Job("m", "/x/mllm", "/x/out", ["shapes_vqa"])
    assert lmms_eval_args(job, None)[3] == "pretrained=/x/mllm"
    job.blind = True
    assert lmms_eval_args(job, "/x/tasks")[3] == "pretrained=/x/mllm,blind=true" and lmms_eval_args(job, "/x/tasks")[-2:] == ["--include_path", "/x/tasks"]


@pytest.mark.parametrize("name, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_dtype_reaches_the_tower_the_projector_and_the_lm_and_scores_stay_close(tiny_mllm, model, name, dtype):
    from benchmarks.lmms.model import ProjectMLLM

    seeing, docs = model
    low = ProjectMLLM(pretrained=str(tiny_mllm), batch_size=3, dtype=name)
    low.task_dict = seeing.task_dict
    mllm = low.mllm
    for part in (mllm.encoder.model, mllm.projector, mllm.lm):
        assert {p.dtype for p in part.parameters()} == {dtype}, type(part).__name__
    assert {p.dtype for p in seeing.mllm.lm.parameters()} == {torch.float32}  # the default stays fp32
    requests = _requests("loglikelihood", [(d["q"], " " + d["a"], _visual, i, "t", "test") for i, d in enumerate(docs)])
    full = [item.text[0] for item in seeing.loglikelihood(requests)]
    half = [item.text[0] for item in low.loglikelihood(requests)]
    assert half == pytest.approx(full, abs=0.05) and half != full  # computed in the lower precision, not fp32
    asked = _requests("generate_until", [(d["q"], {"max_new_tokens": 3}, _visual, i, "t", "test") for i, d in enumerate(docs)])
    assert all(isinstance(text, str) for text in low.generate_until(asked))


def test_bad_dtype_and_device_map_are_one_line_errors(tiny_mllm):
    from benchmarks.lmms.model import ProjectMLLM

    with pytest.raises(ValueError, match=r"^vee_mllm: --model_args dtype='int8' is not one of fp32, bf16, fp16; write e.g. dtype=bf16$"):
        ProjectMLLM(pretrained=str(tiny_mllm), dtype="int8")
    with pytest.raises(ValueError, match=r"^vee_mllm: --model_args device_map='auto' is not supported \(the MLLM loads whole onto one device\)"):
        ProjectMLLM(pretrained=str(tiny_mllm), device_map="auto")
    assert ProjectMLLM(pretrained=str(tiny_mllm), device_map="").device == torch.device("cpu")  # lmms-eval's empty default is fine
