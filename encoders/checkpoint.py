"""Reading checkpoint files into plain state dicts, safely (no code ever runs from a checkpoint).

Formats: ``.pt/.pth/.bin/.ckpt`` (``torch.load(weights_only=True)``, no pickle fallback),
``.safetensors``, Hugging Face model directories (single file or sharded with an index json), and the
project's own encoder checkpoint (weights plus an embedded encoder spec), in ``.pt`` or ``.safetensors``.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from common.errors import UserError

from .fileformat import open_problem, sniff

PROJECT_FORMAT = "vision-encoder-eval/encoder@1"
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"
MLLM_FILE = "mllm.json"  # marks an MLLM directory (python -m train); its vision tower is encoder.safetensors
# Containers that training scripts wrap a state dict in.
NESTED_STATE_KEYS = ("state_dict", "model", "module", "model_state_dict", "params")


class CheckpointError(UserError):
    """A checkpoint that cannot be used: ``problem`` is ``<file>: <what is wrong>``, ``fix`` the fix."""

    def __init__(self, path: str | os.PathLike, problem: str, fix: str = "") -> None:
        self.path = str(path)
        super().__init__(f"{self.path}: {problem}", fix)

    def __reduce__(self):
        return (type(self), (self.path, self.problem.removeprefix(f"{self.path}: "), self.fix))


@dataclass
class RawCheckpoint:
    """Tensors read from disk, before any key remapping.

    ``format`` is one of ``torch``, ``safetensors``, ``hf-dir``, ``hf-dir-sharded``, ``project``;
    ``spec`` is the embedded encoder spec of a project checkpoint (else None); ``hf_config`` the parsed
    ``config.json`` of an HF directory.
    """

    path: Path
    format: str
    state_dict: dict[str, torch.Tensor]
    spec: dict[str, Any] | None = None
    hf_config: dict[str, Any] | None = None
    files: list[Path] = field(default_factory=list)


def read_checkpoint(path: str | os.PathLike) -> RawCheckpoint:
    """Read ``path`` (file or HF directory) into tensors; raises CheckpointError with the fix on any problem.

    A file is read by the reader its extension names, after its first bytes confirm the format
    (:func:`encoders.fileformat.sniff`); a mismatch names what the file really is and the rename.
    """
    path = Path(path)
    _check_openable(path)
    raw = _read_hf_dir(path) if path.is_dir() else _read_file(path)
    if not raw.state_dict:
        raise CheckpointError(path, "the checkpoint holds no tensors (empty state dict)", "save model.state_dict() of a built model")
    return raw


def _check_openable(path: Path) -> None:
    problem = open_problem(path)
    if problem is not None:
        raise CheckpointError(path, *problem)


# What to do with a file that holds no checkpoint, by its sniffed kind.
_NOT_A_CHECKPOINT_FIX = {
    "empty": "the copy is empty: copy or download the checkpoint again",
    "lfs-pointer": "fetch the real weights: run `git lfs pull` in the repository the file came from",
    "html": "download the file again from its direct link (the saved page is not the weights; a login or licence page is common)",
    "pickle": "it is not unpickled, because that could run code: re-save only the weights with torch.save(model.state_dict(), path) or as .safetensors",
    "unknown": "copy or download the checkpoint again and compare its size/checksum with the source, or point at the weights file (.safetensors, .pt)",
}
_CONVERT_FIX = "convert the weights to a state dict saved with torch.save (.pt) or safetensors (.safetensors)"


def _read_file(path: Path, renames: Mapping[str, str] | None = None) -> RawCheckpoint:
    """One checkpoint file: its extension picks the reader, its first bytes must agree. ``renames``
    (format -> file name) is the name to advise when the content is the other format (HF directories)."""
    _check_openable(path)
    try:
        sniffed = sniff(path)
    except OSError as err:
        raise CheckpointError(path, f"cannot be read ({_cause(err)})", "check the path and its permissions") from None
    expected = "safetensors" if path.suffix == SAFETENSORS_SUFFIX else "torch" if path.suffix in TORCH_SUFFIXES else ""
    known = ", ".join(TORCH_SUFFIXES + (SAFETENSORS_SUFFIX,))
    if not sniffed.is_checkpoint:
        prefix = f"unknown checkpoint extension {path.suffix!r}, and not a checkpoint" if not expected and not path.is_dir() else "not a checkpoint"
        fix = _NOT_A_CHECKPOINT_FIX.get(sniffed.kind, _CONVERT_FIX)
        shown = f" (first bytes {sniffed.head})" if sniffed.head else ""
        raise CheckpointError(path, f"{prefix}: the file is {sniffed.what}{shown}", fix)
    actual = "safetensors" if sniffed.kind == "safetensors" else "torch"
    if actual != expected:
        right = (renames or {}).get(actual) or path.with_suffix(SAFETENSORS_SUFFIX if actual == "safetensors" else ".pt").name
        named = f"named {path.suffix}" if path.suffix else "without an extension"
        raise CheckpointError(path, f"this is {sniffed.what} {named} (extensions read as checkpoints: {known})", f"rename it to {right}; the extension picks the reader")
    return _read_safetensors(path) if actual == "safetensors" else _read_torch(path)


def _cause(err: BaseException) -> str:
    """The first line of a reader's error, for a message; torch's advice to disable ``weights_only`` is never quoted."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    kept = [line for line in lines if "weights_only" not in line.lower() and "arbitrary code" not in line.lower()]
    text = kept[0] if kept else ""
    if len(text) > 160:
        text = text[:160].rsplit(" ", 1)[0] + " ..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _read_torch(path: Path) -> RawCheckpoint:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except pickle.UnpicklingError as err:
        blocked = re.search(r"GLOBAL ([\w.]+)", str(err))
        needs = f" (it needs {blocked.group(1)})" if blocked else ""
        raise CheckpointError(
            path,
            "refusing to load: the file contains pickled Python objects beyond tensors and plain containers"
            f"{needs}, and unpickling them could execute code",
            "re-save only the weights: torch.save(model.state_dict(), path), or convert to .safetensors",
        ) from None
    except Exception as err:  # noqa: BLE001 - on corrupt bytes the safe unpickler raises IndexError, KeyError, struct.error ...
        raise CheckpointError(
            path,
            f"the file is truncated or corrupt and cannot be read by torch.load ({_cause(err)})",
            "copy or download the checkpoint again and compare its size/checksum with the source",
        ) from None
    return _unwrap_torch_object(path, obj)


