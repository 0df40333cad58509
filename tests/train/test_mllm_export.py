"""python -m train export-mllm --format llava-hf: transformers (and lmms-eval's llava_hf) load the result, and it
answers as the project MLLM did; what a transformers Llava cannot hold is refused with the reason."""
from __future__ import annotations

import json

import pytest
import torch

from tests.train.llava_reference import QUESTIONS, our_logprobs, probe_images, processor_inputs, transformers_logprobs
from train.mllm import MLLMError, load_mllm
from train.mllm_export import export_llava_hf


@pytest.mark.parametrize("source", ["siglip-qwen2", "clip-llama-full", "next"])
def test_the_export_answers_as_the_mllm(llava_dirs, next_dir, tmp_path, source):
    mllm = load_mllm(next_dir if source == "next" else llava_dirs[source])
    out = export_llava_hf(mllm, tmp_path / "hf")
    assert json.loads((out / "export.json").read_text())["check"]["passed"]
    images = probe_images()
    logp, pixels, prompts, answers = our_logprobs(mllm, images)
    from transformers import AutoConfig

    exported_image = AutoConfig.from_pretrained(out).image_token_id
    assert torch.allclose(transformers_logprobs(out, prompts, answers, pixels, image_ids=(mllm.image_token_id, exported_image)), logp, atol=1e-4, rtol=0)
    ids, _ = processor_inputs(out, QUESTIONS[0], images[0])
    assert ids == [exported_image if token == mllm.image_token_id else token for token in prompts[0]]


def test_trained_from_a_llava_then_exported_answers_as_the_trained_mllm(llava_dirs, shapes_files, tmp_path):
    """train stage --stage dpo --init LLAVA_DIR -> export-mllm -> LlavaForConditionalGeneration.from_pretrained."""
    from train.config import stage_config
    from train.loop import train_stage

    config = stage_config("dpo", epochs=1.0, global_batch=4, micro_batch=2, lr=1e-3, save_every=0)
    result = train_stage(llava_dirs["siglip-qwen2"], shapes_files["preferences"], tmp_path / "dpo", config, device="cpu", progress=False, log=lambda line: None)
    trained = load_mllm(result.mllm_dir)
    before = load_mllm(llava_dirs["siglip-qwen2"])
    assert trained.encoder.weights_hash != before.encoder.weights_hash  # the encoder did train
    out = export_llava_hf(trained, tmp_path / "dpo-hf")
    logp, pixels, prompts, answers = our_logprobs(trained, probe_images())
    assert torch.allclose(transformers_logprobs(out, prompts, answers, pixels), logp, atol=1e-4, rtol=0)
    assert not torch.allclose(our_logprobs(before, probe_images())[0], logp, atol=1e-4, rtol=0)


@pytest.mark.parametrize("source", ["siglip-qwen2", "next"])
def test_lmms_evals_own_llava_hf_loads_the_export(llava_dirs, next_dir, tmp_path, source):
    from lmms_eval.models.simple.llava_hf import LlavaHf

    mllm = load_mllm(next_dir if source == "next" else llava_dirs[source])
    out = export_llava_hf(mllm, tmp_path / "hf")
    model = LlavaHf(pretrained=str(out), device="cpu", device_map="cpu", dtype="float32")
    assert type(model.model).__name__ == "LlavaForConditionalGeneration"
    # lmms-eval's llava_hf renders "<image>\n{question}" with the tokenizer's chat template: the MLLM's own prompt.
    text = model.tokenizer.apply_chat_template([{"role": "user", "content": f"<image>\n{QUESTIONS[0]}"}], tokenize=False, add_generation_prompt=True)
    assert text == mllm.prompt.text(mllm.tokenizer, QUESTIONS[0])


def test_towers_transformers_llava_cannot_hold_are_refused(tiny_mllm_dir, tmp_path):
    with pytest.raises(MLLMError, match="vision tower is timm:vit_small_patch16_224; LlavaForConditionalGeneration holds transformers"):
        export_llava_hf(load_mllm(tiny_mllm_dir), tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
