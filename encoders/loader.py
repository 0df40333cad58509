"""The one public way to turn a checkpoint into an :class:`Encoder`, strictly.

Strict by default: every tensor the model expects must come from the checkpoint with the right shape,
and every tensor of the checkpoint must be used (or be dropped by a recognised layout rule, which is
recorded). Anything else is a :class:`CheckpointError` that lists the keys and the likely cause.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import torch

from . import families  # noqa: F401  (registers the built-in families)
from .base import Encoder, weights_hash
from .checkpoint import MLLM_FILE, CheckpointError, RawCheckpoint, read_checkpoint, save_encoder_checkpoint
from .controls import CONTROL_KEY, install_control, shuffle_tokens
from .family import FAMILIES, EncoderFamily
from .layouts import KeyDiff, NoVisionTowerError, RemapReport, diff_keys, extract_vision_tower, strip_wrappers

DEFAULT_FAMILY = "timm"
SHOWN_KEYS = 5


@dataclass
class EncoderSpec:
    """What to load: ``checkpoint`` path, ``family`` + ``arch`` (optional when the checkpoint embeds its
    spec or is an HF directory), architecture ``options`` (e.g. ``img_size``), and lineage metadata:
    ``role`` (original, sft, pivot or any word) and ``base`` (name of the original it derives from).
    ``allow_partial`` loads despite missing/unexpected keys, ``allow_resample`` despite position/patch
    embeddings whose shape a converter had to change; both are recorded in the remap report.
    ``mllm`` is the directory of an MLLM built around this encoder (``train.mllm.load_mllm`` reads it;
    used by the grad/align/vqa suites) and ``vqa_results`` an lmms-eval results file or folder to ingest.
    ``replicate`` (0, 1, ...; None when not a replicate) is the training-seed replicate of its arm:
    encoders with the same ``role`` and ``base`` form one arm, trained K times with different seeds.
    ``checkpoint`` may also be an MLLM directory: its vision tower is loaded. ``arch_source`` says where
    ``arch`` came from, for messages: empty for ``--arch``, else e.g. the arch field of a manifest entry;
    it changes no number, so it stays out of run records (:meth:`record`) and comparisons."""

    checkpoint: str
    name: str = ""
    family: str = ""
    arch: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    role: str = ""
    base: str = ""
    allow_partial: bool = False
    allow_resample: bool = False
    mllm: str = ""
    vqa_results: str = ""
    replicate: int | None = None
    arch_source: str = field(default="", repr=False, compare=False, metadata={"record": False})

    def display_name(self) -> str:
        return self.name or Path(self.checkpoint).stem

    def record(self) -> dict[str, Any]:
        """The spec as a run records it (``config.json``; ``EncoderSpec(**record)`` reads it back):
        every field but those that only shape messages."""
        return {item.name: copy.deepcopy(getattr(self, item.name)) for item in fields(self) if item.metadata.get("record", True)}


def parse_arch(arch: str, family: str = "") -> tuple[str, str]:
    """``'open_clip:ViT-B-32'`` -> ('open_clip', 'ViT-B-32'); a bare name is ``family`` or timm's."""
    if ":" in arch and arch.split(":", 1)[0] in FAMILIES:
        prefix, name = arch.split(":", 1)
        if family and family != prefix:
            raise ValueError(f"--arch {arch!r} names family {prefix!r} but family {family!r} was given")
        return prefix, name
    return family or DEFAULT_FAMILY, arch


def load_encoder(spec: EncoderSpec | str | os.PathLike, *, device: str | torch.device = "cpu", **overrides: Any) -> Encoder:
    """Load an encoder from ``spec`` (or a checkpoint path plus keyword fields of EncoderSpec).

    Raises CheckpointError (naming the file and the fix) for unreadable files, unknown architectures,
    key mismatches (unless ``allow_partial``) and non-finite weights.
    """
    if not isinstance(spec, EncoderSpec):
        spec = EncoderSpec(checkpoint=str(spec), **overrides)
    raw = read_checkpoint(mllm_vision_tower(spec.checkpoint) or spec.checkpoint)
    family, arch, options = _resolve_architecture(spec, raw)
    control = options.get(CONTROL_KEY)  # a control encoder (encoders.controls): built, then altered as the file says
    try:
        torch.manual_seed(0)  # deterministic init of anything a partial load leaves untouched
        model = family.build(arch, {k: v for k, v in options.items() if k != CONTROL_KEY}, hf_config=raw.hf_config)
        if control is not None:
            install_control(model, control)
    except ValueError as err:
        fix = _embedded_fix(raw, family.name, arch, options, "cannot be built") if raw.spec is not None else "pass the architecture the checkpoint was trained with (--arch)"
        raise CheckpointError(raw.path, str(err), fix) from None
    report = RemapReport()
    state = _remap(raw, family, model, report)
    _check_resampled(raw.path, report, spec.allow_resample, arch)
    _check_finite(raw.path, state)
    _load_into(raw.path, model, state, report, family.name, arch, spec.allow_partial, embedded=_embedded_fix(raw, family.name, arch, options, "does not match its weights") if raw.spec is not None else "")
    model.eval().to(device)
    num_layers, num_prefix, dim = family.structure(model)
    return Encoder(
        model,
        name=spec.display_name(),
        family=family.name,
        arch=arch,
        preprocess=family.preprocess(model, arch, {k: v for k, v in options.items() if k != CONTROL_KEY}, source=raw.path if raw.path.is_dir() else None),
        adapter=family.adapter(model),
        num_layers=num_layers,
        num_prefix_tokens=num_prefix,
        embed_dim=dim,
        weights_hash=weights_hash(model.state_dict()),
        checkpoint=str(raw.path),
        checkpoint_format=raw.format,
        remap=report,
        options=options,
    )


