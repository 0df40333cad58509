"""The project's own MLLM directories (``mllm.json``, written by :func:`save_mllm`).

::

    mllm.json               {"format": "vision-encoder-eval-mllm", "version": 2, "visual_layer": -2, "prompt_layout": ..., ...}
    encoder.safetensors     the vision tower (a project encoder checkpoint: loads with no --arch)
    projector.safetensors   fc1.weight, fc1.bias, fc2.weight, fc2.bias
    lm/                     a transformers model directory with its tokenizer and chat template
    image_processor/        (imported MLLMs) the transformers image processor that makes the pixels
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from encoders import CheckpointError, load_encoder, save_encoder_checkpoint

from ..image_input import load_image_input
from ..mllm_parts import MLLM, MLLMError, Projector, load_lm
from ..prompts import PROMPT_LAYOUTS, PromptError, PromptFormat
from .base import MLLMLayout, VisionSide, register_layout

MLLM_FORMAT = "vision-encoder-eval-mllm"
MLLM_FILE = "mllm.json"
ENCODER_FILE = "encoder.safetensors"
MLLM_VERSION = 2
READABLE_VERSIONS = (1, 2)


def save_mllm(mllm: MLLM, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``mllm`` as an MLLM directory (see the module docstring); returns the path.

    Files are written into a temporary sibling folder that replaces ``path`` at the end, so a reader
    never sees a half-written MLLM.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    meta = write_mllm_files(mllm, tmp, extra)
    (tmp / MLLM_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    replace_folder(tmp, path)
    return path


def write_mllm_files(mllm: MLLM, folder: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The parts of an MLLM directory written into ``folder``; returns what mllm.json must hold."""
    from safetensors.torch import save_file

    encoder = mllm.encoder
    save_encoder_checkpoint(encoder.model.state_dict(), {"family": encoder.family, "arch": encoder.arch, "options": encoder.options}, folder / ENCODER_FILE)
    save_file({k: v.detach().cpu().contiguous() for k, v in mllm.projector.state_dict().items()}, str(folder / "projector.safetensors"))
    mllm.lm.save_pretrained(folder / "lm")
    mllm.tokenizer.save_pretrained(folder / "lm")
    return {
        "format": MLLM_FORMAT, "version": MLLM_VERSION, "visual_layer": mllm.visual_layer, "keep_prefix": mllm.keep_prefix, "max_length": mllm.max_length,
        "prompt_layout": mllm.prompt_layout, **({"prompt": mllm.prompt.to_dict()} if mllm.prompt.kind != "chat-template" else {}),
        "projector": mllm.projector.describe(), "image": mllm.image_input.save(folder),
        "image_token_id": mllm.image_token_id, "answer_end": mllm.answer_end, "encoder_weights_hash": encoder.weights_hash,
        **({"source": mllm.source} if mllm.source else {}), **(extra or {}),
    }


def replace_folder(new: Path, path: Path) -> None:
    """Put the finished folder ``new`` at ``path`` (an older one there is replaced only once ``new`` is complete)."""
    if path.exists():
        old = path.with_name(path.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
        new.rename(path)
        shutil.rmtree(old)
    else:
        new.rename(path)


def read_project_mllm(path: Path, dtype: torch.dtype | None = None) -> MLLM:
    """Read an MLLM directory written by :func:`save_mllm` (mllm.json version 1 or 2)."""
    from safetensors.torch import load_file

    meta_path = path / MLLM_FILE
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != MLLM_FORMAT:
        raise MLLMError(f"{meta_path}: format {meta.get('format')!r}, expected {MLLM_FORMAT!r}")
    if meta.get("version", 1) not in READABLE_VERSIONS:
        raise MLLMError(f"{meta_path}: version {meta.get('version')!r}; this project reads versions {READABLE_VERSIONS} (update the project)")
    tower = path / ENCODER_FILE
    for part in (tower, path / "projector.safetensors", path / "lm"):
        if not part.exists():
            raise MLLMError(f"{part}: missing from the MLLM directory; re-export the MLLM (python -m train ... writes all three parts)")
    try:
        encoder = load_encoder(tower, name=path.name)
    except CheckpointError as err:
        raise MLLMError(f"{tower}: {err}") from None
    lm, tokenizer = load_lm(path / "lm", dtype=dtype or torch.float32)
    dims = meta["projector"]
    projector = Projector(dims["encoder_dim"], dims["lm_dim"], dims["hidden"], act=dims.get("act", "gelu"), bias=dims.get("bias", True), depth=dims.get("depth", 2))
    try:
        projector.load_state_dict(load_file(str(path / "projector.safetensors")), strict=True)
    except RuntimeError as err:
        raise MLLMError(f"{path / 'projector.safetensors'}: does not match mllm.json's projector sizes ({err})") from None
    if encoder.embed_dim * (len(meta["visual_layer"]) if isinstance(meta["visual_layer"], list) else 1) != dims["encoder_dim"]:
        raise MLLMError(f"{path}: the encoder's width {encoder.embed_dim} differs from the projector's input {dims['encoder_dim']}")
    layout = meta.get("prompt_layout", "image-question")  # directories written before the field existed: LLaVA's layout
    if "prompt" not in meta and layout not in PROMPT_LAYOUTS:
        raise MLLMError(f"{meta_path}: prompt_layout {layout!r} is not one of {', '.join(PROMPT_LAYOUTS)}; fix mllm.json")
    try:
        prompt = PromptFormat.from_dict(meta["prompt"]) if "prompt" in meta else PromptFormat(layout=layout)
        image_input = load_image_input(path, meta.get("image"), encoder.preprocess)
    except (PromptError, FileNotFoundError, ValueError) as err:
        raise MLLMError(f"{meta_path}: {err}") from None
    mllm = MLLM(encoder, projector, lm, tokenizer, visual_layer=meta["visual_layer"], max_length=int(meta.get("max_length", 2048)), prompt=prompt,
                keep_prefix=bool(meta.get("keep_prefix", False)), image_input=image_input, image_token_id=meta.get("image_token_id"),
                answer_end=meta.get("answer_end"), source=meta.get("source"))
    return mllm.to(dtype=dtype) if dtype is not None else mllm




@register_layout
class ProjectMLLM(MLLMLayout):
    name = "project"
    summary = "an MLLM directory written by python -m train (mllm.json)"

    def detect(self, path: Path, config: dict[str, Any] | None) -> bool:
        return (path / MLLM_FILE).is_file()

    def read(self, path: Path, dtype: torch.dtype | None = None, **options: Any):
        return read_project_mllm(path, dtype)

    def read_encoder(self, path: Path, **options: Any):
        tower = path / ENCODER_FILE
        if not tower.exists():
            raise MLLMError(f"{tower}: missing from the MLLM directory; re-export the MLLM")
        try:
            return load_encoder(tower, name=path.name)
        except CheckpointError as err:
            raise MLLMError(str(err)) from None

    def read_vision(self, path: Path, **options: Any) -> VisionSide:
        meta = json.loads((path / MLLM_FILE).read_text())
        encoder = self.read_encoder(path)
        return VisionSide(encoder, meta["visual_layer"], bool(meta.get("keep_prefix", False)), load_image_input(path, meta.get("image"), encoder.preprocess))
