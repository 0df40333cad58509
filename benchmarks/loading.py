"""Encoders of a run: a checkpoint, or an MLLM directory (any layout ``train.mllm.load_mllm`` reads) read as
its vision tower or its projector outputs."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from encoders import CheckpointError, Encoder, EncoderSpec, load_encoder
from encoders.loader import mllm_vision_tower

FEATURE_SOURCES = ("encoder", "projector")


def load_run_encoder(spec: EncoderSpec, features: str = "encoder", device: str | torch.device = "cpu") -> tuple[EncoderSpec, Encoder]:
    """Load what ``spec`` names for feature source ``features``; returns the (possibly completed) spec.

    An MLLM directory given as the checkpoint (``mllm.json`` inside, as ``python -m train`` exports; a
    transformers Llava directory; a LLaVA-NeXT checkpoint) is read as its vision tower (``encoder``), exactly
    as the MLLM uses it, or as encoder + projector (``projector``, the study's Fig. 6 features); the spec's
    ``mllm`` then points at it, so the MLLM-based suites find it. A plain checkpoint with
    ``features="projector"`` uses the MLLM named by the spec's ``mllm`` field.
    """
    if features not in FEATURE_SOURCES:
        raise ValueError(f"--features {features!r}: choose {' or '.join(FEATURE_SOURCES)}")
    path = Path(spec.checkpoint)
    from train.mllm_layouts import detect_layout

    layout = detect_layout(path)
    tower = mllm_vision_tower(path)
    if tower is not None:
        spec = replace(spec, checkpoint=str(tower), mllm=spec.mllm or str(path))
    elif layout is not None:
        spec = replace(spec, mllm=spec.mllm or str(path))
    if features == "projector":
        if not spec.mllm:
            raise CheckpointError(path, "--features projector needs an MLLM", "pass an MLLM directory (a `python -m train` stage's OUT/mllm) as --encoder, or give the manifest entry an mllm = ... field")
        from train.mllm import MLLMError, load_mllm, projector_encoder

        try:
            mllm = load_mllm(spec.mllm, device=device)
        except MLLMError as err:
            raise CheckpointError(spec.mllm, str(err)) from None
        return spec, projector_encoder(mllm, name=spec.display_name())
    if tower is None and layout is not None:
        from train.mllm import MLLMError

        try:
            encoder = layout.read_encoder(path)
        except MLLMError as err:
            raise CheckpointError(path, str(err).removeprefix(f"{path}: ")) from None
        encoder.name = spec.display_name()
        return spec, encoder.to(device)
    return spec, load_encoder(spec, device=device)
