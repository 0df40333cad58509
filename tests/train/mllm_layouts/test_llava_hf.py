"""transformers Llava directories read by the gate equal transformers' own processor and forward (fp32, 1e-4)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.train.llava_reference import QUESTIONS, our_logprobs, probe_images, processor_inputs, transformers_logprobs
from train.mllm import MLLMError, load_mllm

TOLERANCE = 1e-4


@pytest.mark.parametrize("name", ["siglip-qwen2", "clip-llama-full", "clip-default-layers", "siglip-bf16-sharded"])
def test_prompt_pixels_and_answer_logprobs_equal_transformers(llava_dirs, name):
    source = llava_dirs[name]
    mllm = load_mllm(source)
    images = probe_images()
    logp, pixels, prompts, answers = our_logprobs(mllm, images)
    for question, image, prompt, ours in zip(QUESTIONS, images, prompts, pixels):
        ids, reference_pixels = processor_inputs(source, question, image)
        assert prompt == ids  # the chat template, the processor's special tokens (Llama's BOS), the image tokens' count
        assert torch.equal(ours, reference_pixels)
    reference = transformers_logprobs(source, prompts, answers, pixels)
    assert torch.allclose(logp, reference, atol=TOLERANCE, rtol=0), (logp, reference)
    assert mllm.num_visual_tokens == json.loads((source / "config.json").read_text())["image_seq_length"]


def test_both_hub_namings_read_the_same_model(llava_dirs, tmp_path):
    """transformers 4.x wrote vision_tower.vision_model.*, language_model.model.*, language_model.lm_head.*;
    transformers 5 names them model.vision_tower.*, model.language_model.*, lm_head.*."""
    from safetensors.torch import load_file, save_file

    source = llava_dirs["siglip-qwen2"]
    state = load_file(str(source / "model.safetensors"))
    names = {"v4": lambda k: k.replace("vision_tower.", "vision_tower.vision_model.", 1),
             "v5": lambda k: ("model." + k.replace("language_model.model.", "language_model.", 1) if not k.startswith("language_model.lm_head.") else k.replace("language_model.", "", 1))}
    results = {}
    for label, rename in names.items():
        folder = tmp_path / label
        shutil.copytree(source, folder)
        save_file({rename(key): value for key, value in state.items()}, str(folder / "model.safetensors"), metadata={"format": "pt"})
        results[label] = our_logprobs(load_mllm(folder), probe_images())[0]
    if "model.vision_tower.embeddings.patch_embedding.weight" not in {names["v5"](k) for k in state}:
        pytest.fail("the v5 renaming does not produce transformers 5's names")
    assert torch.equal(results["v4"], results["v5"])
    assert torch.equal(results["v4"], our_logprobs(load_mllm(source), probe_images())[0])


def test_dtype_reaches_the_tower_the_projector_and_the_lm(llava_dirs):
    mllm = load_mllm(llava_dirs["siglip-qwen2"], dtype=torch.bfloat16)
    assert {p.dtype for p in mllm.encoder.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in mllm.projector.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in mllm.lm.parameters()} == {torch.bfloat16}
    logp, *_ = our_logprobs(mllm, probe_images())
    assert torch.isfinite(logp).all()


def test_onevision_is_refused_with_the_config_keys_named(tmp_path):
    from train.tiny_llava import build_llava_onevision_hf

    source = build_llava_onevision_hf(tmp_path / "ov")
    with pytest.raises(MLLMError, match="image_grid_pinpoints.*image_newline") as caught:
        load_mllm(source)
    assert "\n" not in str(caught.value)
    from train.mllm_layouts import find_layout

    encoder = find_layout(source).read_encoder(source)  # its tower alone still serves the encoder suites
    assert encoder.arch == "SiglipVisionModel" and encoder.num_layers == 2


def test_a_siglip_tower_under_default_and_an_embedding_layer_are_refused(llava_dirs, tmp_path):
    for change, message in (({"vision_feature_select_strategy": "default"}, "drops the first token, which a SigLIP tower"),
                            ({"vision_feature_layer": 0}, "hidden_states\\[0\\].*embeddings"),
                            ({"vision_feature_layer": [-1, "x"]}, "neither an int nor a list of ints")):
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        shutil.copytree(llava_dirs["siglip-qwen2"], folder)
        config = json.loads((folder / "config.json").read_text())
        config.update(change)
        (folder / "config.json").write_text(json.dumps(config))
        with pytest.raises(MLLMError, match=message):
            load_mllm(folder)
