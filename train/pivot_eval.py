"""PIVOT's evaluation protocol: judge an encoder inside a *fresh* MLLM (docs/protocol.md, "Training").

For each encoder: freeze it, pair it with a new LM (``--lm``: a local transformers directory), train the
projector alone on captions (``align``), then projector + LM on instruction data (``pretrain`` with
``freeze_encoder``), both with the training loop of ``train.loop``. The encoder's weights hash is
checked to be unchanged at the end. For a lineage manifest the same recipe runs once per encoder and a
new manifest is written with the same names, roles and bases and ``mllm`` pointing at the fresh
MLLMs, so ``python -m benchmarks.run --encoders OUT/lineage.toml --suite vqa`` compares the encoders
inside MLLMs that differ only in the encoder, as the study did.

Data (``--data``): a folder with ``captions.jsonl`` and ``preferences.jsonl`` (what ``python -m train
shapes-data`` writes; the preference file's chosen answers are the instruction data), or a shapes-world
spec (``shapes:n=240:seed=3``) whose train split is written first.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from common.options import option_like

from .config import StageConfig, stage_config

# LLaVA-1.5's two stages with a frozen encoder (projector 1e-3; projector + LLM 2e-5), one epoch each.
ALIGN = stage_config("align", lr=1e-3, epochs=1.0)
INSTRUCT = stage_config("pretrain", lr=2e-5, encoder_lr=None, epochs=1.0, freeze_encoder=True)


@dataclass(frozen=True)
class PivotSchedule:
    """The settings ``python -m train pivot-eval`` lets a user change: each stage's learning rate, and the
    epochs, batches and seed of both. Each is a :class:`StageConfig` setting under its own name (its rules
    are StageConfig's), with :data:`ALIGN` / :data:`INSTRUCT`'s value as its default."""

    align_lr: float = option_like(StageConfig, "lr", ALIGN.lr, "the align stage's learning rate (projector alone)")
    instruct_lr: float = option_like(StageConfig, "lr", INSTRUCT.lr, "the instruct stage's learning rate (projector + LM)")
    epochs: float = option_like(StageConfig, "epochs", ALIGN.epochs, "passes over the data, each stage")
    global_batch: int = option_like(StageConfig, "global_batch", ALIGN.global_batch)
    micro_batch: int = option_like(StageConfig, "micro_batch", ALIGN.micro_batch)
    seed: int = option_like(StageConfig, "seed", ALIGN.seed)

    def stages(self) -> dict[str, StageConfig]:
        """The two stages' configs: ``{"align": ..., "instruct": ...}`` (the keywords of :func:`pivot_eval`)."""
        both = {"epochs": self.epochs, "global_batch": self.global_batch, "micro_batch": self.micro_batch, "seed": self.seed}
        return {"align": ALIGN.with_overrides(lr=self.align_lr, **both), "instruct": INSTRUCT.with_overrides(lr=self.instruct_lr, **both)}


PROTOCOL = "pivot-eval"  # the value of mllm.json's "protocol" for MLLMs built here


@dataclass(frozen=True)
class PivotEvalData:
    captions: Path
    instructions: Path


def resolve_data(data: str | os.PathLike, work: Path) -> PivotEvalData:
    """The caption and instruction files of ``--data`` (a folder, or a shapes spec written into ``work``)."""
    text = str(data)
    if text.startswith("shapes"):
        from .data import write_shapes_data

        paths = write_shapes_data(text, "train", work / "data")
        return PivotEvalData(paths["captions"], paths["preferences"])
    folder = Path(data)
    captions, instructions = folder / "captions.jsonl", folder / "preferences.jsonl"
    missing = [str(p) for p in (captions, instructions) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"--data {folder}: missing {', '.join(missing)}; pass a folder written by `python -m train shapes-data` or a shapes spec such as shapes:n=240:seed=3")
    return PivotEvalData(captions, instructions)


def pivot_eval(encoder: str | os.PathLike, lm: str | os.PathLike, data: PivotEvalData, out: str | os.PathLike, *,
               align: StageConfig = ALIGN, instruct: StageConfig = INSTRUCT, arch: str = "", device: str | None = None,
               prompt_layout: str = "image-question", log: Callable[[str], None] = print, progress: bool = True) -> Path:
    """Train a fresh MLLM around the frozen ``encoder`` (see the module docstring); returns its directory.
    ``prompt_layout``: where the image goes in the prompt (``train.mllm.PROMPT_LAYOUTS``)."""
    from .loop import TrainingError, train_stage
    from .mllm import build_mllm, load_mllm, save_mllm

    if align.stage != "align" or instruct.trains_encoder:
        raise ValueError("pivot-eval trains the projector (align) then projector + LM with the encoder frozen (freeze_encoder=True)")
    out = Path(out)
    vision = _vision_side(encoder, arch)
    loaded = vision.encoder
    before = loaded.weights_hash
    start = out / "mllm-init"
    existing = json.loads((start / "mllm.json").read_text()) if (start / "mllm.json").exists() else {}
    if existing.get("encoder_weights_hash") != before or existing.get("prompt_layout", "image-question") != prompt_layout:
        fresh = build_mllm(loaded, lm, seed=align.seed, prompt_layout=prompt_layout, visual_layer=vision.visual_layer, keep_prefix=vision.keep_prefix,
                           image_input=vision.image_input)
        save_mllm(fresh, start, extra={"pivot_eval": {"encoder": str(encoder), "lm": str(lm)}})
    began = time.perf_counter()
    first = train_stage(start, data.captions, out / "align", align, device=device, log=log, progress=progress)
    second = train_stage(first.mllm_dir, data.instructions, out / "instruct", instruct, device=device, log=log, progress=progress)
    after = load_mllm(second.mllm_dir).encoder.weights_hash
    if after != before:
        raise TrainingError(f"pivot-eval: the encoder changed during training ({before[:12]} -> {after[:12]}); it must stay frozen")
    _mark_protocol(second.mllm_dir, {"encoder": str(encoder), "lm": str(lm)})
    (out / "pivot_eval.json").write_text(json.dumps({
        "encoder": str(encoder), "encoder_weights_hash": before, "lm": str(lm), "captions": str(data.captions),
        "instructions": str(data.instructions), "align": align.to_dict(), "instruct": instruct.to_dict(),
        "steps": {"align": first.steps, "instruct": second.steps}, "seconds": round(time.perf_counter() - began, 1), "mllm": str(second.mllm_dir),
    }, indent=2))
    log(f"pivot-eval: {encoder} -> fresh MLLM {second.mllm_dir} (encoder unchanged, hash {before[:12]})")
    return second.mllm_dir


def _vision_side(encoder: str | os.PathLike, arch: str):
    """The encoder to freeze: an encoder checkpoint (its penultimate block's patch tokens, its own
    preprocessing), or the vision side of an MLLM of any layout (its tower, visual block(s), prefix rule and
    image processor, so the fresh MLLM sees the image as the source did)."""
    from encoders import EncoderSpec, load_encoder

    from .mllm_layouts import VisionSide, detect_layout

    layout = detect_layout(encoder)
    if layout is not None:
        return layout.read_vision(Path(encoder))
    loaded = load_encoder(EncoderSpec(checkpoint=str(encoder), arch=arch))
    from .image_input import ImageInput

    return VisionSide(loaded, -2, False, ImageInput(loaded.preprocess))


def _mark_protocol(mllm_dir: Path, details: dict[str, str]) -> None:
    """Record in ``mllm.json`` that this MLLM was built by the protocol, so its VQA rows say so (``extra["protocol"]``)."""
    meta_path = mllm_dir / "mllm.json"
    meta = json.loads(meta_path.read_text())
    meta.update({"protocol": PROTOCOL, "pivot_eval": details})
    temporary = meta_path.with_name(meta_path.name + ".tmp")
    temporary.write_text(json.dumps(meta, indent=2))
    temporary.replace(meta_path)


def pivot_eval_lineage(manifest: str | os.PathLike, lm: str | os.PathLike, data: PivotEvalData, out: str | os.PathLike, **kwargs) -> Path:
    """Run :func:`pivot_eval` for every encoder of ``manifest``; writes and returns ``OUT/lineage.toml``
    (same names, roles, bases, replicates and checkpoints, ``mllm`` = the fresh MLLMs)."""
    from encoders import load_manifest

    out = Path(out)
    entries = []
    for spec in load_manifest(manifest):
        folder = out / re.sub(r"[^A-Za-z0-9_.-]+", "-", spec.name)
        mllm = pivot_eval(spec.checkpoint, lm, data, folder, arch=spec.arch, **kwargs)
        # Paths relative to OUT (where the manifest is read from), so the folder can move with its inputs.
        fields = {"name": spec.name, "checkpoint": os.path.relpath(Path(spec.checkpoint).resolve(), out.resolve()), "role": spec.role, "base": spec.base,
                  "arch": spec.arch, "family": spec.family, "mllm": os.path.relpath(mllm.resolve(), out.resolve()), "replicate": spec.replicate}
        entries.append("[[encoder]]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in fields.items() if value not in ("", None)))
    path = out / "lineage.toml"
    path.write_text("# PIVOT evaluation protocol (python -m train pivot-eval): each encoder frozen inside a fresh MLLM.\n" + "\n".join(entries))
    return path
