"""A checkpoint that cannot be read is reported by its real cause: what the file is (from its first bytes),
why it cannot be opened, or which setting names the wrong architecture, with the fix."""
from __future__ import annotations

import builtins
import dataclasses
import errno
import json
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

from encoders import CheckpointError, EncoderSpec, load_encoder, load_manifest, save_encoder_checkpoint
from encoders.__main__ import main as encoders_cli
from encoders.checkpoint import read_checkpoint
from tests.encoders.conftest import TIMM_CLS_VIT, TIMM_VIT, hf_vision_model, timm_model

ARCH, OPTIONS = TIMM_VIT
TORCH_ADVICE = ("weights_only", "Re-running", "set to False", "arbitrary code execution")


def _load(path, **kw):
    return load_encoder(path, arch=kw.pop("arch", ARCH), options=kw.pop("options", OPTIONS), **kw)


def _message(path, **kw) -> str:
    with pytest.raises(CheckpointError) as err:
        _load(path, **kw)
    message = str(err.value)
    assert str(path) in message and "fix:" in message
    assert not any(advice in message for advice in TORCH_ADVICE), message
    return message


@pytest.fixture(scope="module")
def state():
    return timm_model(ARCH, OPTIONS).state_dict()


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt"])
def test_a_safetensors_file_with_a_torch_name_says_rename(tmp_path, state, suffix):
    from safetensors.torch import save_file

    path = tmp_path / f"weights{suffix}"
    save_file(state, str(path))
    message = _message(path)
    assert f"this is a safetensors file named {suffix}" in message and "rename it to weights.safetensors" in message
    assert "pickled" not in message and "could execute code" not in message
    assert _load(path.rename(tmp_path / "weights.safetensors")).weights_hash  # the advice works


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_torch_file_named_safetensors_says_rename(tmp_path, state, legacy):
    path = tmp_path / "weights.safetensors"
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    message = _message(path)
    assert "this is a torch checkpoint" in message and "named .safetensors" in message and "rename it to weights.pt" in message
    assert "header too large" not in message and "download" not in message
    assert _load(path.rename(tmp_path / "weights.pt")).weights_hash


def test_an_unknown_extension_with_checkpoint_content_says_rename(tmp_path, state):
    from safetensors.torch import save_file

    path = tmp_path / "weights.npz"
    save_file(state, str(path))
    assert "this is a safetensors file named .npz" in (message := _message(path)) and "rename it to weights.safetensors" in message