def make_token_shuffled(checkpoint: str | os.PathLike, out: str | os.PathLike, *, seed: int = 0) -> Path:
    """Write ``out``: the encoder of ``checkpoint`` as the token_shuffle positive control (same weights,
    ``encoders.controls``); loading ``out`` builds the control again from the spec it embeds."""
    encoder = load_encoder(checkpoint)
    shuffle_tokens(encoder, seed)
    return save_encoder_checkpoint(encoder.model.state_dict(), {"family": encoder.family, "arch": encoder.arch, "options": encoder.options}, out)


def mllm_vision_tower(path: str | os.PathLike) -> Path | None:
    """The encoder checkpoint of an MLLM directory (``mllm.json`` inside, as ``python -m train`` writes), else None."""
    path = Path(path)
    return path / "encoder.safetensors" if (path / MLLM_FILE).is_file() else None


def _embedded_fix(raw: RawCheckpoint, family: str, arch: str, options: Mapping[str, Any], problem: str) -> str:
    """The fix when the architecture a project checkpoint embeds ``problem`` (e.g. does not match its
    weights): re-save the file with the right spec; ``--arch`` cannot help, the file's spec is authoritative."""
    return (
        f"the architecture embedded in this file ({family}:{arch}, options {dict(options)}) {problem}, and --arch cannot override it "
        f"(a project checkpoint carries its own): re-save the weights with the spec of the model they came from, "
        f"encoders.save_encoder_checkpoint(state_dict, {{'family': ..., 'arch': ..., 'options': {{...}}}}, path), or fix the options in the manifest entry"
    )


def _resolve_architecture(spec: EncoderSpec, raw: RawCheckpoint) -> tuple[EncoderFamily, str, dict[str, Any]]:
    family_name, arch = parse_arch(spec.arch, spec.family) if spec.arch else (spec.family, "")
    options = dict(spec.options)
    if raw.spec is not None:
        embedded_family, embedded_arch = raw.spec["family"], raw.spec["arch"]
        if arch and (arch, family_name) != (embedded_arch, embedded_family):
            source = spec.arch_source or "--arch"
            if not spec.arch_source:
                fix = f"drop --arch: this project checkpoint carries its architecture ({embedded_family}:{embedded_arch}) and is read with it"
            else:
                fix = f"remove that arch field (or set it to {embedded_arch!r}): this project checkpoint carries its architecture and is read with it"
            raise CheckpointError(
                raw.path,
                f"the checkpoint embeds {embedded_family}:{embedded_arch} but {source} asks for {family_name}:{arch}",
                fix + "; if the embedded architecture is the wrong one, re-save the weights with encoders.save_encoder_checkpoint and the right spec",
            )
        family_name, arch = embedded_family, embedded_arch
        options = {**raw.spec.get("options", {}), **options}
    elif raw.hf_config is not None:
        family_name = family_name if spec.family or spec.arch else "hf"
        if not arch:
            try:
                arch = FAMILIES.get(family_name).arch_from_hf_config(raw.hf_config)
            except ValueError as err:
                raise CheckpointError(raw.path, str(err), "pass --arch for this model directory") from None
    if not arch:
        raise CheckpointError(
            raw.path,
            "the checkpoint does not say which architecture it holds",
            "pass --arch, e.g. --arch vit_base_patch16_siglip_224 (timm), --arch open_clip:ViT-B-32, --arch torchvision:resnet50",
        )
    try:
        family = FAMILIES.get(family_name or DEFAULT_FAMILY)
    except KeyError as err:
        raise CheckpointError(raw.path, str(err.args[0]), "use one of the families listed by `python -m encoders list`") from None
    return family, arch, options


