"""One probe image and prompt through a project MLLM and through transformers' Llava: the check behind
``import-mllm`` and ``export-mllm``.

:func:`our_side` computes the MLLM's view first (so a caller can free the MLLM before the reference loads);
:func:`probe_models` compares it with a transformers Llava directory (its ``AutoProcessor``'s prompt and
pixels, its forward's logits); :func:`probe_over_own_tensors` with transformers' Llava assembled over the
MLLM's own modules, for layouts transformers has no class for. A :class:`ProbeResult` records the largest
absolute logit difference over the answer positions, whether the prompt ids are equal, the largest pixel
difference and the tolerance.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .mllm_parts import MLLM

DEFAULT_TOLERANCE = 1e-4


@dataclass
class ProbeResult:
    """One probe image and prompt through two models: the largest absolute logit difference over the answer
    positions, whether the prompt's token ids and pixels are the same, and the tolerance it is held to."""

    max_logit_difference: float
    prompt_ids_equal: bool
    pixel_difference: float
    tolerance: float
    reference: str

    @property
    def passed(self) -> bool:
        return self.prompt_ids_equal and self.pixel_difference <= self.tolerance and self.max_logit_difference <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {"max_logit_difference": self.max_logit_difference, "prompt_ids_equal": self.prompt_ids_equal, "pixel_difference": self.pixel_difference,
                "tolerance": self.tolerance, "reference": self.reference, "passed": self.passed}


@dataclass(frozen=True)
class ProbeItem:
    """An image (PIL, RGB), a question about it and an answer whose tokens are scored."""

    image: Any
    question: str
    answer: str


