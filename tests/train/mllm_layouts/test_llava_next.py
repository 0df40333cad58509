"""LLaVA-NeXT repository checkpoints: the transformers Llava they were written from (by the inverse of
transformers' conversion map) is what the gate reads back; pixels are the repository's processor's."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.train.llava_reference import QUESTIONS, our_logprobs, probe_images, transformers_logprobs
from train.mllm import MLLMError, load_mllm

QWEN_1_5 = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\n{q}<|im_end|>\n<|im_start|>assistant\n"


def test_reads_as_the_llava_it_was_written_from(llava_dirs, next_dir):
    mllm = load_mllm(next_dir)
    source = llava_dirs["siglip-qwen2"]
    images = probe_images()
    logp, pixels, prompts, answers = our_logprobs(mllm, images)
    from transformers import AutoConfig

    image_id = AutoConfig.from_pretrained(source).image_token_id
    reference = transformers_logprobs(source, prompts, answers, pixels, image_ids=(mllm.image_token_id, image_id))
    assert torch.allclose(logp, reference, atol=1e-4, rtol=0), (logp, reference)
    # The repository's surgery: the named tower has one layer more; the cut tower's last block feeds the projector.
    named = json.loads((next_dir / "siglip_tower" / "config.json").read_text())["num_hidden_layers"]
    assert mllm.encoder.num_layers == named - 1 and mllm.visual_layer == -1
    assert mllm.image_token_id == -200 and mllm.num_visual_tokens == 16
    assert mllm.source["dropped"] == {"image_newline (unused by a flat merge of one untiled image)": 1}


def test_prompt_is_the_qwen_1_5_conversation_split_at_the_image(next_dir):
    mllm = load_mllm(next_dir)
    assert mllm.prompt.text(mllm.tokenizer, QUESTIONS[0]) == QWEN_1_5.format(q=QUESTIONS[0])
    ids = mllm.prompt_ids(QUESTIONS[0])
    before, after = QWEN_1_5.format(q=QUESTIONS[0]).split("<image>")
    expected = mllm.tokenizer(before)["input_ids"] + [-200] * 16 + mllm.tokenizer(after)["input_ids"]
    assert ids == expected
    assert mllm.answer_ids("red") == mllm.tokenizer("red", add_special_tokens=False)["input_ids"] + [mllm.tokenizer.convert_tokens_to_ids("<|im_end|>")]


def test_pixels_are_the_repository_processors_after_pad(next_dir):
    """image_aspect_ratio pad: expand2square with the mean colour, then SigLipImageProcessor's steps."""
    from train.image_input import ProcessorTransform
    from train.mllm_check import llava_next_pixels

    mllm = load_mllm(next_dir)
    assert mllm.image_input.pad_to_square and mllm.preprocess.resize == "pad"
    for image in probe_images():
        side = max(image.size)
        from PIL import Image

        square = Image.new("RGB", (side, side), (127, 127, 127))
        square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        assert torch.equal(mllm.image_transform()(image), llava_next_pixels(square, mllm.image_input.processor))
    assert isinstance(mllm.image_transform(), ProcessorTransform)


def test_the_tower_config_comes_from_vision_config_or_a_local_mm_vision_tower(next_dir, tmp_path):
    from train.mllm_layouts import find_layout

    hub_named = tmp_path / "hub-named"
    shutil.copytree(next_dir, hub_named)
    config = json.loads((hub_named / "config.json").read_text())
    config["mm_vision_tower"] = "google/siglip2-tiny-patch8-32"
    (hub_named / "config.json").write_text(json.dumps(config))
    with pytest.raises(MLLMError, match="neither a local folder nor a tower this project knows.*--vision-config"):
        load_mllm(hub_named)
    read = find_layout(hub_named).read(hub_named, vision_config=next_dir / "siglip_tower")
    assert read.encoder.weights_hash == load_mllm(next_dir).encoder.weights_hash


def test_a_known_tower_whose_shapes_disagree_with_the_weights_is_refused(next_dir, tmp_path):
    folder = tmp_path / "known"
    shutil.copytree(next_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(mm_vision_tower="google/siglip2-so400m-patch16-384", mm_hidden_size=1152)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(MLLMError, match="shape disagrees with the config") as caught:
        load_mllm(folder)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("change, message", [
    ({"mm_projector_type": "mlp2x_res2x_gelu"}, "mm_projector_type 'mlp2x_res2x_gelu' is not read; this importer reads mlp2x_gelu and linear"),
    ({"image_aspect_ratio": "anyres_max_9"}, "image_aspect_ratio 'anyres_max_9' tiles the image"),
    ({"mm_patch_merge_type": "spatial_unpad"}, "mm_patch_merge_type 'spatial_unpad' appends model.image_newline"),
    ({"mm_vision_tower": "open_clip_hub:ViT-B-16"}, "picks its tower class by name"),
    ({"model_type": "llava_llama"}, "conversation template of a llama LM"),
])
def test_settings_it_does_not_reproduce_are_refused_by_name(next_dir, tmp_path, change, message):
    folder = tmp_path / "changed"
    shutil.copytree(next_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(change)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(MLLMError, match=message):
        load_mllm(folder)
