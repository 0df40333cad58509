"""The demo's control lineages: a token-shuffled copy of the Stage-1 MLLM and a seed-only retraining."""
from __future__ import annotations

import shutil

import pytest
import torch

from encoders import load_manifest
from train.controls import make_shuffled_mllm, write_control_lineage
from train.mllm import load_mllm


def _fake_lineage(folder, mllm_dir, seeds=("", "-s1")):
    for stage in ("pretrain", *(f"sft{suffix}" for suffix in seeds)):
        shutil.copytree(mllm_dir, folder / stage / "mllm")
        shutil.copy(mllm_dir / "encoder.safetensors", folder / stage / "encoder.safetensors")
    return folder


def test_the_shuffled_mllm_differs_only_in_where_its_tokens_sit(tiny_mllm_dir, tmp_path):
    out = make_shuffled_mllm(tiny_mllm_dir, tmp_path / "shuffled")
    base, control = load_mllm(tiny_mllm_dir), load_mllm(out)
    assert control.encoder.weights_hash != base.encoder.weights_hash
    assert control.encoder.options["control"] == {"kind": "token_shuffle", "seed": 0}
    for a, b in zip(base.projector.state_dict().values(), control.projector.state_dict().values()):
        assert torch.equal(a, b)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = base.encoder.features(images, layers=[-2]), control.encoder.features(images, layers=[-2])
    order = control.encoder.model.patch_drop.order
    assert torch.allclose(a.patch_tokens[:, order], b.patch_tokens, atol=1e-5) and not torch.allclose(a.patch_tokens, b.patch_tokens, atol=1e-3)


def test_control_lineage_pairs_each_control_with_its_reference(tiny_mllm_dir, tmp_path):
    manifest = write_control_lineage(_fake_lineage(tmp_path / "lineage", tiny_mllm_dir))
    specs = {spec.name: spec for spec in load_manifest(manifest)}
    assert specs["control-shuffled"].base == "control-stage1" and specs["control-sft-s1"].base == "control-sft"
    assert {specs["control-stage1"].role, specs["control-sft"].role} == {"original"}
    assert load_mllm(specs["control-shuffled"].mllm).encoder.options["control"]["kind"] == "token_shuffle"
    made = (tmp_path / "lineage" / "controls" / "shuffled-mllm" / "mllm.json").stat().st_mtime_ns
    write_control_lineage(tmp_path / "lineage")  # reused, not rewritten
    assert (tmp_path / "lineage" / "controls" / "shuffled-mllm" / "mllm.json").stat().st_mtime_ns == made


def test_control_lineage_needs_a_second_seed(tiny_mllm_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="--replicates 2 or more"):
        write_control_lineage(_fake_lineage(tmp_path / "lineage", tiny_mllm_dir, seeds=("",)))
