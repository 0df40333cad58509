"""The project's own MLLM directories (``mllm.json``, written by ``train.mllm.save_mllm``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .base import MLLMLayout, VisionSide, register_layout


@register_layout
class ProjectMLLM(MLLMLayout):
    name = "project"
    summary = "an MLLM directory written by python -m train (mllm.json)"

    def detect(self, path: Path, config: dict[str, Any] | None) -> bool:
        from ..mllm import MLLM_FILE

        return (path / MLLM_FILE).is_file()

    def read(self, path: Path, dtype: torch.dtype | None = None, **options: Any):
        from ..mllm import read_project_mllm

        return read_project_mllm(path, dtype)

    def read_encoder(self, path: Path, **options: Any):
        from encoders import CheckpointError, load_encoder

        from ..mllm import ENCODER_FILE, MLLMError

        tower = path / ENCODER_FILE
        if not tower.exists():
            raise MLLMError(f"{tower}: missing from the MLLM directory; re-export the MLLM")
        try:
            return load_encoder(tower, name=path.name)
        except CheckpointError as err:
            raise MLLMError(str(err)) from None

    def read_vision(self, path: Path, **options: Any) -> VisionSide:
        import json

        from ..image_input import load_image_input
        from ..mllm import MLLM_FILE

        meta = json.loads((path / MLLM_FILE).read_text())
        encoder = self.read_encoder(path)
        return VisionSide(encoder, meta["visual_layer"], bool(meta.get("keep_prefix", False)), load_image_input(path, meta.get("image"), encoder.preprocess))
