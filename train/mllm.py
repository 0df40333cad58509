"""The one gate to MLLMs: ``load_mllm`` reads every MLLM layout (:mod:`train.mllm_layouts`: the project's own
directories, transformers Llava, the LLaVA-NeXT repository's checkpoints); ``build_mllm`` makes a new one and
``save_mllm`` writes the project's layout. This is the module of ``train/`` the suites import; the MLLM itself
(encoder -> projector -> causal LM, prompts, image inputs) is :mod:`train.mllm_parts`, re-exported here.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from encoders import Encoder, load_encoder

from .image_input import ImageInput
from .mllm_layouts.project import (
    ENCODER_FILE,
    MLLM_FILE,
    MLLM_FORMAT,
    MLLM_VERSION,
    replace_folder,
    save_mllm,
)
from .mllm_parts import (
    IGNORE,
    IMAGE_TOKEN,
    MLLM,
    PROMPT_LAYOUTS,
    MLLMBatch,
    MLLMError,
    Projector,
    load_lm,
    load_tokenizer,
    projector_encoder,
)

__all__ = ["ENCODER_FILE", "IGNORE", "IMAGE_TOKEN", "MLLM", "MLLMBatch", "MLLMError", "MLLM_FILE", "MLLM_FORMAT", "MLLM_VERSION", "PROMPT_LAYOUTS", "Projector",
           "build_mllm", "load_language_model", "load_lm", "load_mllm", "load_tokenizer", "projector_encoder", "replace_folder", "save_mllm"]


def load_mllm(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> MLLM:
    """The one gate to every MLLM: a project MLLM directory, or any layout registered in
    :mod:`train.mllm_layouts` (transformers Llava, the LLaVA-NeXT repository's checkpoints), read by the
    layout's reader. MLLMError names the file and the fix. ``dtype`` (e.g. ``torch.bfloat16``) is the
    dtype of the tower, the projector and the LM; None keeps fp32."""
    from .mllm_layouts import find_layout

    path = Path(path)
    mllm = find_layout(path).read(path, dtype=dtype)
    return mllm.to(device).eval()


def load_language_model(path: str | os.PathLike, dtype: torch.dtype = torch.float32):
    """(LM, tokenizer) of a transformers causal-LM directory, or the LM of an MLLM directory of any layout
    (a project MLLM's ``lm/``; a Llava or LLaVA-NeXT checkpoint's LM, read with its MLLM)."""
    from .mllm_layouts import detect_layout

    path = Path(path)
    layout = detect_layout(path)
    if layout is None:
        return load_lm(path, dtype)
    if layout.name == "project":
        return load_lm(path / "lm", dtype)
    mllm = layout.read(path, dtype=dtype)
    return mllm.lm, mllm.tokenizer


def build_mllm(encoder: Encoder | str | os.PathLike, lm_dir: str | os.PathLike, *, visual_layer: int | list[int] = -2, projector_hidden: int | None = None,
               max_length: int = 2048, seed: int = 0, prompt_layout: str = "image-question", keep_prefix: bool = False, image_input: ImageInput | None = None) -> MLLM:
    """A new MLLM: an encoder (or its checkpoint), a freshly initialised projector, and the LM of ``lm_dir``;
    ``prompt_layout`` places the image before (LLaVA) or after the question (see the module docstring).
    ``keep_prefix`` and ``image_input`` carry over another MLLM's vision side (PIVOT's transplant)."""
    if not isinstance(encoder, Encoder):
        encoder = load_encoder(encoder)
    layers = visual_layer if isinstance(visual_layer, list) else [visual_layer]
    try:
        encoder.resolve_layers(layers)  # before the LM loads
    except ValueError as err:
        raise MLLMError(f"--visual-layer {visual_layer}: {err}") from None
    lm, tokenizer = load_lm(lm_dir)
    torch.manual_seed(seed)
    projector = Projector(encoder.embed_dim * len(layers), lm.get_input_embeddings().embedding_dim, projector_hidden)
    return MLLM(encoder, projector, lm, tokenizer, visual_layer=visual_layer, max_length=max_length, prompt_layout=prompt_layout, keep_prefix=keep_prefix,
                image_input=image_input)


