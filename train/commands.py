"""What each ``python -m train`` command takes, declared once: one typed options class per command
(:func:`common.options.option` fields, as the suites of ``benchmarks`` declare theirs).

A field gives its flag (``--visual-layer``), or a positional argument, its help, its default, its
valid values and their check before anything loads. The training settings are not restated here:
``stage`` takes every field of :class:`train.config.StageConfig`, ``pivot-eval`` those of
:class:`train.pivot_eval.PivotSchedule`. Adding a flag is adding a field.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from common.options import option

from .config import StageConfig
from .demo import DEFAULT_REPLICATES, MAX_REPLICATES
from .mllm_check import DEFAULT_TOLERANCE
from .mllm_import import DTYPES
from .pivot_eval import PivotSchedule

PATCH = 16  # the tiny LLaVA tower's patch size in pixels


def _check_image_size(size: int) -> str:
    return "" if size >= PATCH and size % PATCH == 0 else f"the tiny tower's patches are {PATCH} px; pass a multiple of {PATCH} (e.g. 64)"


TOLERANCE_WHY = "the largest accepted |logit difference|, a finite number"


@dataclass(frozen=True, kw_only=True)  # required fields (no default) may follow optional ones
class BuildCommand:
    encoder: str = option(help="encoder checkpoint")
    lm: str = option(help="local transformers causal-LM directory (e.g. Qwen2.5)")
    out: str = option(help="the MLLM directory to write")
    visual_layer: int = option(-2, "the encoder block whose tokens the projector reads (negative = from the end; checked against the encoder before the LM loads)")
    arch: str = option("", "architecture, for encoder files that do not embed one")


@dataclass(frozen=True, kw_only=True)
class StageCommand:
    init: str = option(help="MLLM directory to start from (python -m train build, or a previous stage's OUT/mllm)")
    data: str = option(help="caption or preference JSONL (image paths relative to the file)")
    out: str = option(help="stage folder: checkpoint/, metrics.jsonl, mllm/, encoder.safetensors, stage.json")
    resume: bool = option(False, "continue from OUT/checkpoint (same start, data and settings)")
    device: str = option("", "cpu or cuda (default: cuda when present)")


@dataclass(frozen=True, kw_only=True)
class ShapesDataCommand:
    data: str = option("shapes:n=500:seed=1", "a shapes-world spec")
    split: str = option("train", "the split to write")
    out: str = option(help="folder for images/, captions.jsonl and preferences.jsonl")


@dataclass(frozen=True, kw_only=True)
class DemoCommand:
    out: str = option("runs/demo/lineage", "the lineage folder")
    force: bool = option(False, "retrain even when a lineage made with the same recipe exists")
    original_only: bool = option(False, "train only the original encoder, into train/assets (the shipped demo-original.safetensors and its recipe sidecar)")
    replicates: int = option(DEFAULT_REPLICATES, "Stage-2 training seeds per arm (sft, dpo) from the one Stage-1 model; the default is what fits the demo's "
                             "15-minute first run on 2 cores; the controls need 2", minimum=1, maximum=MAX_REPLICATES, why="each one adds 6 trainings; e.g. --replicates 3")


@dataclass(frozen=True, kw_only=True)
class PivotEvalCommand:
    encoder: str = option("", "encoder checkpoint")
    encoders: str = option("", "lineage manifest: every encoder gets its own fresh MLLM; OUT/lineage.toml is written")
    arch: str = option("", "architecture, for an --encoder file that does not embed one")
    lm: str = option(help="the new LM: a local transformers causal-LM directory")
    data: str = option(help="folder with captions.jsonl + preferences.jsonl (python -m train shapes-data), or a shapes spec")
    out: str = option(help="the folder of the fresh MLLMs")
    device: str = option("", "cpu or cuda (default: cuda when present)")


@dataclass(frozen=True, kw_only=True)
class ImportCommand:
    source: str = option(help="the MLLM to read: a LlavaForConditionalGeneration directory or a LLaVA-NeXT/OneVision checkpoint", positional=True, metavar="SOURCE")
    out: str = option(help="the project MLLM directory to write (mllm.json records the source and the import check)", positional=True, metavar="OUT")
    dtype: str = option("fp32", "dtype of the written weights", choices=tuple(DTYPES))
    vision_config: str = option("", "LLaVA-NeXT: a folder with the vision tower's config.json (when mm_vision_tower is a hub name the project does not know)", metavar="DIR")
    check_tolerance: float = option(DEFAULT_TOLERANCE, "largest |logit difference| the import check accepts (fp32)", minimum=0, why=TOLERANCE_WHY)


@dataclass(frozen=True, kw_only=True)
class ExportCommand:
    mllm: str = option(help="an MLLM directory (python -m train ... OUT/mllm, or any layout import-mllm reads)", positional=True, metavar="MLLM")
    out: str = option(help="the LlavaForConditionalGeneration directory to write", positional=True, metavar="OUT")
    format: str = option("llava-hf", "the layout to write", choices=("llava-hf",))
    check_tolerance: float = option(DEFAULT_TOLERANCE, "largest |logit difference| the export check accepts", minimum=0, why=TOLERANCE_WHY)


@dataclass(frozen=True, kw_only=True)
class TinyLlavaCommand:
    out: str = option(help="the directory to write", positional=True, metavar="OUT")
    layout: str = option("llava-hf", "transformers' Llava layout or the LLaVA-NeXT repository's", choices=("llava-hf", "llava-next"))
    tower: str = option("siglip", "the vision tower's family", choices=("siglip", "clip"))
    lm: str = option("qwen2", "the LM's family", choices=("qwen2", "llama"))
    image_size: int = option(64, f"the tower's input size in pixels (patch {PATCH})", check=_check_image_size)
    corpus: str = option("", "a caption or preference JSONL whose words the tokenizer should know (python -m train shapes-data)")


@dataclass(frozen=True)
class Command:
    """One ``python -m train`` command: its ``help`` line, its ``inputs`` (what to read and write) and
    the training ``settings`` it takes (``None``: none); ``settings_defaults``: the settings' defaults as
    ``--help`` shows them where they are not the fields' own (per stage)."""

    help: str
    inputs: type
    settings: type | None = None
    settings_defaults: dict[str, str] = field(default_factory=dict)


def commands() -> dict[str, Command]:
    """Every command by name, in ``--help`` order."""
    from .config import STAGE_DEFAULTS, shown_defaults

    return {
        "build": Command("a new MLLM: encoder checkpoint + fresh projector + local LM directory", BuildCommand),
        "stage": Command("train one stage from an MLLM directory (every setting defaults to the stage's, docs/protocol.md)", StageCommand, StageConfig,
                         shown_defaults(STAGE_DEFAULTS)),
        "shapes-data": Command("write the shapes world as caption + preference JSONL with PNG images", ShapesDataCommand),
        "demo": Command("train the demo lineage (original, +SFT, +PIVOT) on the shapes world, on CPU", DemoCommand),
        "pivot-eval": Command("PIVOT's protocol: each encoder frozen inside a fresh MLLM (new LM; projector, then projector + LM)", PivotEvalCommand, PivotSchedule),
        "import-mllm": Command("a transformers Llava directory or a LLaVA-NeXT checkpoint as a project MLLM directory, checked against transformers", ImportCommand),
        "export-mllm": Command("a project MLLM as a transformers LlavaForConditionalGeneration directory (for transformers, lmms-eval's llava_hf)", ExportCommand),
        "tiny-llava": Command("write a tiny random LLaVA (transformers Llava or LLaVA-NeXT layout) to try import-mllm, export-mllm and the MLLM suites", TinyLlavaCommand),
    }
