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
```
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

from .loader import EncoderSpec

ALLOWED_FIELDS = {"name", "family", "arch", "checkpoint", "role", "base", "options", "allow_partial", "mllm", "vqa_results"}


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file, the entry and the fix."""


def load_manifest(path: str | os.PathLike) -> list[EncoderSpec]:
    """Encoder specs of a manifest, validated: unique names, known bases, existing checkpoints."""
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"{path}: manifest not found")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ManifestError(f"{path}: not valid TOML ({err})") from None
    entries = data.get("encoder")
    if not isinstance(entries, list) or not entries:
        raise ManifestError(f"{path}: no [[encoder]] entries; each needs at least name and checkpoint")
    specs: list[EncoderSpec] = []
    for number, entry in enumerate(entries, 1):
        where = f"{path}: encoder #{number}"
        unknown = set(entry) - ALLOWED_FIELDS
        if unknown:
            raise ManifestError(f"{where}: unknown fields {sorted(unknown)}; allowed: {sorted(ALLOWED_FIELDS)}")
        for required in ("name", "checkpoint"):
            if not entry.get(required):
                raise ManifestError(f"{where}: missing {required!r}")
        checkpoint = Path(entry["checkpoint"])
        if not checkpoint.is_absolute():
            checkpoint = path.parent / checkpoint
        if not checkpoint.exists():
            raise ManifestError(f"{where} ({entry['name']!r}): checkpoint {checkpoint} does not exist; fix the path (relative paths are taken from the manifest's folder)")
        linked = {}
        for field_name in ("mllm", "vqa_results"):
            if entry.get(field_name):
                target = Path(entry[field_name])
                target = target if target.is_absolute() else path.parent / target
                if not target.exists():
                    raise ManifestError(f"{where} ({entry['name']!r}): {field_name} {target} does not exist; fix the path (relative paths are taken from the manifest's folder)")
                linked[field_name] = str(target)
        specs.append(EncoderSpec(
            checkpoint=str(checkpoint),
            name=entry["name"],
            family=entry.get("family", ""),
            arch=entry.get("arch", ""),
            options=dict(entry.get("options", {})),
            role=entry.get("role", ""),
            base=entry.get("base", ""),
            allow_partial=bool(entry.get("allow_partial", False)),
            **linked,
        ))
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ManifestError(f"{path}: duplicate encoder names {duplicates}; every name must be unique")
    for spec in specs:
        if spec.base and spec.base not in names:
            raise ManifestError(f"{path}: encoder {spec.name!r} has base {spec.base!r}, which is not an encoder of this manifest; known: {names}")
        if spec.base == spec.name:
            raise ManifestError(f"{path}: encoder {spec.name!r} names itself as its base")
    return specs