def default_probe() -> ProbeItem:
    """A 53 x 37 px image (not square: resizing and padding are exercised) with a red disc on a gradient."""
    from PIL import Image

    y, x = np.mgrid[0:37, 0:53]
    pixels = np.stack([x * 4, y * 6, (x + y) * 2], axis=-1).astype(np.float64)
    disc = (x - 30) ** 2 + (y - 18) ** 2 < 81
    pixels[disc] = (230, 20, 20)
    return ProbeItem(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB"), "what colour is the circle ?", "red .")


@dataclass
class ProbeSide:
    """One model's view of the probe: prompt ids (image placeholder once per visual token), answer ids,
    pixels (3, R, R) and the answer positions' logits (K, V) in fp32."""

    prompt: list[int]
    answer: list[int]
    pixels: torch.Tensor
    logits: torch.Tensor


@torch.no_grad()
def our_side(mllm: MLLM, probe: ProbeItem) -> ProbeSide:
    pixels = mllm.image_transform()(probe.image)
    batch = mllm.prepare(pixels[None].to(mllm.device, mllm.dtype), [probe.question], [probe.answer])
    logits, _, _ = mllm.answer_logits(batch)
    return ProbeSide(mllm.prompt_ids(probe.question), mllm.answer_ids(probe.answer), pixels, logits.cpu())


@torch.no_grad()
def reference_logits(model, prompt: list[int], answer: list[int], pixels: torch.Tensor) -> torch.Tensor:
    """transformers Llava logits (K, V) at the positions that predict ``answer`` after ``prompt``."""
    ids = torch.tensor([prompt + answer])
    logits = model(input_ids=ids, pixel_values=pixels[None].to(model.dtype)).logits[0].float()
    return logits[len(prompt) - 1 : len(prompt) + len(answer) - 1]


def compare(ours: ProbeSide, prompt: list[int], pixels: torch.Tensor, logits: torch.Tensor, tolerance: float, reference: str,
            image_ids: tuple[int, int] | None = None) -> ProbeResult:
    """``image_ids`` (ours, theirs): the image placeholder's id on each side, when they differ."""
    mine = [image_ids[1] if token == image_ids[0] else token for token in ours.prompt] if image_ids else ours.prompt
    return ProbeResult(float((logits - ours.logits).abs().max()), prompt == mine, float((pixels - ours.pixels).abs().max()), tolerance, reference)


def probe_models(ours: ProbeSide, llava_dir: str | os.PathLike, probe: ProbeItem, *, tolerance: float = DEFAULT_TOLERANCE, dtype: torch.dtype | None = None,
                 backend: str | None = None, image_ids: tuple[int, int] | None = None, name: str = "") -> ProbeResult:
    """An MLLM's view of ``probe`` (:func:`our_side`, computed before, so the MLLM can be freed first)
    against the transformers Llava directory ``llava_dir`` (``AutoProcessor``'s prompt and pixels;
    ``backend`` picks its image processor implementation). The reference's weights are cast to ``dtype``
    (the MLLM's precision), then computed at fp32 like the MLLM's. ``image_ids``: see :func:`compare`;
    ``name``: how the reference is named in the result (default ``llava_dir``)."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(llava_dir, local_files_only=True, **({"backend": backend} if backend else {}))
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": probe.question}]}], add_generation_prompt=True)
    inputs = processor(text=text, images=probe.image, return_tensors="pt")
    model = LlavaForConditionalGeneration.from_pretrained(llava_dir, dtype=dtype or torch.float32, local_files_only=True).float().eval()
    logits = reference_logits(model, inputs["input_ids"][0].tolist(), ours.answer, ours.pixels)
    del model
    return compare(ours, inputs["input_ids"][0].tolist(), inputs["pixel_values"][0], logits, tolerance,
                   f"transformers LlavaForConditionalGeneration + AutoProcessor of {name or llava_dir}", image_ids)


def llava_next_pixels(image, processor) -> torch.Tensor:
    """The LLaVA-NeXT repository's ``SigLipImageProcessor.preprocess`` steps (convert_to_rgb, to_numpy_array,
    resize, rescale, normalize, channels first) with transformers' functions, as the repository calls them."""
    from transformers.image_transforms import (
        convert_to_rgb,
        normalize,
        rescale,
        resize,
        to_channel_dimension_format,
    )
    from transformers.image_utils import (
        ChannelDimension,
        PILImageResampling,
        to_numpy_array,
    )

    settings = processor.to_dict()
    size = (settings["size"]["height"], settings["size"]["width"])
    array = to_numpy_array(convert_to_rgb(image))
    array = resize(array, size=size, resample=PILImageResampling.BICUBIC, data_format=ChannelDimension.FIRST)
    array = rescale(array, scale=1 / 255, data_format=ChannelDimension.FIRST)
    array = normalize(array, mean=settings["image_mean"], std=settings["image_std"], data_format=ChannelDimension.FIRST)
    return torch.from_numpy(to_channel_dimension_format(array, ChannelDimension.FIRST, ChannelDimension.FIRST).copy())


def probe_over_own_tensors(mllm: MLLM, probe: ProbeItem, tolerance: float) -> ProbeResult:
    """``mllm`` against transformers' Llava assembled over its own modules (a layout transformers has no class
    for); for the LLaVA-NeXT SigLIP processor, its pixels against the repository's steps."""
    from .image_input import PadToSquare
    from .transformers_llava import as_transformers_llava

    ours = our_side(mllm, probe)
    spare = mllm.lm.get_input_embeddings().num_embeddings - 1  # any id works: the Llava only looks for it
    prompt = [spare if token == mllm.image_token_id else token for token in ours.prompt]
    llava = as_transformers_llava(mllm, spare)
    logits = reference_logits(llava, prompt, ours.answer, ours.pixels)
    pixels = ours.pixels
    processor = mllm.image_input.processor
    if mllm.source.get("format") == "llava-next" and type(processor).__name__.startswith("Siglip"):
        image = probe.image.convert("RGB")
        if mllm.image_input.pad_to_square:
            image = PadToSquare(tuple(int(value * 255) for value in processor.image_mean))(image)
        pixels = llava_next_pixels(image, processor)
    result = compare(ours, prompt, pixels, logits, tolerance, "transformers LlavaForConditionalGeneration over the imported tensors; pixels: the LLaVA-NeXT SigLipImageProcessor steps")
    result.prompt_ids_equal = True  # the same ids by construction (transformers has no prompt of its own for this layout)
    return result


