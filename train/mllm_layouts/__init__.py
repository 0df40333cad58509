"""Every MLLM layout this project reads, registered by name (``MLLM_LAYOUTS``); ``train.mllm.load_mllm``
is the gate that picks one. Built in: ``project`` (``mllm.json``, what ``python -m train`` writes),
``llava-hf`` (transformers Llava), ``llava-tiled-hf`` (transformers LlavaOnevision / LlavaNext, refused)
and ``llava-next`` (the LLaVA-NeXT / OneVision repository's checkpoints)."""
from __future__ import annotations

from . import llava_hf, llava_next, project  # noqa: F401  (register the built-in layouts)
from .base import (
    MLLM_LAYOUTS,
    MLLMLayout,
    VisionSide,
    detect_layout,
    find_layout,
    is_mllm_dir,
    register_layout,
)

__all__ = ["MLLM_LAYOUTS", "MLLMLayout", "VisionSide", "detect_layout", "find_layout", "is_mllm_dir", "register_layout"]