def _is_zip(path: Path) -> bool:
    return zipfile.is_zipfile(path)


def _unwrap_torch_object(path: Path, obj: Any) -> RawCheckpoint:
    if isinstance(obj, Mapping) and obj.get("format") == PROJECT_FORMAT:
        spec = obj.get("spec")
        state = obj.get("state_dict")
        if not isinstance(spec, Mapping) or not isinstance(state, Mapping):
            raise CheckpointError(path, "project checkpoint without 'spec' or 'state_dict'", "re-save with encoders.save_encoder_checkpoint")
        return RawCheckpoint(path, "project", _tensor_dict(path, state), spec=dict(spec), files=[path])
    if isinstance(obj, torch.nn.Module):  # unreachable with weights_only=True; kept for clarity of intent
        raise CheckpointError(path, "holds a whole pickled module", "save model.state_dict() instead")
    if not isinstance(obj, Mapping):
        raise CheckpointError(path, f"holds a {type(obj).__name__}, not a state dict", "save model.state_dict()")
    for key in NESTED_STATE_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            return RawCheckpoint(path, "torch", _tensor_dict(path, inner), files=[path])
    return RawCheckpoint(path, "torch", _tensor_dict(path, obj), files=[path])


def _tensor_dict(path: Path, mapping: Mapping) -> dict[str, torch.Tensor]:
    tensors = {str(k): v for k, v in mapping.items() if isinstance(v, torch.Tensor)}
    others = [str(k) for k, v in mapping.items() if not isinstance(v, torch.Tensor)]
    if others and not tensors:
        raise CheckpointError(path, f"no tensors found; top-level keys are {others[:8]}", "point at a file that holds a state dict")
    return tensors


