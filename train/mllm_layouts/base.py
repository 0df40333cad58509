"""MLLM layouts: one reader per on-disk layout, registered by name like the encoder families.

A layout is one class that declares what it reads: :meth:`MLLMLayout.detect` tells its directories apart
from their small JSON files alone (no weights read), :meth:`MLLMLayout.read` builds the project's
:class:`train.mllm.MLLM` from one, :meth:`MLLMLayout.read_encoder` only its vision tower (for the encoder
suites, without the LM's weights). Other packages add layouts through the entry-point group
``vision_encoder_eval.mllm_layouts`` (a class, or an instance).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from common.registry import Registry

from ..mllm_parts import MLLMError

if TYPE_CHECKING:
    from encoders import Encoder

    from ..image_input import ImageInput
    from ..mllm_parts import MLLM
@dataclass
class VisionSide:
    """An MLLM's vision side without its LM: the tower, the block(s) its visual tokens come from, whether
    prefix tokens are kept, and the image input (what PIVOT's protocol moves into a fresh MLLM)."""

    encoder: "Encoder"
    visual_layer: int | list[int]
    keep_prefix: bool
    image_input: "ImageInput"


class MLLMLayout:
    """Base class of a layout: ``name`` (e.g. ``llava-hf``), ``summary`` (one line for messages and the README)."""

    name = ""
    summary = ""

    def detect(self, path: Path, config: dict[str, Any] | None) -> bool:
        """Whether ``path`` (a directory; ``config`` its parsed config.json, None without one) is this layout."""
        raise NotImplementedError

    def read(self, path: Path, dtype: torch.dtype | None = None, **options: Any) -> "MLLM":
        """The MLLM of ``path``; ``dtype`` of its weights (None: fp32). Raises ``MLLMError`` (one line, the fix)."""
        raise NotImplementedError

    def read_encoder(self, path: Path, **options: Any) -> "Encoder":
        """The MLLM's vision tower alone, as the MLLM uses it (fp32)."""
        return self.read_vision(path, **options).encoder

    def read_vision(self, path: Path, **options: Any) -> VisionSide:
        """The MLLM's :class:`VisionSide` (default: read the whole MLLM and keep its vision side)."""
        mllm = self.read(path, **options)
        return VisionSide(mllm.encoder, mllm.visual_layer, mllm.keep_prefix, mllm.image_input)


def _from_entry_point(loaded: object) -> MLLMLayout:
    return loaded() if isinstance(loaded, type) else loaded  # type: ignore[return-value]


MLLM_LAYOUTS: Registry[MLLMLayout] = Registry("MLLM layout", entry_point_group="vision_encoder_eval.mllm_layouts", from_entry_point=_from_entry_point)


def register_layout(cls: type[MLLMLayout]) -> type[MLLMLayout]:
    """Class decorator: instantiate and register the layout under ``cls.name``."""
    MLLM_LAYOUTS.add(cls.name, cls())
    return cls


def read_config(path: Path) -> dict[str, Any] | None:
    """``path/config.json`` parsed, None when absent; unreadable JSON is an MLLMError naming the file."""
    config_path = path / "config.json"
    if not config_path.is_file():
        return None
    try:
        data = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MLLMError(f"{config_path}: not valid JSON ({err}); restore the file from the model's source") from None
    return data if isinstance(data, dict) else None


def detect_layout(path: str | Path) -> MLLMLayout | None:
    """The registered layout that reads the directory ``path``, or None (also for files and missing paths)."""
    path = Path(path)
    if not path.is_dir():
        return None
    try:
        config = read_config(path)
    except ValueError:
        config = None
    for name in MLLM_LAYOUTS.names():
        layout = MLLM_LAYOUTS.get(name)
        if layout.detect(path, config):
            return layout
    return None


def is_mllm_dir(path: str | Path) -> bool:
    """``path`` is an MLLM directory of some registered layout (cheap: reads config.json / mllm.json only)."""
    return detect_layout(path) is not None


def find_layout(path: str | Path) -> MLLMLayout:
    """:func:`detect_layout`, or an MLLMError saying what ``path`` is not and which layouts exist."""
    path = Path(path)
    if not path.exists():
        raise MLLMError(f"{path}: no such MLLM directory; check the path")
    layout = detect_layout(path)
    if layout is None:
        raise MLLMError(f"{path}: not an MLLM directory (no mllm.json, and no config.json of a layout this project reads: {', '.join(MLLM_LAYOUTS.names())}); "
                        "pass a folder written by `python -m train`, a transformers Llava directory or a LLaVA-NeXT checkpoint")
    return layout
