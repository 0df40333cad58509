"""``python -m train import-mllm``: any MLLM layout the gate reads, written as a project MLLM directory, with
an import check against transformers' own model.

The check sends one probe image and prompt (:func:`default_probe`) through the written MLLM (read back at
fp32) and through transformers: for a transformers Llava source, ``LlavaForConditionalGeneration`` and
``AutoProcessor`` loaded from the source itself (weights cast to the import's dtype first, as the import
casts them); for a LLaVA-NeXT source, for which transformers has no class, transformers' Llava built over the
imported tensors (:func:`train.mllm_export.as_transformers_llava`), with the pixels checked against the
repository's own ``SigLipImageProcessor`` steps. Recorded in mllm.json's ``import_check``: the largest
absolute logit difference over the answer positions, whether the prompt's token ids are equal, the largest
pixel difference, the tolerance (default 1e-4). A failed check is an error and nothing is written; models
are compared one after the other, so two copies of the weights are never in memory together.
"""
from __future__ import annotations

import gc
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .mllm import MLLM, MLLM_FILE, MLLMError, load_mllm, replace_folder, save_mllm
from .mllm_export import ProbeResult

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_TOLERANCE = 1e-4


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
    from transformers.image_transforms import convert_to_rgb, normalize, rescale, resize, to_channel_dimension_format
    from transformers.image_utils import ChannelDimension, PILImageResampling, to_numpy_array

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
    from .mllm_export import as_transformers_llava

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


def import_mllm(source: str | os.PathLike, out: str | os.PathLike, *, dtype: str = "fp32", vision_config: str | os.PathLike | None = None,
                tolerance: float = DEFAULT_TOLERANCE, probe: ProbeItem | None = None, log=print) -> Path:
    """Read ``source`` through the gate, write it to ``out`` as a project MLLM directory, check it (module
    docstring); returns ``out``. MLLMError (nothing written) when the check fails."""
    from .mllm_layouts import find_layout

    source, out = Path(source), Path(out)
    if dtype not in DTYPES:
        raise MLLMError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    layout = find_layout(source)
    options = {"vision_config": vision_config} if vision_config else {}
    mllm = layout.read(source, dtype=DTYPES[dtype], **options)
    tmp = out.with_name(out.name + ".import")
    shutil.rmtree(tmp, ignore_errors=True)
    save_mllm(mllm, tmp)
    del mllm
    gc.collect()
    probe = probe or default_probe()
    try:
        check = _check(layout.name, source, tmp, probe, tolerance, DTYPES[dtype])
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if check is not None and not check.passed:
        shutil.rmtree(tmp, ignore_errors=True)
        raise MLLMError(f"{source}: the import does not reproduce transformers' model ({json.dumps(check.to_dict())}); nothing was written")
    meta = json.loads((tmp / MLLM_FILE).read_text())
    meta["import_check"] = check.to_dict() if check is not None else {"passed": None, "reason": f"transformers cannot build a {layout.name} model"}
    meta["source"] = {**meta.get("source", {}), "format": layout.name, "path": str(source.resolve()), "dtype": dtype}
    (tmp / MLLM_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    replace_folder(tmp, out)
    log(f"import check: max |logit difference| {meta['import_check'].get('max_logit_difference')} (tolerance {tolerance})")
    return out


def _check(layout: str, source: Path, written: Path, probe: ProbeItem, tolerance: float, dtype: torch.dtype) -> ProbeResult | None:
    """The import check of the written MLLM (read back at fp32) for a source of ``layout``."""
    mllm = load_mllm(written, dtype=torch.float32)
    if layout == "llava-hf":
        ours = our_side(mllm, probe)
        del mllm
        gc.collect()
        return probe_models(ours, source, probe, tolerance=tolerance, dtype=dtype)
    from .mllm_export import exportable_problem

    if layout == "llava-next" and not exportable_problem(mllm):
        return probe_over_own_tensors(mllm, probe, tolerance)
    return None
