"""Manifests: a TOML file naming the encoders of one or more lineages.

```toml
[[encoder]]
name = "siglip2-b16"
arch = "vit_base_patch16_siglip_224"    # optional for project checkpoints and HF directories
checkpoint = "ckpts/original.safetensors"  # relative to the manifest's folder
role = "original"

[[encoder]]
name = "siglip2-b16-pivot"
checkpoint = "ckpts/pivot.pt"
role = "pivot"
base = "siglip2-b16"
mllm = "mllm/pivot"                 # optional: MLLM directory (train.mllm.load_mllm) for grad/align/vqa
vqa_results = "lmms/pivot"          # optional: lmms-eval results file or folder to ingest
replicate = 0                       # optional: training-seed replicate (0, 1, ...); same role + base = one arm
```
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

from common.errors import UsageError

from .loader import EncoderSpec

# Field -> the TOML type it must have.
FIELD_TYPES: dict[str, type] = {
    "name": str, "family": str, "arch": str, "checkpoint": str, "role": str, "base": str, "options": dict,
    "allow_partial": bool, "allow_resample": bool, "mllm": str, "vqa_results": str, "replicate": int,
}
ALLOWED_FIELDS = set(FIELD_TYPES)
TYPE_NAMES = {str: "a string", dict: "a table (e.g. options = { img_size = 384 })", bool: "true or false", int: "a whole number (e.g. replicate = 1)"}


class ManifestError(UsageError, ValueError):
    """A manifest that cannot be used; the message names the file, the entry and the fix."""


def load_manifest(path: str | os.PathLike) -> list[EncoderSpec]:
    """Encoder specs of a manifest, validated: unique names, known bases, existing checkpoints."""
    path = Path(path)
    specs = [_entry_spec(path, number, entry) for number, entry in enumerate(_entries(path), 1)]
    _check_lineages(path, specs)
    return specs


def _entries(path: Path) -> list:
    """The ``[[encoder]]`` tables of the manifest file ``path``."""
    if not path.exists():
        raise ManifestError(f"{path}: manifest not found")
    if not path.is_file():
        raise ManifestError(f"{path}: is a directory, not a manifest file; pass the lineage .toml file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not a UTF-8 text file; pass the lineage .toml manifest (not a checkpoint)") from None
    except tomllib.TOMLDecodeError as err:
        raise ManifestError(f"{path}: not valid TOML ({err})") from None
    entries = data.get("encoder")
    if not isinstance(entries, list) or not entries:
        raise ManifestError(f"{path}: no [[encoder]] entries; each needs at least name and checkpoint")
    return entries


def _check_fields(where: str, entry: object) -> dict:
    """``entry`` as a table of known fields of the right types, with a name, a checkpoint and a valid replicate."""
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}: not a table; write each encoder as an [[encoder]] block")
    unknown = set(entry) - ALLOWED_FIELDS
    if unknown:
        raise ManifestError(f"{where}: unknown fields {sorted(unknown)}; allowed: {sorted(ALLOWED_FIELDS)}")
    for field_name, value in entry.items():
        expected = FIELD_TYPES[field_name]
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ManifestError(f"{where}: {field_name} = {value!r} must be {TYPE_NAMES[expected]}")
    if entry.get("replicate", 0) < 0:
        raise ManifestError(f"{where}: replicate = {entry['replicate']} must be 0 or more (the training seed's index within its arm)")
    for required in ("name", "checkpoint"):
        if not entry.get(required, "").strip():
            raise ManifestError(f"{where}: missing {required!r}; every [[encoder]] needs name and checkpoint")
    return entry


def _linked_path(path: Path, where: str, entry: dict, field_name: str) -> str:
    """The existing file or folder that ``entry[field_name]`` names (relative to the manifest's folder)."""
    target = Path(entry[field_name])
    target = target if target.is_absolute() else path.parent / target
    if not target.exists():
        raise ManifestError(f"{where} ({entry['name']!r}): {field_name} {target} does not exist; fix the path (relative paths are taken from the manifest's folder)")
    return str(target)


def _entry_spec(path: Path, number: int, entry: object) -> EncoderSpec:
    """The spec of the ``number``-th entry of the manifest ``path``, its fields and files checked."""
    where = f"{path}: encoder #{number}"
    entry = _check_fields(where, entry)
    checkpoint = _linked_path(path, where, entry, "checkpoint")
    linked = {field_name: _linked_path(path, where, entry, field_name) for field_name in ("mllm", "vqa_results") if entry.get(field_name)}
    return EncoderSpec(
        checkpoint=checkpoint,
        name=entry["name"],
        family=entry.get("family", ""),
        arch=entry.get("arch", ""),
        options=dict(entry.get("options", {})),
        role=entry.get("role", ""),
        base=entry.get("base", ""),
        allow_partial=entry.get("allow_partial", False),
        allow_resample=entry.get("allow_resample", False),
        replicate=entry.get("replicate"),
        # messages about a conflicting arch then point at this entry, not at --arch
        arch_source=f"the arch field of {path} (encoder {entry['name']!r})" if entry.get("arch") else "",
        **linked,
    )


def _check_lineages(path: Path, specs: list[EncoderSpec]) -> None:
    """Unique names, and bases that name another encoder of the manifest without a cycle."""
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ManifestError(f"{path}: duplicate encoder names {duplicates}; every name must be unique")
    for spec in specs:
        if spec.base and spec.base not in names:
            raise ManifestError(f"{path}: encoder {spec.name!r} has base {spec.base!r}, which is not an encoder of this manifest; known: {names}")
        if spec.base == spec.name:
            raise ManifestError(f"{path}: encoder {spec.name!r} names itself as its base")
    bases = {spec.name: spec.base for spec in specs}
    for spec in specs:
        chain, current = [spec.name], spec.base
        while current:
            if current in chain:
                cycle = " -> ".join(chain[chain.index(current):] + [current])
                raise ManifestError(f"{path}: base cycle {cycle}; the original of a lineage has no base")
            chain.append(current)
            current = bases.get(current, "")
