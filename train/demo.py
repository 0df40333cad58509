"""The demo lineage: a really trained original / +SFT / +PIVOT trio on the shapes world, on a 2-core CPU.

1. ``original``: a 4-block ViT with a convolutional stem (64 px, stride 8) pretrained supervised on
   shape type, colour and per-patch classes; trained once and shipped in the package (``train.original``),
   retrained only when its own recipe changes.
2. A tiny Qwen2 LM with a word-level tokenizer over the shapes world's vocabulary.
3. Stage 1: ``align`` (projector only, captions) then ``pretrain`` (everything, captions + QA).
4. Stage 2 from that same Stage-1 MLLM, on the same preference items, same number of steps: ``sft``
   (chosen answers) and ``dpo`` (chosen vs rejected) = +SFT and +PIVOT, each trained ``replicates`` times
   with Stage-2 seeds 0, 1, ... (data order and initial randomness of Stage 2 only; Stage 1 is shared).
5. ``lineage.toml``: the original, and per replicate ``i`` an sft and a pivot entry with base and
   ``replicate = i`` (names ``demo-vit-sft``, ``demo-vit-pivot`` for replicate 0, ``demo-vit-sft-s1``, ...
   after it), with their MLLMs.
6. PIVOT's evaluation protocol (``train.pivot_eval``): each of the three encoders frozen inside a fresh
   MLLM (the untrained tiny LM of step 2, projector then projector + LM on the Stage-1 data);
   ``pivot-eval/lineage.toml`` lists those MLLMs, so VQA compares encoders that differ in nothing else.

The recipe (every setting below, the package versions and the source of ``train/`` and the shapes
world) is hashed; a lineage folder holding the same hash is reused instead of retrained.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

from .config import StageConfig, stage_config
from .original import ORIGINAL, original_recipe_hash
from .tiny_lm import TinyLMConfig

RECIPE_VERSION = 4
STAGE1_DATA = "shapes:n=240:seed=1"  # its train split: captions + QA for Stage 1
STAGE2_DATA = "shapes:n=240:seed=2"  # its train split: the preference items of Stage 2
LM = TinyLMConfig()
# Demo-sized schedules: the study's learning rates (1e-3 / 1e-5 / 5e-6 / 1e-6) barely move tiny models in
# a few dozen steps, so every rate is scaled up, keeping the study's order (SFT 5x DPO's rate).
COMMON = {"global_batch": 32, "micro_batch": 16, "save_every": 0}
# Stage 1 and PIVOT's protocol take smaller steps (batch 16): a tiny LM learns to read the image from the number of
# updates more than from their size (measured at equal seconds: shapes colour exact match 45% at batch 16, 19% at 32).
STAGE1_COMMON = {"global_batch": 16, "micro_batch": 16, "save_every": 0}
# The image after the question: the visual tokens then see which shape is asked about (causal attention), which a
# 2-layer LM trained from scratch needs to answer about any shape but the largest (train.mllm's module docstring).
PROMPT_LAYOUT = "question-image"
# Epochs of Stage 1 (align, pretrain) and of PIVOT's protocol (align, instruct) over STAGE1_DATA. Stage 1 is shared by
# every arm and replicate, so it gets the long schedule (400 pretrain steps). PIVOT's protocol runs once per encoder:
# around the shipped (60-epoch) original, 2 instruct epochs left the fresh MLLM at its blind score (shapes_vqa exact
# match 39.5 against 39.5: degenerate), 4 gave +7 points, 6 give +12 (50.5 against 38.5), for about 14 s per encoder.
STAGE1_ALIGN_EPOCHS, STAGE1_EPOCHS = 2.0, 4.0
PIVOT_EVAL_ALIGN_EPOCHS, PIVOT_EVAL_EPOCHS = 2.0, 6.0
STAGES: dict[str, StageConfig] = {
    "align": stage_config("align", lr=2e-3, epochs=STAGE1_ALIGN_EPOCHS, **STAGE1_COMMON),
    "pretrain": stage_config("pretrain", lr=5e-4, encoder_lr=1e-4, epochs=STAGE1_EPOCHS, **STAGE1_COMMON),
    "sft": stage_config("sft", lr=1e-4, epochs=2.0, **COMMON),
    "dpo": stage_config("dpo", lr=2e-5, epochs=2.0, beta=0.1, **COMMON),
}
# PIVOT's evaluation protocol at demo size: the Stage-1 recipe (same data, rates scaled up alike) with the encoder frozen.
PIVOT_EVAL_STAGES: dict[str, StageConfig] = {
    "align": stage_config("align", lr=2e-3, epochs=PIVOT_EVAL_ALIGN_EPOCHS, **STAGE1_COMMON),
    "instruct": stage_config("pretrain", lr=5e-4, encoder_lr=None, epochs=PIVOT_EVAL_EPOCHS, freeze_encoder=True, **STAGE1_COMMON),
}
# Stage-2 training seeds per arm in `make demo`: two, which the controls need (the null control is a second seed) and
# which let the report test arms across seeds. With the shipped original, K=2 trains in about 310 s on 2 cores and
# the first run ends in about 11 minutes (docs/demo.md); each more seed adds 6 trainings and 2 encoders to every run.
DEFAULT_REPLICATES = 2
MAX_REPLICATES = 16  # each replicate adds 6 trainings (sft, dpo, and PIVOT's two stages for each of their encoders)
DONE_FILE = "demo.json"
PIVOT_EVAL_MANIFEST = "pivot-eval/lineage.toml"


def replicate_suffix(replicate: int) -> str:
    """The suffix of replicate ``i``'s names and folders: none for replicate 0 (today's names), ``-s<i>`` after it."""
    return f"-s{replicate}" if replicate else ""


def recipe(replicates: int = DEFAULT_REPLICATES) -> dict[str, Any]:
    """Everything that shapes the lineage, as plain data (the reuse key is its hash)."""
    import timm
    import torch
    import transformers

    package = Path(__file__).parent
    sources = sorted(package.glob("*.py")) + [package.parent / "imagesets" / "shapes.py"]
    source_hash = hashlib.sha256(b"".join(path.read_bytes() for path in sources)).hexdigest()[:16]
    return {
        "version": RECIPE_VERSION, "replicates": replicates, "original": original_recipe_hash(), "lm": LM.__dict__, "stage1_data": STAGE1_DATA, "stage2_data": STAGE2_DATA, "prompt_layout": PROMPT_LAYOUT,
        "stages": {name: config.to_dict() for name, config in STAGES.items()},
        "pivot_eval": {name: config.to_dict() for name, config in PIVOT_EVAL_STAGES.items()},
        "packages": {"torch": torch.__version__, "timm": timm.__version__, "transformers": transformers.__version__}, "sources": source_hash,
    }


def recipe_hash(replicates: int = DEFAULT_REPLICATES) -> str:
    return hashlib.sha256(json.dumps(recipe(replicates), sort_keys=True).encode()).hexdigest()[:16]


def check_replicates(replicates: int) -> None:
    """ValueError naming the flag unless ``replicates`` is a whole number in [1, MAX_REPLICATES]."""
    if isinstance(replicates, bool) or not isinstance(replicates, int) or not 1 <= replicates <= MAX_REPLICATES:
        raise ValueError(f"--replicates {replicates!r}: the number of Stage-2 training seeds per arm must be a whole number >= 1 and <= {MAX_REPLICATES} "
                         f"(each one adds 6 trainings); e.g. --replicates 3")


def training_count(replicates: int, original: bool = True) -> int:
    """The trainings of a demo lineage: the original ViT (unless the shipped one is used), Stage 1's align and
    pretrain, Stage 2's sft and dpo per replicate, and PIVOT's evaluation (align, then instruct) of each of the
    1 + 2 x replicates encoders."""
    return int(original) + 2 + 2 * replicates + 2 * (1 + 2 * replicates)


def manifest_text(replicates: int) -> str:
    """``lineage.toml`` of the demo: the original, then per replicate its +SFT and +PIVOT entries."""
    text = ("# The demo lineage (python -m train demo): a trained original and its +SFT / +PIVOT (DPO) descendants,\n"
            f"# {replicates} Stage-2 training seed(s) per arm (replicate = i; same role + base = one arm).\n"
            '[[encoder]]\nname = "demo-vit"\ncheckpoint = "original.safetensors"\nrole = "original"\nmllm = "pretrain/mllm"\n')
    for replicate in range(replicates):
        suffix = replicate_suffix(replicate)
        for role, stage in (("sft", "sft"), ("pivot", "dpo")):
            text += (f'\n[[encoder]]\nname = "demo-vit-{role}{suffix}"\ncheckpoint = "{stage}{suffix}/encoder.safetensors"\nrole = "{role}"\n'
                     f'base = "demo-vit"\nmllm = "{stage}{suffix}/mllm"\nreplicate = {replicate}\n')
    return text


def schedule_note(replicates: int = DEFAULT_REPLICATES) -> str:
    """One paragraph stating the demo-sized schedules (shown in the report)."""
    stages = "; ".join(
        f"{name} lr {config.lr:g}" + (f" (encoder {config.encoder_lr:g})" if config.encoder_lr is not None else "") + f", {config.epochs:g} epochs"
        for name, config in STAGES.items()
    )
    return (
        f"Demo lineage, really trained on CPU: original = 4-block ViT with a convolutional stem (64 px, 8x8 tokens, embed 96) pretrained "
        f"supervised on shape type, colour and per-patch classes ({ORIGINAL.data} train split, {ORIGINAL.epochs} epochs, batch {ORIGINAL.batch_size}; trained once and shipped); MLLM = that encoder's penultimate-block tokens -> GELU MLP -> "
        f"tiny Qwen2 ({LM.num_hidden_layers} layers, width {LM.hidden_size}, word-level tokenizer), image placed {'after' if PROMPT_LAYOUT == 'question-image' else 'before'} the question. "
        f"Stage 1 on {STAGE1_DATA} (captions + QA, global batch {STAGE1_COMMON['global_batch']}), Stage 2 (SFT vs DPO, beta {STAGES['dpo'].beta}) from the same Stage-1 model on the same preference items of "
        f"{STAGE2_DATA}, {replicates} training seed(s) per Stage-2 arm (seed i changes Stage 2's data order and initial randomness; Stage 1 is shared), global batch {COMMON['global_batch']}, cosine with 3% warm-up: {stages}. Learning rates are scaled up from the "
        f"study's so that tiny models move in few steps. PIVOT evaluation protocol: each encoder frozen inside a fresh MLLM (the untrained "
        f"tiny LM, align lr {PIVOT_EVAL_STAGES['align'].lr:g} then projector + LM lr {PIVOT_EVAL_STAGES['instruct'].lr:g}, "
        f"{PIVOT_EVAL_STAGES['align'].epochs:g} + {PIVOT_EVAL_STAGES['instruct'].epochs:g} epochs, global batch {STAGE1_COMMON['global_batch']}, on the Stage-1 data)."
    )


def _corpus(files: list[Path]) -> list[str]:
    """Every text the LM must tokenise: the training files plus the full shapes vocabulary."""
    from imagesets.shapes import COLOUR_NAMES, SHAPE_NAMES

    from .data import CAPTION_PROMPT

    texts = [CAPTION_PROMPT, " ".join(SHAPE_NAMES), " ".join(COLOUR_NAMES), " ".join(str(n) for n in range(10)),
             "yes no left right top bottom half of the image an a large with and , ? How many What colour is Is there in shapes are"]
    for path in files:
        for line in path.read_text().splitlines():
            texts.extend(str(value) for key, value in json.loads(line).items() if key != "image")
    return texts


@contextlib.contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """``timings[name]``: the seconds the block took (not recorded when it raises)."""
    began = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - began, 2)


def _train_lineage(out: Path, captions: Path, stage1_mixed: Path, preferences: Path, replicates: int, timings: dict[str, float],
                   log: Callable[[str], None], progress: bool) -> dict[str, Any]:
    """Stage 1 (align, pretrain) from ``out/mllm-init``, then SFT and DPO from its end, ``replicates`` seeds each;
    the stage results by name (``sft``, ``dpo``, ``sft-r1``, ...)."""
    from .loop import train_stage

    runs = {}
    for name, start, data in (("align", out / "mllm-init", captions), ("pretrain", out / "align" / "mllm", stage1_mixed)):
        with _timed(timings, name):
            runs[name] = train_stage(start, data, out / name, STAGES[name], log=log, progress=progress)
    for replicate in range(replicates):
        suffix = replicate_suffix(replicate)
        for stage in ("sft", "dpo"):
            with _timed(timings, stage + suffix):
                config = STAGES[stage].with_overrides(seed=replicate)
                runs[stage + suffix] = train_stage(out / "pretrain" / "mllm", preferences, out / (stage + suffix), config, log=log, progress=progress)
        if runs["sft" + suffix].steps != runs["dpo" + suffix].steps:
            raise RuntimeError(f"sft ran {runs['sft' + suffix].steps} steps and dpo {runs['dpo' + suffix].steps}; the comparison needs equal schedules")
    return runs


def make_demo_lineage(out: str | os.PathLike, *, replicates: int = DEFAULT_REPLICATES, force: bool = False, log: Callable[[str], None] = print,
                      progress: bool = True) -> Path:
    """Train (or reuse) the demo lineage in ``out`` with ``replicates`` Stage-2 seeds per arm (>= 1); returns
    its ``lineage.toml`` (the PIVOT-evaluation manifest, one fresh MLLM per encoder, is ``out / PIVOT_EVAL_MANIFEST``)."""
    check_replicates(replicates)
    from .data import write_shapes_data
    from .mllm import IMAGE_TOKEN, build_mllm, save_mllm
    from .pivot_eval import PivotEvalData, pivot_eval_lineage
    from .tiny_lm import build_tiny_lm
    from .original import original_is_shipped, place_original

    out = Path(out)
    key = recipe_hash(replicates)
    done = out / DONE_FILE
    manifest = out / "lineage.toml"
    if not force and done.exists() and manifest.exists() and (out / PIVOT_EVAL_MANIFEST).exists() and json.loads(done.read_text()).get("recipe_hash") == key:
        log(f"demo lineage: reusing {out} (recipe {key} unchanged, {replicates} replicate(s) per arm)")
        return manifest
    shipped = original_is_shipped()
    log(f"demo lineage: {training_count(replicates, not shipped)} trainings to run in {out} ({'the shipped original, ' if shipped else 'the original ViT, '}Stage 1's align and pretrain, sft and dpo x "
        f"{replicates} replicate(s), PIVOT's align and instruct for each of the {1 + 2 * replicates} encoders)")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    with _timed(timings, "original encoder"):
        original = out / "original.safetensors"
        vit_accuracy, original_from = place_original(original, log=log, progress=progress)
    with _timed(timings, "data + LM"):
        stage1 = write_shapes_data(STAGE1_DATA, "train", out / "data" / "stage1")
        stage2 = write_shapes_data(STAGE2_DATA, "train", out / "data" / "stage2")
        stage1_mixed = out / "data" / "stage1" / "captions_and_qa.jsonl"
        stage1_mixed.write_text(stage1["captions"].read_text() + stage1["preferences"].read_text())
        lm_dir = build_tiny_lm(out / "lm", _corpus([stage1_mixed, stage2["preferences"]]), LM, extra_special=[IMAGE_TOKEN])
        save_mllm(build_mllm(original, lm_dir, visual_layer=-2, seed=0, prompt_layout=PROMPT_LAYOUT), out / "mllm-init")
    runs = _train_lineage(out, stage1["captions"], stage1_mixed, stage2["preferences"], replicates, timings, log, progress)

    manifest.write_text(manifest_text(replicates))
    with _timed(timings, "pivot-eval"):
        pivot_eval_lineage(manifest, lm_dir, PivotEvalData(stage1["captions"], stage1["preferences"]), out / Path(PIVOT_EVAL_MANIFEST).parent,
                           align=PIVOT_EVAL_STAGES["align"], instruct=PIVOT_EVAL_STAGES["instruct"], prompt_layout=PROMPT_LAYOUT, log=log, progress=progress)
    summary = {"recipe_hash": key, "recipe": recipe(replicates), "note": schedule_note(replicates), "replicates": replicates, "original_val_accuracy": vit_accuracy, "original_from": original_from, "seconds": timings,
               "total_seconds": round(time.perf_counter() - started, 1), "stages": {name: run.summary for name, run in runs.items()}}
    done.write_text(json.dumps(summary, indent=2, default=str))
    log(f"demo lineage: trained in {summary['total_seconds']:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())}); manifest {manifest}")
    return manifest
