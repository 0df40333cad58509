"""Recognising the key layouts checkpoints come in and remapping them onto a bare encoder.

Every change made to the keys is recorded in a :class:`RemapReport`, which travels with the results so a
reader can see exactly how the weights were found (e.g. "took the vision tower of an MLLM checkpoint,
dropped 412 LLM and 4 projector tensors").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch

# Wrappers around a whole model: DDP / DataParallel, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Where LLaVA-style MLLM checkpoints keep the vision encoder, most specific first.
VISION_TOWER_PREFIXES = (
    "model.vision_tower.vision_tower.",
    "model.vision_tower.",
    "vision_tower.vision_tower.",
    "vision_tower.",
    "model.visual.",
)
PROJECTOR_MARKERS = ("mm_projector", "multi_modal_projector", "projector")
LLM_MARKERS = ("lm_head", "embed_tokens", "model.layers.", "language_model", "llm.", "model.norm.")
# open_clip full CLIP models: image tower under "visual.", the rest is the text tower.
OPEN_CLIP_VISUAL = "visual."


@dataclass
class RemapReport:
    """What was done to the checkpoint's keys before loading (JSON-serialisable via ``to_dict``)."""

    layouts: list[str] = field(default_factory=list)
    stripped_prefixes: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    converter: str = ""
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    partial: bool = False
    resampled: list[str] = field(default_factory=list)

    def drop(self, group: str, count: int) -> None:
        if count:
            self.dropped[group] = self.dropped.get(group, 0) + count

    def to_dict(self) -> dict:
        return {
            "layouts": list(self.layouts),
            "stripped_prefixes": list(self.stripped_prefixes),
            "dropped": dict(self.dropped),
            "converter": self.converter,
            "missing": list(self.missing),
            "unexpected": list(self.unexpected),
            "mismatched": list(self.mismatched),
            "partial": self.partial,
            "resampled": list(self.resampled),
        }

    def summary(self) -> str:
        parts = [", ".join(self.layouts) or "plain"]
        if self.stripped_prefixes:
            parts.append("stripped " + ", ".join(repr(p) for p in self.stripped_prefixes))
        if self.dropped:
            parts.append("dropped " + ", ".join(f"{n} {g}" for g, n in sorted(self.dropped.items())))
        if self.converter:
            parts.append(f"converted by {self.converter}")
        if self.partial:
            parts.append(f"PARTIAL: {len(self.missing)} missing, {len(self.unexpected)} unexpected, {len(self.mismatched)} mismatched")
        if self.resampled:
            parts.append("RESAMPLED: " + "; ".join(self.resampled))
        return "; ".join(parts)


class NoVisionTowerError(ValueError):
    """An MLLM checkpoint (LLM / projector keys present) without any vision-tower keys."""


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix):]: value for key, value in state.items()}


def strip_wrappers(state: dict[str, torch.Tensor], report: RemapReport) -> dict[str, torch.Tensor]:
    """Remove DDP ``module.`` and ``torch.compile`` ``_orig_mod.`` prefixes, nested in any order."""
    changed = True
    while changed and state:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(key.startswith(prefix) for key in state):
                state = _strip(state, prefix)
                report.stripped_prefixes.append(prefix)
                report.layouts.append({"module.": "ddp", "_orig_mod.": "torch.compile"}[prefix])
                changed = True
    return state


def _looks_like_mllm(keys: Iterable[str]) -> bool:
    return any(marker in key for key in keys for marker in PROJECTOR_MARKERS + LLM_MARKERS)


def extract_vision_tower(state: dict[str, torch.Tensor], report: RemapReport) -> dict[str, torch.Tensor]:
    """From a LLaVA-style MLLM checkpoint keep only the vision tower (prefix removed); count the rest.

    A state dict with no vision-tower prefix is returned unchanged, unless it looks like an MLLM
    (projector / LLM keys), in which case there is no encoder to load and NoVisionTowerError is raised.
    """
    for prefix in VISION_TOWER_PREFIXES:
        tower = {key: value for key, value in state.items() if key.startswith(prefix)}
        if not tower:
            continue
        rest = [key for key in state if not key.startswith(prefix)]
        report.layouts.append("mllm")
        report.stripped_prefixes.append(prefix)
        report.drop("projector", sum(any(m in key for m in PROJECTOR_MARKERS) for key in rest))
        report.drop("llm", sum(not any(m in key for m in PROJECTOR_MARKERS) for key in rest))
        return _strip(tower, prefix)
    if _looks_like_mllm(state) and not any(key.startswith(OPEN_CLIP_VISUAL) for key in state):
        raise NoVisionTowerError(
            "looks like an MLLM checkpoint (LLM/projector keys such as "
            f"{[k for k in state if _looks_like_mllm([k])][:3]}) but holds no vision tower "
            f"(none of the prefixes {list(VISION_TOWER_PREFIXES)})"
        )
    return state


def extract_open_clip_visual(state: dict[str, torch.Tensor], report: RemapReport) -> dict[str, torch.Tensor]:
    """From an open_clip CLIP state dict keep the image tower (``visual.`` removed); count the text tower."""
    visual = {key: value for key, value in state.items() if key.startswith(OPEN_CLIP_VISUAL)}
    if not visual:
        return state
    report.layouts.append("open_clip")
    report.stripped_prefixes.append(OPEN_CLIP_VISUAL)
    report.drop("text_tower", len(state) - len(visual))
    return _strip(visual, OPEN_CLIP_VISUAL)


def drop_keys(state: dict[str, torch.Tensor], prefixes: Iterable[str], group: str, report: RemapReport) -> dict[str, torch.Tensor]:
    """Remove keys under any of ``prefixes`` (e.g. a classifier head the feature encoder does not have)."""
    prefixes = tuple(prefixes)
    kept = {key: value for key, value in state.items() if not key.startswith(prefixes)}
    report.drop(group, len(state) - len(kept))
    return kept


@dataclass
class KeyDiff:
    """Differences between a state dict and the model's expected keys."""

    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    @property
    def size(self) -> int:
        return len(self.missing) + len(self.unexpected) + len(self.mismatched)


def diff_keys(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> KeyDiff:
    """Missing, unexpected and shape-mismatched keys of ``state`` against ``expected`` (sorted)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in set(state) & set(expected)
        if tuple(state[key].shape) != tuple(expected[key].shape)
    )
    return KeyDiff(missing, unexpected, mismatched)
