"""Encoder families: how to build an architecture (randomly initialised, never downloaded), adapt a
checkpoint's keys to it, and compute features from it. Families register by name in FAMILIES;
installed packages can add more through the ``vision_encoder_eval.families`` entry-point group."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from common.registry import Registry

from .base import EncoderOutput, PreprocessConfig
from .layouts import RemapReport

Adapter = Callable[[nn.Module, torch.Tensor, Sequence[int]], EncoderOutput]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class EncoderFamily:
    """Base class of a family. Subclasses implement ``build``, ``preprocess``, ``adapter`` and ``structure``."""

    name = ""

    def build(self, arch: str, options: Mapping[str, Any], hf_config: Mapping[str, Any] | None = None) -> nn.Module:
        raise NotImplementedError

    def preprocess(self, model: nn.Module, arch: str, options: Mapping[str, Any]) -> PreprocessConfig:
        raise NotImplementedError

    def adapter(self, model: nn.Module) -> Adapter:
        raise NotImplementedError

    def structure(self, model: nn.Module) -> tuple[int, int, int]:
        """(number of addressable blocks, number of prefix tokens, embedding width)."""
        raise NotImplementedError

    def remap(self, state: dict[str, torch.Tensor], model: nn.Module, report: RemapReport) -> dict[str, torch.Tensor]:
        """Family-specific key changes after the generic ones (default: none)."""
        return state

    def converters(self, model: nn.Module) -> list[tuple[str, Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]]]:
        """Named converters for foreign layouts, tried only when the keys do not match as they are."""
        return []

    def arch_from_hf_config(self, config: Mapping[str, Any]) -> str:
        raise ValueError(f"family {self.name!r} cannot read Hugging Face directories")


FAMILIES: Registry[EncoderFamily] = Registry("encoder family", entry_point_group="vision_encoder_eval.families")


def register_family(cls: type[EncoderFamily]) -> type[EncoderFamily]:
    """Class decorator: instantiate and register the family under ``cls.name``."""
    FAMILIES.add(cls.name, cls())
    return cls
