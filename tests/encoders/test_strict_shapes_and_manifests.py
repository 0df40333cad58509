"""Strict loading refuses converter resampling (unless allowed, then recorded); bad manifests are
refused with the file, the entry and the fix."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from encoders import CheckpointError, ManifestError, load_encoder, load_manifest
from tests.encoders.conftest import timm_model

ARCH = "vit_small_patch16_224"
SMALL = {"embed_dim": 32, "depth": 1, "num_heads": 2}


def _save(model: torch.nn.Module, path):
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(path))
    return path


@pytest.fixture
def grid_7x7(tmp_path):
    """A /16 ViT trained at 112 px: a 7x7 position-embedding grid (+1 CLS)."""
    return _save(timm_model(ARCH, {**SMALL, "img_size": 112}), tmp_path / "vit112.safetensors")


def test_position_embedding_resample_is_refused_with_both_shapes_and_the_fix(grid_7x7):
    with pytest.raises(CheckpointError) as err:
        load_encoder(grid_7x7, arch=ARCH, options=SMALL)  # 224 px: 14x14 grid
    message = str(err.value)
    assert "vit112.safetensors" in message and "(1, 50, 32)" in message and "(1, 197, 32)" in message
    assert "img_size" in message and "--allow-resample" in message


def test_patch_embedding_resample_is_refused(tmp_path):
    path = _save(timm_model(ARCH, {**SMALL, "img_size": 64, "patch_size": 32}), tmp_path / "p32.safetensors")
    with pytest.raises(CheckpointError, match=r"patch_embed\.proj\.weight.*\(32, 3, 32, 32\) -> \(32, 3, 16, 16\)"):
        load_encoder(path, arch=ARCH, options={**SMALL, "img_size": 128, "patch_size": 16})


def test_allow_resample_loads_and_records_it(grid_7x7):
    encoder = load_encoder(grid_7x7, arch=ARCH, options=SMALL, allow_resample=True)
    assert encoder.remap.resampled and "pos_embed" in encoder.remap.resampled[0]
    assert "RESAMPLED" in encoder.remap.summary()  # the summary goes into every result row's extra["remap"]
    assert encoder.remap.to_dict()["resampled"] == encoder.remap.resampled


def test_matching_img_size_loads_without_resampling(grid_7x7):
    encoder = load_encoder(grid_7x7, arch=ARCH, options={**SMALL, "img_size": 112})
    assert encoder.remap.resampled == [] and "RESAMPLED" not in encoder.remap.summary()


def test_allow_resample_is_recorded_in_rows_and_keeps_other_results(tmp_path, grid_7x7):
    from benchmarks import run
    from benchmarks.results import read_frame

    good = _save(timm_model(ARCH, {**SMALL, "img_size": 32}), tmp_path / "good.safetensors")
    manifest = tmp_path / "lineage.toml"
    manifest.write_text(
        f'[[encoder]]\nname = "good"\ncheckpoint = "{good}"\narch = "{ARCH}"\noptions = {{ embed_dim = 32, depth = 1, num_heads = 2, img_size = 32 }}\n\n'
        f'[[encoder]]\nname = "resampled"\ncheckpoint = "{grid_7x7}"\narch = "{ARCH}"\nbase = "good"\n'
        f'options = {{ embed_dim = 32, depth = 1, num_heads = 2, img_size = 32 }}\n'
    )
    common = ["--encoders", str(manifest), "--suite", "cls", "--data", "shapes:n=100:n_val=20:seed=0:size=32",
              "--cache-dir", str(tmp_path / "cache"), "--workers", "0", "--linear-epochs", "1", "--no-report"]
    assert run.main([*common, "--out", str(tmp_path / "strict")]) == 1
    frame = read_frame(tmp_path / "strict")
    failed = frame[frame.status == "failed"]
    assert set(failed.encoder) == {"resampled"} and "--allow-resample" in failed.reason.iloc[0]
    assert (frame[frame.encoder == "good"].status == "ok").all()  # the other encoder's results are kept
    assert run.main([*common, "--out", str(tmp_path / "allowed"), "--allow-resample"]) == 0
    rows = read_frame(tmp_path / "allowed")
    assert all("RESAMPLED" in extra["remap"] for extra in rows[rows.encoder == "resampled"].extra)


# ------------------------------------------------------------------ manifests


def _manifest(tmp_path, body: str, checkpoint: bool = True):
    if checkpoint:
        (tmp_path / "a.pt").write_bytes(b"x")
    path = tmp_path / "lineage.toml"
    path.write_text(body)
    return path


MANIFESTS = [
    ("name-not-a-string", '[[encoder]]\nname = 1\ncheckpoint = "a.pt"\n', ["encoder #1", "name = 1", "a string"]),
    ("options-not-a-table", '[[encoder]]\nname = "a"\ncheckpoint = "a.pt"\noptions = "img_size=384"\n', ["options", "a table"]),
    ("allow-partial-not-bool", '[[encoder]]\nname = "a"\ncheckpoint = "a.pt"\nallow_partial = "yes"\n', ["allow_partial", "true or false"]),
    ("mllm-not-a-string", '[[encoder]]\nname = "a"\ncheckpoint = "a.pt"\nmllm = 3\n', ["mllm = 3", "a string"]),
    ("vqa-results-missing", '[[encoder]]\nname = "a"\ncheckpoint = "a.pt"\nvqa_results = "lmms/none"\n', ["vqa_results", "does not exist", "fix the path"]),
    ("replicate-not-an-integer", '[[encoder]]\nname = "a"\ncheckpoint = "a.pt"\nreplicate = "1"\n', ["replicate = '1'", "a whole number"]),
    ("replicate-a-bool", '[[encoder]]\nname = "a"\ncheckpoint = "a.pt"\nreplicate = true\n', ["replicate = True", "a whole number"]),
    ("replicate-negative", '[[encoder]]\nname = "a"\ncheckpoint = "a.pt"\nreplicate = -1\n', ["replicate = -1", "0 or more"]),
    ("unknown-field", '[[encoder]]\nname = "a"\ncheckpoint = "a.pt"\nchekpoint = "b"\n', ["unknown fields", "chekpoint", "allowed"]),
    ("missing-checkpoint-field", '[[encoder]]\nname = "a"\n', ["missing 'checkpoint'", "name and checkpoint"]),
    ("empty-name", '[[encoder]]\nname = " "\ncheckpoint = "a.pt"\n', ["missing 'name'"]),
    ("checkpoint-not-found", '[[encoder]]\nname = "a"\ncheckpoint = "nope.pt"\n', ["nope.pt", "does not exist", "relative paths"]),
    ("base-cycle", '[[encoder]]\nname = "a"\ncheckpoint = "a.pt"\nbase = "b"\n[[encoder]]\nname = "b"\ncheckpoint = "a.pt"\nbase = "a"\n', ["base cycle", "a -> b -> a"]),
    ("base-unknown", '[[encoder]]\nname = "a"\ncheckpoint = "a.pt"\nbase = "zzz"\n', ["base 'zzz'", "not an encoder of this manifest"]),
    ("base-self", '[[encoder]]\nname = "a"\ncheckpoint = "a.pt"\nbase = "a"\n', ["names itself"]),
    ("duplicate-names", '[[encoder]]\nname = "a"\ncheckpoint = "a.pt"\n[[encoder]]\nname = "a"\ncheckpoint = "a.pt"\n', ["duplicate encoder names"]),
    ("not-toml", '[[encoder]\nname = ', ["not valid TOML"]),
    ("no-entries", 'title = "x"\n', ["no [[encoder]] entries"]),
    ("encoder-not-a-table-array", 'encoder = ["a"]\n', ["not a table", "[[encoder]]"]),
]


@pytest.mark.parametrize("body,needles", [(m[1], m[2]) for m in MANIFESTS], ids=[m[0] for m in MANIFESTS])
def test_bad_manifest(tmp_path, body, needles):
    path = _manifest(tmp_path, body)
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    message = str(err.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


def test_manifest_is_a_directory_or_binary(tmp_path):
    with pytest.raises(ManifestError, match="is a directory"):
        load_manifest(tmp_path)
    binary = tmp_path / "ckpt.toml"
    binary.write_bytes(b"\x80\x81\xff" * 10)
    with pytest.raises(ManifestError, match="not a UTF-8 text file"):
        load_manifest(binary)


def test_valid_optional_fields_still_load(tmp_path):
    (tmp_path / "mllm").mkdir()
    path = _manifest(tmp_path, '[[encoder]]\nname = "a"\ncheckpoint = "a.pt"\nmllm = "mllm"\nallow_resample = true\noptions = { img_size = 64 }\n')
    (spec,) = load_manifest(path)
    assert spec.mllm == str(tmp_path / "mllm") and spec.allow_resample is True and spec.options == {"img_size": 64}
    assert spec.replicate is None


def test_replicates_of_an_arm_load_with_their_index(tmp_path):
    body = '[[encoder]]\nname = "o"\ncheckpoint = "a.pt"\nrole = "original"\n' + "".join(
        f'[[encoder]]\nname = "sft-{i}"\ncheckpoint = "a.pt"\nrole = "sft"\nbase = "o"\nreplicate = {i}\n' for i in range(3))
    specs = load_manifest(_manifest(tmp_path, body))
    assert [spec.replicate for spec in specs] == [None, 0, 1, 2]
