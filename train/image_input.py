"""How an MLLM turns a PIL image into its input tensor, and where the image's pixels land.

The project's own MLLMs use their encoder's eval transform (``PreprocessConfig.transform``). MLLMs read from
other layouts keep the image processor they were trained with (a transformers ``SiglipImageProcessor``,
``CLIPImageProcessor``, ...), so their pixels are exactly the source's; LLaVA's ``image_aspect_ratio pad``
first pads the image to a square of the processor's mean colour (``expand2square``). Either way
:attr:`ImageInput.geometry` describes the resize (shorter side + centre crop, squash to a square, or pad
then squash) in a :class:`encoders.PreprocessConfig`, so boxes and masks can be mapped into the input frame.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from encoders import PreprocessConfig
from encoders.base import PadToSquare

PROCESSOR_DIR = "image_processor"
# PIL resample codes (transformers stores them in preprocessor configs) -> PreprocessConfig's names.
RESAMPLE_NAMES = {0: "nearest", 2: "bilinear", 3: "bicubic"}


class ProcessorTransform:
    """PIL image -> (3, H, W) float tensor through a transformers image processor (picklable, for workers)."""

    def __init__(self, processor: Any, pad_to_square: bool = False) -> None:
        self.processor = processor
        self.pad_to_square = pad_to_square

    def __call__(self, image):
        image = image.convert("RGB")
        if self.pad_to_square:
            image = PadToSquare(tuple(int(value * 255) for value in self.processor.image_mean))(image)
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]


@dataclass
class ImageInput:
    """An MLLM's image side: ``geometry`` (size, mean/std, resize rule) and, for MLLMs read from other
    layouts, the transformers image ``processor`` that makes the pixels; ``pad_to_square`` is LLaVA's
    ``image_aspect_ratio pad``."""

    geometry: PreprocessConfig
    processor: Any = None
    pad_to_square: bool = False
    notes: dict[str, Any] = field(default_factory=dict)

    def transform(self):
        """PIL RGB image -> normalised float tensor (3, R, R)."""
        if self.processor is None:
            return self.geometry.transform()
        return ProcessorTransform(self.processor, self.pad_to_square)

    def save(self, folder: str | os.PathLike) -> dict[str, Any]:
        """Write the processor (if any) under ``folder/image_processor``; returns mllm.json's ``image`` entry."""
        entry: dict[str, Any] = {"pad_to_square": self.pad_to_square}
        if self.processor is not None:
            self.processor.save_pretrained(Path(folder) / PROCESSOR_DIR)
            entry.update(processor=PROCESSOR_DIR, backend=processor_backend(self.processor))
        return entry

    @classmethod
    def from_processor(cls, processor: Any, pad_to_square: bool = False) -> "ImageInput":
        """The image side of a transformers image processor (its output size, mean/std and resize rule)."""
        return cls(processor_geometry(processor, pad_to_square), processor, pad_to_square)


def processor_backend(processor: Any) -> str:
    """``pil`` or ``torchvision``: which of transformers' two implementations ``processor`` is (their pixels
    differ slightly, and a saved config does not say which one wrote it)."""
    from transformers.image_processing_backends import PilBackend

    return "pil" if isinstance(processor, PilBackend) else "torchvision"


def processor_geometry(processor: Any, pad_to_square: bool = False) -> PreprocessConfig:
    """A :class:`PreprocessConfig` describing what ``processor`` does: ``shortest_edge`` + ``crop_size`` is a
    shorter-side resize and centre crop; ``height``/``width`` a squash to that size (after LLaVA's pad)."""
    data = processor.to_dict()
    size, crop = data.get("size") or {}, data.get("crop_size") if data.get("do_center_crop") else None
    mean, std = tuple(data["image_mean"]), tuple(data["image_std"])
    interpolation = RESAMPLE_NAMES.get(int(data.get("resample") if data.get("resample") is not None else 3), "bicubic")
    if size.get("shortest_edge"):
        side = int(crop["height"]) if crop else int(size["shortest_edge"])
        if crop and int(crop["height"]) != int(crop["width"]):
            raise ValueError(f"image processor crop_size {crop}: only square inputs are supported")
        return PreprocessConfig(side, mean, std, interpolation, crop_pct=side / int(size["shortest_edge"]), resize="pad" if pad_to_square else "shorter")
    if int(size.get("height", 0)) != int(size.get("width", -1)):
        raise ValueError(f"image processor size {size}: only square inputs are supported")
    return PreprocessConfig(int(size["height"]), mean, std, interpolation, resize="pad" if pad_to_square else "square")


def load_image_input(folder: str | os.PathLike, entry: dict[str, Any] | None, default: PreprocessConfig) -> ImageInput:
    """mllm.json's ``image`` entry read back: the saved processor, or the encoder's own preprocessing."""
    entry = entry or {}
    pad = bool(entry.get("pad_to_square", False))
    if not entry.get("processor"):
        return ImageInput(default, None, pad)
    from transformers import AutoImageProcessor

    path = Path(folder) / entry["processor"]
    if not (path / "preprocessor_config.json").is_file():
        raise FileNotFoundError(f"{path}: the MLLM's image processor is missing (preprocessor_config.json); re-import the MLLM (python -m train import-mllm)")
    json.loads((path / "preprocessor_config.json").read_text())
    processor = AutoImageProcessor.from_pretrained(path, local_files_only=True, backend=entry.get("backend", "torchvision"))
    return ImageInput.from_processor(processor, pad)
