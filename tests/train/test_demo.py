"""The demo lineage at toy size: K Stage-2 replicates per arm from one Stage-1 model, their manifest
entries (replicate = i, replicate 0 under today's names) and each replicate's pivot-eval MLLM."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from encoders import load_manifest

TOY = {"epochs": 0.25, "global_batch": 8, "micro_batch": 8, "save_every": 0}


@pytest.fixture
def toy_demo(monkeypatch):
    """train.demo with every setting shrunk (tiny ViT, 1-layer LM, 8 images, a few steps per stage)."""
    from dataclasses import replace

    from train import demo, original
    from train.config import stage_config
    from train.tiny_lm import TinyLMConfig

    # Another recipe than the shipped original's: the toy lineage trains its own (tests/train/test_original.py covers the copy).
    monkeypatch.setattr(original, "ORIGINAL", replace(original.ORIGINAL, options={"img_size": 32, "embed_dim": 32, "depth": 2, "num_heads": 2},
                                             data="shapes:n=10:n_val=4:seed=3:size=32", epochs=1, batch_size=10))
    monkeypatch.setattr(demo, "LM", TinyLMConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64))
    monkeypatch.setattr(demo, "STAGE1_DATA", "shapes:n=8:seed=1:size=32")
    monkeypatch.setattr(demo, "STAGE2_DATA", "shapes:n=8:seed=2:size=32")
    monkeypatch.setattr(demo, "STAGES", {name: stage_config(name, lr=1e-3, **TOY) for name in ("align", "pretrain", "sft", "dpo")})
    monkeypatch.setattr(demo, "PIVOT_EVAL_STAGES", {"align": stage_config("align", lr=1e-3, **TOY),
                                                    "instruct": stage_config("pretrain", lr=1e-3, freeze_encoder=True, **TOY)})
    return demo


def test_replicates_train_each_stage2_arm_k_times_from_one_stage1_model(toy_demo, tmp_path, monkeypatch):
    import train.loop
    import train.vit_pretrain

    trainings, messages = [], []
    for module, name in ((train.loop, "train_stage"), (train.vit_pretrain, "pretrain_vit")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _real=real, **k: trainings.append(messages[-1]) or _real(*a, **k))
    out = tmp_path / "lineage"
    manifest = toy_demo.make_demo_lineage(out, replicates=2, progress=False, log=messages.append)
    # The count it announces before the first training is the count it runs.
    assert messages[0].startswith(f"demo lineage: {toy_demo.training_count(2)} trainings to run") and toy_demo.training_count(2) == 17
    # The toy's original is another recipe than the shipped one, so it is trained too, and says why first.
    assert len(trainings) == 17 and trainings[0].startswith("original encoder: training it (") and messages[1] == trainings[0]
    specs = load_manifest(manifest)
    assert [(s.name, s.role, s.base, s.replicate) for s in specs] == [
        ("demo-vit", "original", "", None),
        ("demo-vit-sft", "sft", "demo-vit", 0), ("demo-vit-pivot", "pivot", "demo-vit", 0),
        ("demo-vit-sft-s1", "sft", "demo-vit", 1), ("demo-vit-pivot-s1", "pivot", "demo-vit", 1),
    ]
    for stage in ("sft", "dpo"):
        first, second = (json.loads((out / folder / "stage.json").read_text()) for folder in (stage, f"{stage}-s1"))
        assert first["identity"]["start"] == second["identity"]["start"] == str((out / "pretrain" / "mllm").resolve())
        assert (first["identity"]["config"]["seed"], second["identity"]["config"]["seed"]) == (0, 1)
        assert first["steps"] == second["steps"]
        # Another seed, another Stage-2 run: the encoders differ.
        a, b = (load_file(str(out / folder / "encoder.safetensors")) for folder in (stage, f"{stage}-s1"))
        assert any(not (a[key] == b[key]).all() for key in a)
    pivot = {s.name: s for s in load_manifest(out / toy_demo.PIVOT_EVAL_MANIFEST)}
    assert sorted(pivot) == sorted(s.name for s in specs)
    assert {name: s.replicate for name, s in pivot.items()} == {s.name: s.replicate for s in specs}
    assert all(Path(s.mllm).is_dir() for s in pivot.values())
    # One prompt layout for every MLLM of the lineage (the lmms model prompts as mllm.json says): the Stage-1 and
    # Stage-2 MLLMs and the fresh PIVOT-protocol ones alike, so their VQA numbers compare like with like.
    layouts = {folder: json.loads((Path(folder) / "mllm.json").read_text())["prompt_layout"]
               for folder in [out / "pretrain" / "mllm", out / "sft" / "mllm", out / "dpo-s1" / "mllm", *(s.mllm for s in pivot.values())]}
    assert set(layouts.values()) == {toy_demo.PROMPT_LAYOUT} == {"question-image"}, layouts
    summary = json.loads((out / toy_demo.DONE_FILE).read_text())
    assert summary["replicates"] == 2 and summary["recipe"]["replicates"] == 2
    # Same recipe: reused. Another replicate count is another recipe.
    messages = []
    toy_demo.make_demo_lineage(out, replicates=2, progress=False, log=messages.append)
    assert any("reusing" in m for m in messages)
    assert toy_demo.recipe_hash(1) != toy_demo.recipe_hash(2)


def test_replicates_must_be_a_whole_number_of_at_least_one(capsys, tmp_path):
    from train.__main__ import main

    assert main(["demo", "--out", str(tmp_path / "x"), "--replicates", "0"]) == 2
    assert "--replicates '0': must be >= 1 and <= 16 (each one adds 6 trainings" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
