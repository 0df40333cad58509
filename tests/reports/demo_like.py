"""Run directories shaped like ``python -m benchmarks.demo --replicates K --control`` writes them, without
training anything: the four evaluation runs (seg, shapes, pivot-eval, digits) of the lineage ``demo-vit``
(original + K seeds of +SFT and of +PIVOT) and the controls run (``control-stage1`` with its token-shuffled
positive control, ``control-sft`` (the lineage's +SFT) with its seed-only null control), each with results.jsonl, per_item/*.npy
and a config.json carrying the demo's notes (texts as benchmarks/demo.py and train/demo.py wrote them at
commit e715164), the suites' headlines, timings, hardware and versions.

Values follow what the README's demo section measured (seg patch recall ~20-25 against 9.1, pointing game
42-47.5 against 22.8, ...); the controls run reproduces the demo's measurement: the positive control flagged
by loc, seg and grad (on its control headline), the null control flagged nowhere (or, planted, on loc).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.results import ResultRow, append_rows

DATA = "shapes:n=800:seed=0"
SCHEDULE_NOTE = (
    "Demo lineage, really trained on CPU: original = 4-block ViT with a convolutional stem (64 px, 8x8 tokens, embed 96) pretrained supervised "
    "on shape type, colour and per-patch classes (shapes:n=4000:seed=3 train split, 10 epochs, batch 32); MLLM = that encoder's penultimate-block "
    "tokens -> GELU MLP -> tiny Qwen2 (2 layers, width 128, word-level tokenizer), image placed after the question. Stage 1 on shapes:n=240:seed=1 "
    "(captions + QA, global batch 16), Stage 2 (SFT vs DPO, beta 0.1) from the same Stage-1 model on the same preference items of shapes:n=240:seed=2, "
    "{k} training seed(s) per Stage-2 arm (seed i changes Stage 2's data order and initial randomness; Stage 1 is shared), global batch 32, cosine "
    "with 3% warm-up: align lr 0.002, 2 epochs; pretrain lr 0.0005 (encoder 0.0001), 4 epochs; sft lr 0.0001, 2 epochs; dpo lr 2e-05, 2 epochs. "
    "Learning rates are scaled up from the study's so that tiny models move in few steps. PIVOT evaluation protocol: each encoder frozen inside a "
    "fresh MLLM (the untrained tiny LM, align lr 0.002 then projector + LM lr 0.0005, 2 + 2 epochs, global batch 16, on the Stage-1 data)."
)
EVAL_NOTE = (
    "Evaluation, demo-sized: shapes world with 800 train / 200 val images at 224 px (resized to the encoder's 64 px), linear grid of 40 heads "
    "(8 learning rates x 5 weight decays) for at least 10 epochs / 300 steps, last block; seg: mmseg linear head 60 iterations at lr 0.02, patch "
    "probe 2 epochs x 1 seed and fast head 12 epochs, each raised to at least 150 optimizer steps (the suite's default is 1000); loc/grad/align on "
    "the default item counts; VQA: lmms-eval on 200 offline shapes-world questions (shapes_vqa, shapes_vqa_mc) instead of the 16 Cambrian benchmarks."
)
PIVOT_EVAL_NOTE = ("PIVOT evaluation protocol, demo-sized: each encoder frozen inside a fresh MLLM (new tiny LM; projector, then projector + LM, "
                   "on the Stage-1 data), then lmms-eval on 200 offline shapes-world questions.")
CONTROL_NOTE = ("Controls of the demo lineage: positive = the Stage-1 encoder with its patch tokens shuffled after the position embedding (same "
                "weights, same pooled features), which loc, seg and grad must flag as worse; null = +SFT retrained with another Stage-2 seed, "
                "which they must not flag.")
DIGITS_NOTE = ("Demo-sized: scikit-learn digits (1078 train / 359 val, 8x8 upscaled), last block only, the exact probe's C path not extended "
               "beyond its edge (--no-grid-extend); same lineage.")
CONTROL_HEADLINES = {"grad": [["projector_output", "sft_inside_mass"], ["projector_output", "sft_gini"]]}
HEADLINES = {
    "cls": [["linear", "top1", "pooling=cls"], ["linear_sgd", "top1", "pooling=cls"], ["knn20", "top1", "pooling=cls"]],
    "seg": [["patch_probe", "macro_patch_recall"], ["fast_linear", "mIoU"], ["mmseg_linear", "mIoU"]],
    "loc": [["gradcam", "pointing_game"]],
    "grad": [["projector_output", "dpo_minus_sft_inside_mass"], ["projector_output", "dpo_inside_mass"], ["projector_output", "dpo_minus_sft_gini"]],
    "align": [["vision_language", "mutual_knn_k10"], ["lineage", "cka_to_base"]],
    "vqa": [["overall", "score", "protocol=pivot-eval"], ["shapes_vqa", "exact_match", "protocol=pivot-eval"], ["shapes_vqa_mc", "acc", "protocol=pivot-eval"]],
}


@dataclass(frozen=True)
class Enc:
    name: str
    role: str
    base: str = ""
    replicate: int | None = None


@dataclass(frozen=True)
class Metric:
    """One row identity; ``rates`` maps an encoder's role (or name) to its expected per-item score;
    ``kind``: 'hit' (0/1 per item, value in %) or 'real' (a per-item real score, value = mean x ``scale``)."""

    suite: str
    task: str
    metric: str
    rates: dict[str, float]
    n: int = 200
    kind: str = "hit"
    scale: float = 100.0
    variant: dict | None = None
    baseline: float | None = None
    degenerate: tuple[str, ...] = ()  # roles / names whose row is marked degenerate
    dataset: str = DATA
    spread: float = 0.02  # per-item sd of a 'real' score


def lineage(k: int) -> list[Enc]:
    encoders = [Enc("demo-vit", "original")]
    for replicate in range(k):
        suffix = f"-s{replicate}" if replicate else ""
        encoders += [Enc(f"demo-vit-sft{suffix}", "sft", "demo-vit", replicate), Enc(f"demo-vit-pivot{suffix}", "pivot", "demo-vit", replicate)]
    return encoders


CONTROLS = [Enc("control-stage1", "original"), Enc("control-shuffled", "positive-control", "control-stage1"),
            Enc("control-sft", "original"), Enc("control-sft-s1", "null-control", "control-sft")]


def _rate(metric: Metric, enc: Enc) -> float:
    return metric.rates.get(enc.name, metric.rates.get(enc.role, 0.0))


def _item_scores(rng: np.random.Generator, items: np.ndarray, metric: Metric, enc: Enc) -> np.ndarray:
    """Per-item scores on shared items (``items``: each item's difficulty), with a little training-seed noise."""
    seed_shift = rng.normal(0, 0.01) if enc.replicate is not None else 0.0
    if metric.kind == "hit":
        return (rng.random(metric.n) < np.clip(_rate(metric, enc) + seed_shift + items, 0, 1)).astype(np.float32)
    return (_rate(metric, enc) + seed_shift * 0.2 + items * metric.spread / 0.15 + rng.normal(0, metric.spread, metric.n)).astype(np.float32)


def _rows(run: Path, encoders: list[Enc], metrics: list[Metric], seed: int) -> list[ResultRow]:
    rng = np.random.default_rng(seed)
    (run / "per_item").mkdir(parents=True, exist_ok=True)
    rows = []
    for metric in metrics:
        items = rng.normal(0, 0.15, metric.n)  # shared item difficulty: what pairs the tests
        variant = metric.variant or {}
        for enc in encoders:
            if enc.name not in metric.rates and enc.role not in metric.rates:
                continue
            scores = _item_scores(rng, items, metric, enc)
            tag = "_".join(str(value) for value in variant.values())
            relative = f"per_item/{enc.name}__{metric.suite}__{metric.task}__{metric.metric}{'__' + tag if tag else ''}.npy"
            np.save(run / relative, scores)
            value = float(scores.mean() * metric.scale)
            half = float(1.96 * scores.std() / np.sqrt(metric.n) * metric.scale)
            extra: dict = dict(variant)
            if metric.baseline is not None:
                extra |= {"trivial_baseline": metric.baseline, "above_baseline_ci": [value - metric.baseline - half, value - metric.baseline + half]}
            if enc.role in metric.degenerate or enc.name in metric.degenerate:
                extra["degenerate"] = (f"not significantly above its trivial baseline {metric.baseline:g} (score minus baseline "
                                       f"{value - metric.baseline:+.3g}, 95% CI [{value - metric.baseline - half:.3g}, {value - metric.baseline + half:.3g}])")
            if enc.replicate is not None:
                extra["replicate"] = enc.replicate
            rows.append(ResultRow(encoder=enc.name, role=enc.role, base=enc.base, weights_hash=f"sha256-{enc.name}", checkpoint=f"runs/demo/lineage/{enc.name}.safetensors",
                                  suite=metric.suite, task=metric.task, dataset=metric.dataset, metric=metric.metric, value=value, n=metric.n,
                                  ci_low=value - half, ci_high=value + half, per_item=relative, extra=extra, config_hash=f"hash-{metric.suite}",
                                  dataset_fingerprint="fp-" + metric.dataset))
    return rows


def _config(encoders: list[Enc], suites: list[str], note: str, data: str, seconds: dict[str, float]) -> dict:
    return {
        "encoders": [{"name": enc.name, "role": enc.role, "base": enc.base, "replicate": enc.replicate, "family": "timm", "arch": "demo_vit",
                      "checkpoint": f"runs/demo/lineage/{enc.name}.safetensors", "weights_hash": f"sha256-{enc.name}", "parameters": 467_000,
                      "preprocess": {"resolution": 64}, "remap_summary": "plain"} for enc in encoders],
        "hardware": {"cpu": "x86_64", "cpu_capability": "AVX2", "threads": 2},
        "note": note,
        "plan": {"seed": 0, "batch_size": 100, "workers": 1, "suites": suites},
        "suites": {name: {"config_hash": f"hash-{name}", "data": data, "headline": HEADLINES[name], "control_headline": CONTROL_HEADLINES.get(name, []), "skipped": "", "variant_fields": []} for name in suites},
        "timings": {f"suite {name}": value for name, value in seconds.items()},
        "versions": {"torch": "2.14.1", "timm": "1.0.31", "vision-encoder-eval": "0.1.0"},
    }


def _write(run: Path, encoders: list[Enc], metrics: list[Metric], note: str, seed: int, data: str = DATA) -> Path:
    suites = list(dict.fromkeys(metric.suite for metric in metrics))
    append_rows(run, _rows(run, encoders, metrics, seed))
    (run / "config.json").write_text(json.dumps(_config(encoders, suites, note, data, {name: 20.0 + 5 * i for i, name in enumerate(suites)}), indent=1))
    return run


def shapes_metrics(gain: float = 0.0) -> list[Metric]:
    """cls, loc, grad, align, vqa on the shapes world; ``gain``: +PIVOT's advantage over +SFT on loc (a fraction)."""
    pooled = {"pooling": "cls"}
    return [
        Metric("cls", "linear", "top1", {"original": 0.31, "sft": 0.30, "pivot": 0.305}, variant=pooled, baseline=10.0),
        Metric("cls", "linear", "top1", {"original": 0.35, "sft": 0.34, "pivot": 0.345}, variant={"pooling": "mean"}, baseline=10.0),
        Metric("cls", "knn20", "top1", {"original": 0.22, "sft": 0.16, "pivot": 0.16}, variant=pooled, baseline=10.0, degenerate=("sft", "pivot")),
        Metric("loc", "gradcam", "pointing_game", {"original": 0.45, "sft": 0.42, "pivot": 0.42 + gain}, baseline=22.8),
        Metric("loc", "gradcam", "iou_top15", {"original": 0.14, "sft": 0.13, "pivot": 0.13}, baseline=12.7, degenerate=("original", "sft", "pivot")),
        Metric("grad", "projector_output", "dpo_minus_sft_inside_mass", {"original": 0.05, "sft": 0.04, "pivot": 0.045}, kind="real", scale=1.0, n=64, baseline=0.0),
        Metric("align", "vision_language", "mutual_knn_k10", {"original": 0.21, "sft": 0.215, "pivot": 0.22}, kind="real", scale=1.0, spread=0.05),
        Metric("vqa", "shapes_vqa", "exact_match", {"original": 0.48, "sft": 0.50, "pivot": 0.51}, variant={"protocol": "lineage"}, baseline=35.0),
    ]


def make_demo_runs(root: Path, k: int = 2, gain: float = 0.0) -> list[Path]:
    """The demo's four evaluation runs under ``root`` (seg, shapes, pivot-eval, digits), in build order."""
    encoders = lineage(k)
    note = f"{SCHEDULE_NOTE.format(k=k)} {EVAL_NOTE}"
    seg = [Metric("seg", "patch_probe", "macro_patch_recall", {"original": 0.246, "sft": 0.212, "pivot": 0.199}, kind="real", spread=0.05, baseline=9.1),
           Metric("seg", "fast_linear", "mIoU", {"original": 0.168, "sft": 0.153, "pivot": 0.154}, kind="real", spread=0.04, baseline=7.4),
           Metric("seg", "mmseg_linear", "mIoU", {"original": 0.142, "sft": 0.145, "pivot": 0.143}, kind="real", spread=0.04, baseline=7.4)]
    pivot_eval = [Metric("vqa", "shapes_vqa", "exact_match", {"original": 0.46, "sft": 0.49, "pivot": 0.50}, variant={"protocol": "pivot-eval"}, baseline=35.0),
                  Metric("vqa", "shapes_vqa_mc", "acc", {"original": 0.70, "sft": 0.72, "pivot": 0.73}, variant={"protocol": "pivot-eval"}, baseline=58.3)]
    digits = [Metric("cls", "linear", "top1", {"original": 0.90, "sft": 0.89, "pivot": 0.895}, n=359, variant={"pooling": "cls"}, baseline=10.0, dataset="digits")]
    return [
        _write(root / "seg", encoders, seg, note, seed=1),
        _write(root / "shapes", encoders, shapes_metrics(gain), note, seed=2),
        _write(root / "pivot-eval", encoders, pivot_eval, f"{PIVOT_EVAL_NOTE} {note}", seed=3),
        _write(root / "digits", encoders, digits, DIGITS_NOTE, seed=4, data="digits"),
    ]


def make_controls_run(root: Path, k: int = 2, null_flagged_by_loc: bool = False) -> Path:
    """The controls run (loc, seg, grad on ``CONTROLS``) as the demo measured it on the shipped original: the positive
    control falls on loc and seg, and on grad's control headline (the SFT maps' inside mass, down to the object's
    share) while grad's DPO-minus-SFT headline stays near zero for both; ``null_flagged_by_loc`` plants a false alarm
    (the null control far below its reference on loc)."""
    metrics = [
        Metric("loc", "gradcam", "pointing_game", {"control-stage1": 0.45, "control-shuffled": 0.24, "control-sft": 0.43,
                                                   "control-sft-s1": 0.25 if null_flagged_by_loc else 0.43}, baseline=22.8),
        Metric("seg", "patch_probe", "macro_patch_recall", {"control-stage1": 0.23, "control-shuffled": 0.14, "control-sft": 0.21, "control-sft-s1": 0.21},
               kind="real", spread=0.05, baseline=9.1),
        Metric("grad", "projector_output", "dpo_minus_sft_inside_mass", {"control-stage1": 0.006, "control-shuffled": 0.0, "control-sft": 0.005, "control-sft-s1": 0.004},
               kind="real", scale=1.0, n=64, baseline=0.0, degenerate=("control-shuffled",)),
        Metric("grad", "projector_output", "sft_inside_mass", {"control-stage1": 0.29, "control-shuffled": 0.09, "control-sft": 0.27, "control-sft-s1": 0.27},
               kind="real", scale=1.0, n=64, baseline=0.09, degenerate=("control-shuffled",)),
    ]
    return _write(root / "controls", CONTROLS, metrics, f"{CONTROL_NOTE} {SCHEDULE_NOTE.format(k=k)} {EVAL_NOTE}", seed=5)
