"""PIVOT's evaluation protocol: a frozen encoder inside a fresh MLLM, for one encoder and for a lineage."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from encoders import load_encoder, load_manifest
from train.__main__ import main as train_main
from train.mllm import load_mllm

from .conftest import write_tiny_encoder


def _data_folder(shapes_files):
    return shapes_files["captions"].parent


def test_lineage_gets_fresh_mllms_with_frozen_encoders(tmp_path, shapes_files, tiny_lm_dir, monkeypatch):
    original = write_tiny_encoder(tmp_path / "orig.safetensors", seed=0)
    pivot = write_tiny_encoder(tmp_path / "pivot.safetensors", seed=1)
    manifest = tmp_path / "lineage.toml"
    # Checkpoints relative to the manifest: the written manifest must still find them from its own folder.
    manifest.write_text('[[encoder]]\nname = "orig"\ncheckpoint = "orig.safetensors"\nrole = "original"\n\n'
                        '[[encoder]]\nname = "piv"\ncheckpoint = "pivot.safetensors"\nrole = "pivot"\nbase = "orig"\nreplicate = 0\n')
    out = tmp_path / "pe"
    monkeypatch.chdir(tmp_path)  # a manifest named relative to the working directory, as users type it
    status = train_main(["pivot-eval", "--encoders", "lineage.toml", "--lm", str(tiny_lm_dir), "--data", str(_data_folder(shapes_files)),
                         "--out", str(out), "--global-batch", "8", "--micro-batch", "4", "--align-lr", "1e-2", "--instruct-lr", "1e-3", "--epochs", "0.3"])
    assert status == 0
    specs = {spec.name: spec for spec in load_manifest(out / "lineage.toml")}
    assert specs["piv"].role == "pivot" and specs["piv"].base == "orig" and Path(specs["piv"].checkpoint).resolve() == pivot.resolve()
    assert specs["piv"].replicate == 0 and specs["orig"].replicate is None  # replicate 0 is kept, not dropped as falsy
    lm_start = load_file(str(tiny_lm_dir / "model.safetensors"))
    for name, checkpoint in (("orig", original), ("piv", pivot)):
        mllm = load_mllm(specs[name].mllm)
        record = json.loads((out / name / "pivot_eval.json").read_text())
        assert mllm.encoder.weights_hash == load_encoder(checkpoint).weights_hash == record["encoder_weights_hash"]
        assert json.loads((Path(specs[name].mllm) / "mllm.json").read_text())["protocol"] == "pivot-eval"
        assert record["instruct"]["freeze_encoder"] is True and record["steps"] == {"align": 1, "instruct": 2}  # 8 captions; 46 questions = 6 steps/epoch x 0.3
        trained = mllm.lm.state_dict()
        changed = [k for k, v in lm_start.items() if k in trained and not (trained[k] == v).all()]
        assert changed, "the new LM trains in the second stage"
        init = load_mllm(out / name / "mllm-init")
        assert any(not (a == b).all() for a, b in zip(init.projector.state_dict().values(), mllm.projector.state_dict().values()))


def test_bad_input(tmp_path, tiny_lm_dir, capsys):
    encoder = write_tiny_encoder(tmp_path / "e.safetensors")
    assert train_main(["pivot-eval", "--encoder", str(encoder), "--lm", str(tiny_lm_dir), "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "captions.jsonl" in capsys.readouterr().err
    assert train_main(["pivot-eval", "--lm", str(tiny_lm_dir), "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "one of --encoder CKPT or --encoders" in capsys.readouterr().err
    from train.config import StageConfig
    from train.pivot_eval import PivotEvalData, pivot_eval

    with pytest.raises(ValueError, match="encoder frozen"):  # an instruction stage that would train the encoder
        pivot_eval(encoder, tiny_lm_dir, PivotEvalData(tmp_path, tmp_path), tmp_path / "o", instruct=StageConfig("pretrain", lr=1e-3))


def test_the_fresh_mllm_takes_the_prompt_layout_it_is_given(tmp_path, shapes_files, tiny_lm_dir):
    from train.config import stage_config
    from train.pivot_eval import PivotEvalData, pivot_eval

    encoder = write_tiny_encoder(tmp_path / "e.safetensors")
    data = PivotEvalData(shapes_files["captions"], shapes_files["preferences"])
    fast = {"global_batch": 8, "micro_batch": 4, "epochs": 0.2, "save_every": 0}
    stages = {"align": stage_config("align", lr=1e-2, **fast), "instruct": stage_config("pretrain", lr=1e-3, freeze_encoder=True, **fast)}
    mllm = pivot_eval(encoder, tiny_lm_dir, data, tmp_path / "pe", prompt_layout="question-image", progress=False, log=lambda m: None, **stages)
    assert load_mllm(mllm).prompt_layout == "question-image"
    assert load_mllm(tmp_path / "pe" / "mllm-init").prompt_layout == "question-image"
