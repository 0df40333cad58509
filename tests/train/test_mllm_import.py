"""python -m train import-mllm: a checked import (recorded in mllm.json), and bad sources refused in one line
with nothing written."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.train.llava_reference import our_logprobs, probe_images
from train.mllm import MLLMError, load_mllm
from train.mllm_import import import_mllm


@pytest.mark.parametrize("name", ["siglip-qwen2", "clip-llama-full"])
def test_import_check_is_recorded_and_the_import_reads_as_its_source(llava_dirs, tmp_path, name):
    out = import_mllm(llava_dirs[name], tmp_path / "imported", log=lambda line: None)
    meta = json.loads((out / "mllm.json").read_text())
    check = meta["import_check"]
    assert check["passed"] and check["prompt_ids_equal"] and check["max_logit_difference"] <= 1e-4 and check["pixel_difference"] == 0.0
    assert meta["source"]["format"] == "llava-hf" and meta["source"]["dtype"] == "fp32"
    assert torch.equal(our_logprobs(load_mllm(out), probe_images())[0], our_logprobs(load_mllm(llava_dirs[name]), probe_images())[0])


def test_llava_next_import_is_checked_over_its_own_tensors_and_bf16_is_written_as_bf16(next_dir, tmp_path):
    from safetensors import safe_open

    out = import_mllm(next_dir, tmp_path / "next", dtype="bf16", log=lambda line: None)
    check = json.loads((out / "mllm.json").read_text())["import_check"]
    assert check["passed"] and check["max_logit_difference"] <= 1e-4 and "over the imported tensors" in check["reference"]
    with safe_open(str(out / "encoder.safetensors"), "pt") as handle:
        assert {handle.get_tensor(key).dtype for key in handle.keys()} == {torch.bfloat16}
    assert load_mllm(out).lm.dtype == torch.float32  # read back at fp32 unless asked


def test_a_failing_check_writes_nothing(llava_dirs, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(MLLMError, match="does not reproduce transformers' model"):
        import_mllm(llava_dirs["siglip-qwen2"], out, tolerance=-1.0, log=lambda line: None)
    assert not out.exists() and not list(tmp_path.iterdir())


def _copy(source, folder):
    shutil.copytree(source, folder)
    return folder


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _bad_sources(llava_dirs, next_dir, root):
    """(name, folder, expected words) for each bad input of the issue."""
    from safetensors.torch import load_file, save_file

    cases = []
    sharded = _copy(llava_dirs["siglip-bf16-sharded"], root / "missing-shard")
    next(iter(sorted(sharded.glob("model-0000*.safetensors")))).unlink()
    cases.append(("missing shard", sharded, "shard named in model.safetensors.index.json is missing"))
    projector = _copy(next_dir, root / "projector")
    _edit_json(projector / "config.json", mm_projector_type="pooler")
    cases.append(("unknown projector type", projector, "mm_projector_type 'pooler' is not read"))
    no_tower = _copy(llava_dirs["siglip-qwen2"], root / "no-tower")
    state = load_file(str(no_tower / "model.safetensors"))
    save_file({k: v for k, v in state.items() if not k.startswith("vision_tower.")}, str(no_tower / "model.safetensors"), metadata={"format": "pt"})
    cases.append(("tower absent", no_tower, "tensors missing"))
    shapes = _copy(llava_dirs["siglip-qwen2"], root / "shapes")
    config = json.loads((shapes / "config.json").read_text())
    config["vision_config"]["intermediate_size"] = 48
    (shapes / "config.json").write_text(json.dumps(config))
    cases.append(("tower config vs weights", shapes, "shape disagrees with the config"))
    processor = _copy(llava_dirs["siglip-qwen2"], root / "processor")
    data = json.loads((processor / "processor_config.json").read_text())
    data["image_processor"]["size"] = {"height": 48, "width": 48}
    (processor / "processor_config.json").write_text(json.dumps(data))
    cases.append(("processor size", processor, "makes 48 px images but the tower's image_size is 32 px"))
    length = _copy(llava_dirs["siglip-qwen2"], root / "seq-length")
    _edit_json(length / "config.json", image_seq_length=17)
    cases.append(("image_seq_length", length, "image_seq_length 17 disagrees with the tower's grid"))
    tokenizer = _copy(llava_dirs["siglip-qwen2"], root / "tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(next_dir / name, tokenizer / name)  # the same tokenizer without <image>
    cases.append(("tokenizer without <image>", tokenizer, "the tokenizer has no <image> token"))
    return cases


def test_bad_sources_are_one_line_errors_and_write_nothing(llava_dirs, next_dir, tmp_path):
    root = tmp_path / "sources"
    root.mkdir()
    for name, folder, words in _bad_sources(llava_dirs, next_dir, root):
        out = tmp_path / f"out-{folder.name}"
        with pytest.raises(MLLMError) as caught:
            import_mllm(folder, out, log=lambda line: None)
        message = str(caught.value)
        assert words in message and "\n" not in message, (name, message)
        assert not out.exists() and not out.with_name(out.name + ".import").exists(), name


def test_the_command_line_exits_2_with_one_line(llava_dirs, tmp_path, capsys):
    from train.__main__ import main

    source = _copy(llava_dirs["siglip-qwen2"], tmp_path / "bad")
    _edit_json(source / "config.json", image_seq_length=3)
    assert main(["import-mllm", str(source), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert main(["import-mllm", str(llava_dirs["clip-default-layers"]), str(tmp_path / "ok")]) == 0
    assert "import check: max |logit difference|" in capsys.readouterr().out