def _remap(raw: RawCheckpoint, family: EncoderFamily, model: torch.nn.Module, report: RemapReport) -> dict[str, torch.Tensor]:
    """Apply the generic layout rules, then the family's; fall back to the family's converters.

    ``report`` is filled in place with what the chosen path did.
    """
    unwrapped = strip_wrappers(dict(raw.state_dict), report)
    wrapper_report = copy.deepcopy(report)
    try:
        state = family.remap(extract_vision_tower(unwrapped, report), model, report)
    except NoVisionTowerError as err:
        raise CheckpointError(raw.path, str(err), "point at a checkpoint that includes the vision encoder (or at the encoder's own checkpoint)") from None
    expected = model.state_dict()
    if diff_keys(state, expected).ok:
        return state
    for name, convert in family.converters(model):
        trial = copy.deepcopy(wrapper_report)
        try:
            converted = family.remap(convert(unwrapped), model, trial)
        except Exception:  # a converter written for another layout may fail on this one: it does not apply
            continue
        if diff_keys(converted, expected).ok:
            # Named tensors whose size changed; else what the converter's resampling calls reported (renamed keys).
            trial.resampled = _shape_changes(unwrapped, converted) or list(getattr(convert, "resampled", []))
            trial.converter = name
            trial.layouts.append("converted")
            report.__dict__.update(trial.__dict__)
            return converted
    return state


def _shape_changes(before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor]) -> list[str]:
    """Tensors kept under their name whose number of elements a converter changed (a reshape is fine)."""
    return [f"{key}: {tuple(before[key].shape)} -> {tuple(value.shape)}" for key, value in after.items()
            if key in before and before[key].numel() != value.numel()]


def _check_resampled(path: Path, report: RemapReport, allow: bool, arch: str) -> None:
    report.resampled = list(dict.fromkeys(report.resampled))
    if report.resampled and not allow:
        raise CheckpointError(
            path,
            f"loading into {arch!r} would change tensor shapes on the way in ({'; '.join(report.resampled)}): the checkpoint was trained at another resolution or patch size",
            "pass the matching architecture options (e.g. img_size in the manifest's options, or the arch with that resolution), or --allow-resample to interpolate them (recorded in every result row)",
        )


def _check_finite(path: Path, state: Mapping[str, torch.Tensor]) -> None:
    bad = [key for key, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        raise CheckpointError(
            path,
            f"{len(bad)} tensors contain NaN or Inf (first: {bad[:SHOWN_KEYS]})",
            "the training run diverged or the file was damaged: use an earlier checkpoint",
        )


def _describe_diff(diff: KeyDiff, state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], arch: str, embedded: str = "") -> tuple[str, str]:
    parts = []
    for label, keys in (("missing", diff.missing), ("unexpected", diff.unexpected), ("shape-mismatched", diff.mismatched)):
        if keys:
            parts.append(f"{len(keys)} {label} (first: {keys[:SHOWN_KEYS]})")
    problem = f"checkpoint does not match architecture {arch!r}: " + "; ".join(parts)
    overlap = len(set(state) & set(expected))
    if overlap == 0:
        sample_ckpt = sorted(state)[:2]
        sample_model = sorted(expected)[:2]
        fix = (
            f"no key matches: wrong prefix or wrong --arch (checkpoint keys look like {sample_ckpt}, the model expects {sample_model})"
        )
    elif diff.mismatched:
        fix = "same layout, different sizes: the checkpoint is another variant of the architecture; pass the right --arch (and options such as img_size)"
    else:
        fix = "pass the architecture the checkpoint was trained with (--arch), or --allow-partial to load it anyway (recorded in the results)"
    if embedded:  # a project checkpoint: its embedded spec, not --arch, decides the architecture
        fix = embedded + (", or --allow-partial to load it anyway (recorded in the results)" if not diff.mismatched and overlap else "")
    return problem, fix


def _load_into(path: Path, model: torch.nn.Module, state: dict[str, torch.Tensor], report: RemapReport, family: str, arch: str, allow_partial: bool, embedded: str = "") -> None:
    expected = model.state_dict()
    diff = diff_keys(state, expected)
    if not diff.ok:
        problem, fix = _describe_diff(diff, state, expected, f"{family}:{arch}", embedded)
        if not allow_partial:
            raise CheckpointError(path, problem, fix)
        report.partial = True
        report.missing, report.unexpected, report.mismatched = diff.missing, diff.unexpected, diff.mismatched
        mismatched_keys = {entry.split(":", 1)[0] for entry in diff.mismatched}
        state = {key: value for key, value in state.items() if key in expected and key not in mismatched_keys}
        if not state:
            raise CheckpointError(path, problem + " (nothing at all would load)", fix)
    model.load_state_dict(state, strict=not allow_partial)
