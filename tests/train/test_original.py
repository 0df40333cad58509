"""The shipped demo original: its recipe check, and what the demo does with it (copy it, or retrain and say why)."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest

from encoders import load_encoder
from train import original

TINY = {"options": {"img_size": 32, "embed_dim": 32, "depth": 2, "num_heads": 2}, "data": "shapes:n=10:n_val=4:seed=3:size=32", "epochs": 1, "batch_size": 10}


def test_the_shipped_original_was_made_by_this_codes_recipe():
    shipped, wanted = original.shipped_recipe_hash(), original.original_recipe_hash()
    assert shipped == wanted, (
        f"train/assets/{original.SHIPPED.name} was trained under recipe {shipped}, but train/original.py's recipe is now {wanted} "
        f"(settings, or the source of {', '.join(original.RECIPE_SOURCES)}, or torch/timm changed). Regenerate it with "
        f"`{original.REGENERATE}` (about 15 minutes on 2 cores) and commit train/assets.")


def test_the_shipped_original_is_an_encoder_and_its_sidecar_says_how_it_was_made():
    encoder = load_encoder(str(original.SHIPPED))
    assert encoder.arch == original.ORIGINAL.arch
    made = json.loads(original.SIDECAR.read_text())
    assert made["made_by"] == original.REGENERATE and made["seconds"] > 0 and made["recipe"]["settings"]["epochs"] == original.ORIGINAL.epochs
    assert made["val_accuracy"]["type_top1"] > 50  # chance is 10
    assert original.SHIPPED.stat().st_size < 8 * 2**20  # a few MB in the repository


def test_a_matching_recipe_copies_the_shipped_file_without_training(tmp_path, monkeypatch):
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "w.safetensors").write_bytes(b"weights")
    (assets / "w.json").write_text(json.dumps({"recipe_hash": original.original_recipe_hash(), "val_accuracy": {"type_top1": 90.0}, "seconds": 3.0, "machine": "m"}))
    monkeypatch.setattr(original, "SHIPPED", assets / "w.safetensors")
    monkeypatch.setattr(original, "SIDECAR", assets / "w.json")
    monkeypatch.setattr("train.vit_pretrain.pretrain_vit", lambda *a, **k: pytest.fail("trained although the shipped original matches"))
    messages = []
    accuracy, source = original.place_original(tmp_path / "original.safetensors", log=messages.append)
    assert (tmp_path / "original.safetensors").read_bytes() == b"weights" and source == "shipped" and accuracy == {"type_top1": 90.0}
    assert "the shipped one" in messages[0]


def test_another_recipe_retrains_and_says_why_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(original, "ORIGINAL", replace(original.ORIGINAL, **TINY))
    messages = []
    accuracy, source = original.place_original(tmp_path / "original.safetensors", log=messages.append, progress=False)
    assert source == "trained" and set(accuracy) == {"type_top1", "colour_top1"}
    assert load_encoder(str(tmp_path / "original.safetensors")).embed_dim == 32
    reason = messages[0]
    assert "training it" in reason and original.shipped_recipe_hash() in reason and original.original_recipe_hash() in reason and original.REGENERATE in reason


def test_original_only_writes_the_weights_and_the_sidecar(tmp_path, monkeypatch):
    monkeypatch.setattr(original, "ORIGINAL", replace(original.ORIGINAL, **TINY))
    weights = original.train_original(tmp_path, log=lambda _: None, progress=False)
    made = json.loads((tmp_path / original.SIDECAR.name).read_text())
    assert weights == tmp_path / original.SHIPPED.name and made["recipe_hash"] == original.original_recipe_hash()
    assert made["recipe"]["sources"].keys() == set(original.RECIPE_SOURCES)
    # The hash follows the source: an edited pretraining file is another recipe.
    root = tmp_path / "root"
    for name in original.RECIPE_SOURCES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(original.REPOSITORY_ROOT / name, root / name)
    monkeypatch.setattr(original, "REPOSITORY_ROOT", root)
    before = original.original_recipe_hash()
    (root / "train/vit_pretrain.py").write_text((root / "train/vit_pretrain.py").read_text() + "\n# edited\n")
    assert original.original_recipe_hash() != before
