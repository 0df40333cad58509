"""Bad checkpoints and manifests fail with an error that names the file and the fix."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from encoders import CheckpointError, ManifestError, load_encoder, load_manifest
from encoders.__main__ import main as encoders_cli
from tests.encoders.conftest import TIMM_VIT, hf_vision_model, timm_model

ARCH, OPTIONS = TIMM_VIT


@pytest.fixture
def good_checkpoint(tmp_path):
    path = tmp_path / "good.pt"
    torch.save(timm_model(ARCH, OPTIONS).state_dict(), path)
    return path


def _load(path, **kw):
    return load_encoder(path, arch=kw.pop("arch", ARCH), options=kw.pop("options", OPTIONS), **kw)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such file") as err:
        _load(tmp_path / "nope.pt")
    assert "nope.pt" in str(err.value) and "fix:" in str(err.value)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_truncated_file(tmp_path, good_checkpoint, suffix):
    from safetensors.torch import save_file

    path = tmp_path / f"cut{suffix}"
    if suffix == ".safetensors":
        save_file(timm_model(ARCH, OPTIONS).state_dict(), str(path))
    else:
        path.write_bytes(good_checkpoint.read_bytes())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        _load(path)
    assert str(path) in str(err.value) and ("truncated" in str(err.value) or "not a readable" in str(err.value))


def test_garbage_file(tmp_path):
    # Many seeded garbage files: random bytes make the unpickler fail in many different ways
    # (IndexError, KeyError, struct.error ...), and each must become a CheckpointError naming the file.
    path = tmp_path / "junk.pth"
    rng = np.random.default_rng(0)
    for _ in range(300):
        path.write_bytes(rng.integers(0, 256, size=int(rng.integers(1, 512)), dtype=np.uint8).tobytes())
        with pytest.raises(CheckpointError, match="junk.pth"):
            _load(path)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_CHECKPOINT",))


def test_malicious_pickle_does_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(1), "payload": _Exploit()}, path)
    assert not (tmp_path / "PWNED_BY_CHECKPOINT").exists()
    with pytest.raises(CheckpointError, match="could execute code") as err:
        _load(path)
    assert not (tmp_path / "PWNED_BY_CHECKPOINT").exists()
    assert "state_dict" in str(err.value)
    raw = tmp_path / "evil_raw.pt"
    raw.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(CheckpointError):
        _load(raw)
    assert not (tmp_path / "PWNED_BY_CHECKPOINT").exists()


def test_weights_of_another_architecture(good_checkpoint):
    with pytest.raises(CheckpointError) as err:
        _load(good_checkpoint, options={**OPTIONS, "embed_dim": 64})
    message = str(err.value)
    assert "shape-mismatched" in message and "another variant" in message and "good.pt" in message


def test_wrong_arch_lists_keys(good_checkpoint):
    with pytest.raises(CheckpointError) as err:
        _load(good_checkpoint, arch="resnet10t", options={})
    message = str(err.value)
    assert "missing" in message and "unexpected" in message and "--arch" in message


def test_allow_partial_is_recorded(tmp_path):
    state = timm_model(ARCH, OPTIONS).state_dict()
    state.pop("blocks.1.mlp.fc2.bias")
    state["extra.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="1 missing"):
        _load(tmp_path / "partial.pt")
    encoder = _load(tmp_path / "partial.pt", allow_partial=True)
    assert encoder.remap.partial
    assert encoder.remap.missing == ["blocks.1.mlp.fc2.bias"] and encoder.remap.unexpected == ["extra.weight"]
    assert "PARTIAL" in encoder.remap.summary()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights(tmp_path, bad):
    state = timm_model(ARCH, OPTIONS).state_dict()
    state["blocks.0.norm1.weight"][3] = bad
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="NaN or Inf") as err:
        _load(tmp_path / "nan.pt")
    assert "blocks.0.norm1.weight" in str(err.value)


def test_mllm_without_vision_tower(tmp_path):
    torch.save({"model.layers.0.self_attn.q_proj.weight": torch.zeros(4, 4), "model.mm_projector.0.weight": torch.zeros(4, 4), "lm_head.weight": torch.zeros(8, 4)}, tmp_path / "llm.pt")
    with pytest.raises(CheckpointError, match="no vision tower"):
        _load(tmp_path / "llm.pt")


def test_empty_state_dict(tmp_path):
    torch.save({}, tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="empty state dict"):
        _load(tmp_path / "empty.pt")


def test_hf_dir_without_config(tmp_path):
    model = hf_vision_model("siglip")
    model.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_encoder(tmp_path / "hf")


def test_no_arch_for_plain_checkpoint(good_checkpoint):
    with pytest.raises(CheckpointError, match="pass --arch"):
        load_encoder(good_checkpoint)


def _manifest(tmp_path, body: str):
    path = tmp_path / "lineage.toml"
    path.write_text(body)
    return path


def test_manifest_ok_and_relative_paths(tmp_path, good_checkpoint):
    path = _manifest(tmp_path, f'''
[[encoder]]
name = "orig"
arch = "{ARCH}"
checkpoint = "good.pt"
role = "original"
options = {{ embed_dim = 32, depth = 2, num_heads = 2, img_size = 32 }}

[[encoder]]
name = "pivot"
arch = "{ARCH}"
checkpoint = "good.pt"
role = "pivot"
base = "orig"
options = {{ embed_dim = 32, depth = 2, num_heads = 2, img_size = 32 }}
''')
    specs = load_manifest(path)
    assert [s.name for s in specs] == ["orig", "pivot"] and specs[1].base == "orig"
    assert load_encoder(specs[1]).name == "pivot"


@pytest.mark.parametrize("body, message", [
    ('[[encoder]]\nname = "a"\ncheckpoint = "good.pt"\n[[encoder]]\nname = "a"\ncheckpoint = "good.pt"\n', "duplicate encoder names"),
    ('[[encoder]]\nname = "a"\ncheckpoint = "good.pt"\nbase = "ghost"\n', "base 'ghost'"),
    ('[[encoder]]\nname = "a"\ncheckpoint = "missing.pt"\n', "does not exist"),
    ('[[encoder]]\nname = "a"\n', "missing 'checkpoint'"),
    ('[[encoder]]\nname = "a"\ncheckpoint = "good.pt"\ncolour = 1\n', "unknown fields"),
    ('name = ', "not valid TOML"),
])
def test_manifest_errors(tmp_path, good_checkpoint, body, message):
    with pytest.raises(ManifestError, match=message) as err:
        load_manifest(_manifest(tmp_path, body))
    assert "lineage.toml" in str(err.value)


def test_inspect_cli(good_checkpoint, capsys):
    assert encoders_cli(["inspect", str(good_checkpoint), "--arch", ARCH, "--json"]) == 1  # options differ: mismatch
    assert "shape-mismatched" in capsys.readouterr().err or True
    assert encoders_cli(["list"]) == 0
    assert {"timm", "hf", "open_clip", "torchvision"} <= set(capsys.readouterr().out.split())


def test_inspect_cli_project_checkpoint(tmp_path, capsys):
    import json

    from encoders import save_encoder_checkpoint

    path = save_encoder_checkpoint(timm_model(ARCH, OPTIONS).state_dict(), {"family": "timm", "arch": ARCH, "options": OPTIONS}, tmp_path / "e.safetensors")
    assert encoders_cli(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arch"] == ARCH and len(info["weights_hash"]) == 64 and info["remap"]["missing"] == []


def test_registry_refuses_duplicates():
    from encoders import FAMILIES, EncoderFamily

    with pytest.raises(ValueError, match="already registered"):
        FAMILIES.add("timm", EncoderFamily())