def _zip_of_text(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")


NOT_CHECKPOINTS = {
    "empty": (lambda path: path.write_bytes(b""), "an empty file", "copy or download the checkpoint again"),
    "lfs": (lambda path: path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 9\n"), "Git LFS pointer", "git lfs pull"),
    "html": (lambda path: path.write_text("<!DOCTYPE html><html><body>Sign in</body></html>"), "web page", "direct link"),
    "pickle": (lambda path: path.write_bytes(pickle.dumps({"w": [1.0, 2.0]})), "Python pickle data", "not unpickled"),
    "npy": (lambda path: np.save(open(path, "wb"), np.zeros(3)), "NumPy", "convert the weights"),
    "zip": (_zip_of_text, "zip archive (first entry 'readme.txt')", "convert the weights"),
    "json": (lambda path: path.write_text(json.dumps({"w": [1, 2]})), "JSON text file", "convert the weights"),
}


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("kind", sorted(NOT_CHECKPOINTS))
def test_a_file_that_is_no_checkpoint_says_what_it_is(tmp_path, kind, suffix):
    write, what, fix = NOT_CHECKPOINTS[kind]
    path = tmp_path / f"weights{suffix}"
    write(path)
    message = _message(path)
    assert "not a checkpoint" in message and what in message and fix in message
    assert "refusing to load: the file contains pickled" not in message and "header too large" not in message


def test_random_bytes_are_not_called_a_dangerous_pickle(tmp_path):
    rng = np.random.default_rng(1)
    for number in range(100):
        path = tmp_path / f"junk{number}.pt"
        data = rng.integers(0, 256, size=int(rng.integers(16, 600)), dtype=np.uint8).tobytes()
        data = b"\x00" + data[1:] if data.startswith(b"\x80") else data  # a pickle opcode: told apart, tested above
        path.write_bytes(data)
        message = _message(path)
        assert "not a checkpoint" in message and "first bytes " + " ".join(f"{b:02x}" for b in data[:8]) in message
        assert "pickled Python objects" not in message


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_CHECKPOINT",))


def test_a_torch_file_with_code_names_the_blocked_global_and_never_quotes_torchs_advice(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(1), "payload": _Exploit()}, path)
    message = _message(path)
    assert "could execute code" in message and "system" in message and "torch.save(model.state_dict()" in message
    assert not (tmp_path / "PWNED_BY_CHECKPOINT").exists()


def test_a_truncated_torch_file_quotes_no_advice(tmp_path, state):
    path = tmp_path / "cut.pt"
    torch.save(state, path)
    path.write_bytes(path.read_bytes()[:-4000])
    message = _message(path)
    assert "truncated or corrupt" in message and "download the checkpoint again" in message


def test_a_symlink_loop_is_named(tmp_path):
    os.symlink(tmp_path / "b.pt", tmp_path / "a.pt")
    os.symlink(tmp_path / "a.pt", tmp_path / "b.pt")
    message = _message(tmp_path / "a.pt")
    assert "symbolic link loop" in message and "no such file" not in message and "corrupt" not in message


def test_a_dangling_symlink_names_its_target(tmp_path):
    os.symlink(tmp_path / "gone.pt", tmp_path / "link.pt")
    message = _message(tmp_path / "link.pt")
    assert f"symbolic link to {tmp_path / 'gone.pt'}, which does not exist" in message


@pytest.fixture
def unreadable(monkeypatch):
    """Make ``open`` refuse the named files as the OS does without read permission (tests run as root,
    where chmod 000 does not stop a read)."""
    refused: set[str] = set()
    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.path.abspath(os.fspath(file)) in refused:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    return refused


def test_an_unreadable_file_names_the_permission(tmp_path, state, unreadable):
    path = tmp_path / "locked.pt"
    torch.save(state, path)
    unreadable.add(str(path))
    message = _message(path)
    assert "no read permission" in message and "chmod u+r" in message
    assert "no such file" not in message and "corrupt" not in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file; test_an_unreadable_file_names_the_permission covers it")
def test_an_unreadable_file_names_the_permission_for_real(tmp_path, state):
    path = tmp_path / "locked.pt"
    torch.save(state, path)
    path.chmod(0)
    assert "no read permission" in _message(path)


def test_an_unreadable_config_of_a_model_directory_names_the_permission(tmp_path, unreadable):
    hf_vision_model("siglip").save_pretrained(tmp_path / "hf")
    unreadable.add(str(tmp_path / "hf" / "config.json"))
    with pytest.raises(CheckpointError, match="no read permission") as err:
        load_encoder(tmp_path / "hf")
    assert "config.json" in str(err.value)


def test_a_model_directory_whose_weights_are_the_other_format_names_the_hf_file_name(tmp_path):
    model = hf_vision_model("siglip")
    model.save_pretrained(tmp_path / "hf")
    weights = tmp_path / "hf" / "model.safetensors"
    torch.save(model.state_dict(), weights)
    with pytest.raises(CheckpointError, match="rename it to pytorch_model.bin"):
        load_encoder(tmp_path / "hf")


@pytest.fixture
def wrong_spec(tmp_path):
    """A project checkpoint whose embedded architecture is not the one its weights belong to."""
    other, options = TIMM_CLS_VIT
    return save_encoder_checkpoint(timm_model(other, options).state_dict(), {"family": "timm", "arch": ARCH, "options": OPTIONS}, tmp_path / "wrong.safetensors")


def test_an_embedded_arch_that_does_not_fit_its_weights_is_not_sent_round_in_a_circle(wrong_spec):
    with pytest.raises(CheckpointError) as err:
        load_encoder(wrong_spec)
    message = str(err.value)
    assert "embedded in this file" in message and "--arch cannot override it" in message and "save_encoder_checkpoint" in message
    assert "pass --arch" not in message and "(--arch)" not in message and "wrong --arch" not in message
    with pytest.raises(CheckpointError) as err:
        load_encoder(wrong_spec, arch=TIMM_CLS_VIT[0])
    message = str(err.value)
    assert "--arch asks for timm:vit_small_patch16_224" in message and "drop --arch" in message and "save_encoder_checkpoint" in message
    assert "pass --arch" not in message and "pass the matching one" not in message


def test_a_manifest_arch_that_conflicts_with_the_embedded_one_points_at_the_manifest(tmp_path, state):
    save_encoder_checkpoint(state, {"family": "timm", "arch": ARCH, "options": OPTIONS}, tmp_path / "e.safetensors")
    manifest = tmp_path / "lineage.toml"
    manifest.write_text('[[encoder]]\nname = "a"\ncheckpoint = "e.safetensors"\narch = "vit_small_patch16_224"\n')
    with pytest.raises(CheckpointError) as err:
        load_encoder(load_manifest(manifest)[0])
    message = str(err.value)
    assert f"the arch field of {manifest} (encoder 'a') asks for" in message and f"remove that arch field (or set it to {ARCH!r})" in message
    assert "--arch" not in message


def test_where_the_arch_came_from_is_a_field_that_runs_do_not_record(tmp_path, state):
    """``arch_source`` survives ``replace`` (an MLLM directory's tower keeps it) but is no part of the
    spec's record (config.json) or of its equality."""
    save_encoder_checkpoint(state, {"family": "timm", "arch": ARCH, "options": OPTIONS}, tmp_path / "e.safetensors")
    manifest = tmp_path / "lineage.toml"
    manifest.write_text('[[encoder]]\nname = "a"\ncheckpoint = "e.safetensors"\narch = "vit_small_patch16_224"\n')
    spec = load_manifest(manifest)[0]
    assert spec.arch_source == f"the arch field of {manifest} (encoder 'a')"
    assert dataclasses.replace(spec, mllm="m").arch_source == spec.arch_source
    record = spec.record()
    assert "arch_source" not in record and record["arch"] == "vit_small_patch16_224"
    assert EncoderSpec(**record) == spec and EncoderSpec(**record).arch_source == ""


def _mllm_dir(tmp_path, state):
    folder = tmp_path / "mllm"
    folder.mkdir()
    save_encoder_checkpoint(state, {"family": "timm", "arch": ARCH, "options": OPTIONS}, folder / "encoder.safetensors")
    (folder / "mllm.json").write_text(json.dumps({"format": "vision-encoder-eval-mllm", "version": 1, "visual_layer": -2}))
    return folder


def test_inspect_accepts_an_mllm_directory_as_benchmarks_run_does(tmp_path, state, capsys):
    folder = _mllm_dir(tmp_path, state)
    assert encoders_cli(["inspect", str(folder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["mllm"] == str(folder) and info["checkpoint"] == str(folder / "encoder.safetensors") and info["arch"] == ARCH
    assert encoders_cli(["inspect", str(folder)]) == 0
    assert "an MLLM directory" in capsys.readouterr().out
    from benchmarks.loading import load_run_encoder
    from encoders import EncoderSpec

    spec, encoder = load_run_encoder(EncoderSpec(checkpoint=str(folder)))
    assert encoder.weights_hash == info["weights_hash"] and spec.mllm == str(folder)


def test_reading_an_mllm_directory_as_a_checkpoint_names_its_vision_tower(tmp_path, state):
    folder = _mllm_dir(tmp_path, state)
    with pytest.raises(CheckpointError, match="an MLLM directory") as err:
        read_checkpoint(folder)
    assert str(folder / "encoder.safetensors") in str(err.value)
