"""Reading an MLLM's weight files into its parts, one tensor at a time, strictly.

The parts (tower, projector, LM) are built first with transformers' ``no_init_weights`` (memory
allocated, no random initialisation); then each tensor of each safetensors file (single or sharded) is
copied into the parameter its key routes to, and dropped. At no moment is there more than the model plus
one tensor: a 7B checkpoint is never held twice. Every expected tensor must arrive exactly once with its
shape, and every tensor of the files must be used or dropped by a declared rule (recorded), else an
MLLMError lists the keys.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..mllm_parts import MLLMError

SHOWN = 4
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")


class Drop:
    """A routing answer: the tensor is not part of this MLLM, counted under ``group`` (e.g. ``image_newline``)."""

    def __init__(self, group: str) -> None:
        self.group = group


Route = Callable[[str], "tuple[str, str] | Drop | None"]


@dataclass
class LoadReport:
    """What the read did: tensors copied per part, dropped per group, the files read."""

    copied: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"copied": dict(self.copied), "dropped": dict(self.dropped), "files": list(self.files)}


def weight_files(path: Path) -> list[Path]:
    """The weight files of a model directory: the shards its index names (each must exist), or its
    single file. MLLMError names the missing file."""
    for name in INDEX_FILES:
        index = path / name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
                raise MLLMError(f"{index}: the shard index is unreadable ({err}); restore it from the model's source") from None
            missing = [shard for shard in shards if not (path / shard).is_file()]
            if missing:
                raise MLLMError(f"{path / missing[0]}: shard named in {name} is missing ({len(missing)} of {len(shards)} missing); copy every shard the index names")
            return [path / shard for shard in shards]
    for name in SINGLE_FILES:
        if (path / name).is_file():
            return [path / name]
    raise MLLMError(f"{path}: no weights (model.safetensors, a sharded model.safetensors.index.json, or pytorch_model.bin); copy the weight files next to config.json")


def iter_tensors(files: list[Path], wanted: Callable[[str], bool] = lambda key: True) -> Iterator[tuple[str, torch.Tensor]]:
    """(key, tensor) of every tensor in ``files`` that ``wanted`` accepts, read one at a time (safetensors
    lazily; a ``.bin`` through ``torch.load(weights_only=True, mmap=True)``)."""
    from safetensors import SafetensorError, safe_open

    for file in files:
        if file.suffix == ".safetensors":
            try:
                with safe_open(str(file), framework="pt", device="cpu") as handle:
                    for key in handle.keys():
                        if wanted(key):
                            yield key, handle.get_tensor(key)
            except (SafetensorError, OSError) as err:
                raise MLLMError(f"{file}: a safetensors file that is truncated or corrupt ({err}); copy the file again") from None
        else:
            try:
                state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            except Exception as err:  # noqa: BLE001 - the safe unpickler raises many kinds on bad bytes
                raise MLLMError(f"{file}: cannot be read with torch.load(weights_only=True) ({type(err).__name__}); convert it to safetensors") from None
            for key in list(state):
                if wanted(key):
                    yield key, state.pop(key)


def load_parts(files: list[Path], parts: dict[str, nn.Module], route: Route, *, optional: dict[str, set[str]] | None = None,
               only: set[str] | None = None, source: str = "") -> LoadReport:
    """Copy every tensor of ``files`` into ``parts`` (name -> module) by ``route``; strict (module docstring).

    ``optional``: per part, keys that may be absent (a tied ``lm_head.weight``). ``only``: read just these
    parts; tensors routed elsewhere are skipped unread and counted as dropped under their part's name.
    """
    optional = optional or {}
    targets = {name: dict(module.state_dict(keep_vars=True)) for name, module in parts.items()}
    filled: dict[str, set[str]] = {name: set() for name in parts}
    report = LoadReport(files=[str(file) for file in files])
    unexpected, mismatched = [], []

    def wanted(key: str) -> bool:
        answer = route(key)
        if isinstance(answer, Drop):
            report.dropped[answer.group] = report.dropped.get(answer.group, 0) + 1
            return False
        if answer is None:
            if only is None:
                unexpected.append(key)
            else:  # reading some parts only: what no part takes is not this read's business
                report.dropped["other"] = report.dropped.get("other", 0) + 1
            return False
        if only is not None and answer[0] not in only:
            report.dropped[answer[0]] = report.dropped.get(answer[0], 0) + 1
            return False
        return True

    with torch.no_grad():
        for key, tensor in iter_tensors(files, wanted):
            part, name = route(key)  # type: ignore[misc]
            target = targets[part].get(name)
            if target is None:
                unexpected.append(key)
            elif tuple(target.shape) != tuple(tensor.shape):
                mismatched.append(f"{key}: file {tuple(tensor.shape)} vs model {tuple(target.shape)}")
            else:
                target.copy_(tensor)
                filled[part].add(name)
                report.copied[part] = report.copied.get(part, 0) + 1
    missing = [f"{part}:{name}" for part in parts if only is None or part in only
               for name in sorted(set(targets[part]) - filled[part] - optional.get(part, set()))]
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} tensors whose shape disagrees with the config (first: {mismatched[:SHOWN]}): the config does not describe these weights")
    if missing:
        problems.append(f"{len(missing)} tensors missing (first: {missing[:SHOWN]})")
    if unexpected:
        problems.append(f"{len(unexpected)} tensors this layout does not place (first: {unexpected[:SHOWN]})")
    if problems:
        raise MLLMError(f"{source or files[0].parent}: " + "; ".join(problems) + "; check that config.json belongs to these weights and that no shard is from another model")
    return report


def build_empty(factory: Callable[[], nn.Module], dtype: torch.dtype | None) -> nn.Module:
    """``factory()`` with weight initialisation switched off (its tensors are about to be overwritten),
    in ``dtype`` (None: fp32)."""
    from transformers.initialization import no_init_weights

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype or torch.float32)
    try:
        with no_init_weights():
            module = factory()
    finally:
        torch.set_default_dtype(previous)
    return module
