"""Suites: each turns encoders (+ cached features) into result rows. Registered by name; a duplicate is an
error. Names that are part of the CLI but not built yet are listed in PLANNED and produce skipped rows."""
from __future__ import annotations

from encoders.registry import Registry

from .base import RunContext, Suite

SUITES: Registry[Suite] = Registry("suite", entry_point_group="vision_encoder_eval.suites")
ALL_SUITES = ("cls", "seg", "loc", "grad", "align", "vqa")
PLANNED = {
}

from . import classification  # noqa: E402,F401  (registers "cls")
from . import segmentation  # noqa: E402,F401  (registers "seg")
from . import localization  # noqa: E402,F401  (registers "loc")
from . import alignment  # noqa: E402,F401  (registers "align")
from . import gradients  # noqa: E402,F401  (registers "grad")
from . import vqa  # noqa: E402,F401  (registers "vqa")

__all__ = ["ALL_SUITES", "PLANNED", "RunContext", "SUITES", "Suite"]
