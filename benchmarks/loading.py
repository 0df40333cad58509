"""Encoders of a run: a checkpoint, or an MLLM directory read as its vision tower or its projector outputs."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from encoders import CheckpointError, Encoder, EncoderSpec, load_encoder
from encoders.loader import mllm_vision_tower

FEATURE_SOURCES = ("encoder", "projector")


def load_run_encoder(spec: EncoderSpec, features: str = "encoder", device: str | torch.device = "cpu") -> tuple[EncoderSpec, Encoder]:
    """Load what ``spec`` names for feature source ``features``; returns the (possibly completed) spec.

    An MLLM directory (``mllm.json`` inside, as ``python -m train`` exports) given as the checkpoint is
    read as its vision tower (``encoder``) or as encoder + projector (``projector``, the study's Fig. 6
    features); the spec's ``mllm`` then points at it, so the MLLM-based suites find it. A plain
    checkpoint with ``features="projector"`` uses the MLLM named by the spec's ``mllm`` field.
    """
    if features not in FEATURE_SOURCES:
        raise ValueError(f"--features {features!r}: choose {' or '.join(FEATURE_SOURCES)}")
    path = Path(spec.checkpoint)
    tower = mllm_vision_tower(path)
    if tower is not None:
        spec = replace(spec, checkpoint=str(tower), mllm=spec.mllm or str(path))
    if features == "projector":
        if not spec.mllm:
            raise CheckpointError(path, "--features projector needs an MLLM", "pass an MLLM directory (a `python -m train` stage's OUT/mllm) as --encoder, or give the manifest entry an mllm = ... field")
        from train.mllm import MLLMError, load_mllm, projector_encoder

        try:
            mllm = load_mllm(spec.mllm, device=device)
        except MLLMError as err:
            raise CheckpointError(spec.mllm, str(err)) from None
        return spec, projector_encoder(mllm, name=spec.display_name())
    return spec, load_encoder(spec, device=device)