def _read_safetensors(path: Path) -> RawCheckpoint:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            path,
            f"a safetensors file that is truncated or corrupt ({_cause(err)})",
            "copy or download the checkpoint again; safetensors files must be complete to be read",
        ) from None
    if metadata.get("format") == PROJECT_FORMAT:
        try:
            spec = json.loads(metadata["spec"])
        except (KeyError, json.JSONDecodeError) as err:
            raise CheckpointError(path, f"project checkpoint with an unreadable spec ({err})", "re-save with encoders.save_encoder_checkpoint") from None
        return RawCheckpoint(path, "project", state, spec=spec, files=[path])
    return RawCheckpoint(path, "safetensors", state, files=[path])


def _read_hf_dir(path: Path) -> RawCheckpoint:
    config_path = path / "config.json"
    if not config_path.exists() and not config_path.is_symlink():
        if (path / MLLM_FILE).exists():
            raise CheckpointError(
                path, f"an MLLM directory ({MLLM_FILE}), not an encoder checkpoint",
                f"pass its vision tower {path / 'encoder.safetensors'}, or load it with encoders.load_encoder / benchmarks.run --encoder, which read that file",
            )
        raise CheckpointError(
            path,
            "directory has no config.json, so it is not a Hugging Face model directory",
            "point --encoder at the folder that holds config.json and the model weights (save_pretrained writes both)",
        )
    _check_openable(config_path)
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(config_path, f"config.json is not valid JSON ({err})", "restore the file from the model's source") from None
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index_path = path / index_name
        if index_path.exists() or index_path.is_symlink():
            return _read_sharded(path, index_path, _read_file, config)
    for file_name in ("model.safetensors", "pytorch_model.bin"):
        weights = path / file_name
        if weights.exists() or weights.is_symlink():
            raw = _read_file(weights, renames={"safetensors": "model.safetensors", "torch": "pytorch_model.bin"})
            return RawCheckpoint(path, "hf-dir", raw.state_dict, hf_config=config, files=[weights])
    raise CheckpointError(
        path,
        "no weights: expected model.safetensors, pytorch_model.bin or a sharded *.index.json",
        "copy the weight files next to config.json",
    )


def _read_sharded(path: Path, index_path: Path, reader, config: dict) -> RawCheckpoint:
    _check_openable(index_path)
    try:
        weight_map: dict[str, str] = json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(index_path, f"shard index is unreadable ({err})", "restore the index json from the model's source") from None
    state: dict[str, torch.Tensor] = {}
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        shard_path = path / shard
        if not shard_path.exists() and not shard_path.is_symlink():
            raise CheckpointError(shard_path, "shard listed in the index is missing", f"copy all {len(shards)} shards named in {index_path.name}")
        state.update(reader(shard_path).state_dict)
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise CheckpointError(index_path, f"{len(missing)} tensors named in the index are in no shard (first: {missing[:3]})", "re-copy the shards")
    return RawCheckpoint(path, "hf-dir-sharded", state, hf_config=config, files=[path / s for s in shards])


def save_encoder_checkpoint(state_dict: Mapping[str, torch.Tensor], spec: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write the project's own encoder checkpoint: weights plus the spec that rebuilds the model.

    ``spec`` needs at least ``family`` and ``arch`` (plus ``options`` if the architecture takes any), so
    that ``--encoder path`` works without ``--arch``. The suffix picks the container: ``.safetensors``
    stores the spec as JSON metadata, ``.pt`` as a plain dict. Written atomically (temp file + rename).
    """
    path = Path(path)
    missing = [key for key in ("family", "arch") if key not in spec]
    if missing:
        raise ValueError(f"encoder spec is missing {missing}; it needs family and arch")
    tensors = {key: value.detach().cpu().contiguous() for key, value in state_dict.items()}
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == SAFETENSORS_SUFFIX:
        from safetensors.torch import save_file

        save_file(tensors, str(tmp), metadata={"format": PROJECT_FORMAT, "spec": json.dumps(dict(spec), sort_keys=True)})
    else:
        torch.save({"format": PROJECT_FORMAT, "spec": dict(spec), "state_dict": tensors}, tmp)
    os.replace(tmp, path)
    return path
