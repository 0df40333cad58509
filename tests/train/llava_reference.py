"""Tiny transformers Llava / LlavaOnevision directories and LLaVA-NeXT checkpoints, and the reference
computations the importers are held to: transformers' own processor and forward."""
from __future__ import annotations

import numpy as np
import pytest
import torch

QUESTIONS = ("what colour is the circle ?", "is there a square ?")
ANSWERS = ("red .", "no")


def probe_images():
    """Two non-square images (resize, crop and pad are exercised)."""
    from PIL import Image

    rng = np.random.RandomState(0)
    return [Image.fromarray((rng.rand(40, 53, 3) * 255).astype("uint8")), Image.fromarray((rng.rand(61, 37, 3) * 255).astype("uint8"))]


@pytest.fixture(scope="session")
def llava_dirs(tmp_path_factory):
    """name -> a transformers Llava directory: SigLIP + Qwen2 (full), CLIP + Llama (full, layer -2, BOS),
    CLIP + Qwen2 (default, layers [-2, -1], gelu_pytorch_tanh), SigLIP + Qwen2 sharded in bf16."""
    from train.tiny_llava import TinyLlavaConfig, build_llava_hf

    root = tmp_path_factory.mktemp("llava")
    configs = {
        "siglip-qwen2": TinyLlavaConfig(),
        "clip-llama-full": TinyLlavaConfig(tower="clip", lm="llama", strategy="full", layer=-2),
        "clip-default-layers": TinyLlavaConfig(tower="clip", strategy="default", layer=(-2, -1), act="gelu_pytorch_tanh"),
        "siglip-bf16-sharded": TinyLlavaConfig(dtype="bfloat16", max_shard_size="30KB", seed=1),
    }
    return {name: build_llava_hf(root / name, config) for name, config in configs.items()}


@pytest.fixture(scope="session")
def next_dir(llava_dirs, tmp_path_factory):
    """The SigLIP + Qwen2 Llava in the LLaVA-NeXT repository's layout (pad, flat, image_newline present)."""
    from train.tiny_llava import write_llava_next_layout

    return write_llava_next_layout(llava_dirs["siglip-qwen2"], tmp_path_factory.mktemp("next") / "llava-next-qwen")


def transformers_logprobs(llava_dir, prompts: list[list[int]], answers: list[list[int]], pixels: torch.Tensor, image_ids: tuple[int, int] | None = None) -> torch.Tensor:
    """Summed answer log-probabilities from transformers' LlavaForConditionalGeneration (fp32), one item at a
    time. ``image_ids`` (ours, theirs) maps the image placeholder."""
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(llava_dir, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for prompt, answer, image in zip(prompts, answers, pixels):
            if image_ids:
                prompt = [image_ids[1] if token == image_ids[0] else token for token in prompt]
            logits = model(input_ids=torch.tensor([prompt + answer]), pixel_values=image[None]).logits[0].float()
            logp = torch.log_softmax(logits[len(prompt) - 1 : len(prompt) + len(answer) - 1], -1)
            out.append(logp.gather(-1, torch.tensor(answer)[:, None]).sum())
    return torch.stack(out)


def processor_inputs(llava_dir, question: str, image):
    """(input_ids, pixel_values) as transformers' AutoProcessor makes them from the chat template."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(llava_dir)
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}], add_generation_prompt=True)
    inputs = processor(text=text, images=image, return_tensors="pt")
    return inputs["input_ids"][0].tolist(), inputs["pixel_values"][0]


def our_logprobs(mllm, images) -> tuple[torch.Tensor, torch.Tensor, list[list[int]], list[list[int]]]:
    """(summed answer log-probs of the batch, pixels, prompt ids, answer ids) from the project MLLM."""
    transform = mllm.image_transform()
    pixels = torch.stack([transform(image) for image in images])
    with torch.no_grad():
        logp, _ = mllm.answer_logprobs(mllm.prepare(pixels.to(mllm.dtype), list(QUESTIONS), list(ANSWERS)))
    return logp.float(), pixels, [mllm.prompt_ids(q) for q in QUESTIONS], [mllm.answer_ids(a) for a in ANSWERS]
