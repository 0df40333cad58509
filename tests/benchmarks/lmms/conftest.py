"""Fixtures: a tiny MLLM built offline (4-block 64 px ViT + 2-layer Qwen2 over the shapes vocabulary)
and lmms-eval results files in the exact on-disk layout lmms-eval writes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = "shapes:n=40:seed=0"
VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


def build_tiny_mllm(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised MLLM directory (encoder + projector + tiny LM) written with save_mllm."""
    import timm
    import torch

    from encoders import save_encoder_checkpoint
    from imagesets import open_split
    from train.mllm import IMAGE_TOKEN, build_mllm, save_mllm
    from train.tiny_lm import TinyLMConfig, build_tiny_lm

    split = open_split(DATA, "val")
    corpus = [f"{item.question} {item.chosen} {item.rejected}" for index in range(len(split)) for item in split.vqa_items(index)]
    lm = build_tiny_lm(folder / "lm_src", corpus, TinyLMConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64, seed=seed), extra_special=[IMAGE_TOKEN])
    torch.manual_seed(seed)
    state = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, **VIT).state_dict()
    encoder = save_encoder_checkpoint(state, {"family": "timm", "arch": "vit_small_patch16_224", "options": VIT}, folder / "encoder.safetensors")
    return save_mllm(build_mllm(encoder, lm, seed=seed), folder / "mllm")


@pytest.fixture(scope="session")
def tiny_mllm(tmp_path_factory) -> Path:
    return build_tiny_mllm(tmp_path_factory.mktemp("mllm"))


def write_lmms_results(folder: Path, tasks: dict[str, dict[str, tuple[float, float | None]]], *, date: str = "20250101_120000",
                       n: dict[str, tuple[int, int]] | None = None, samples: dict[str, dict[str, list]] | None = None,
                       model_args: str = "pretrained=lmms-lab/llava-onevision-qwen2-0.5b-ov", limit: int | None = None) -> Path:
    """A ``<date>_results.json`` (+ ``<date>_samples_<task>.jsonl``) in lmms-eval 0.7.3's layout:
    ``tasks`` maps task -> metric -> (value, stderr or None); ``n`` task -> (effective, original);
    ``samples`` task -> metric -> per-document values (doc_id = position)."""
    folder.mkdir(parents=True, exist_ok=True)
    results, n_samples, higher = {}, {}, {}
    for task, metrics in tasks.items():
        entry = {"alias": task}
        for metric, (value, stderr) in metrics.items():
            entry[f"{metric},none"] = value
            entry[f"{metric}_stderr,none"] = "N/A" if stderr is None else stderr
            entry[f"{metric}_stderr_clt,none"] = "N/A"
        results[task] = entry
        effective, original = (n or {}).get(task, (100, 100))
        n_samples[task] = {"original": original, "effective": effective}
        higher[task] = {metric: True for metric in metrics}
    data = {
        "results": results, "group_subtasks": {task: [] for task in tasks}, "configs": {task: {"task": task} for task in tasks},
        "versions": {task: 1 for task in tasks}, "n-shot": {task: 0 for task in tasks}, "higher_is_better": higher,
        "n-samples": n_samples,
        "config": {"model": "llava_onevision", "model_args": model_args, "batch_size": "1", "limit": limit},
        "lmms_eval_version": "0.7.3", "date": date, "model_name": model_args.split("=", 1)[-1],
    }
    path = folder / f"{date}_results.json"
    path.write_text(json.dumps(data, indent=2))
    for task, per_metric in (samples or {}).items():
        count = len(next(iter(per_metric.values())))
        lines = [{"doc_id": doc, "target": f"t{doc}", "filtered_resps": "x", **{m: v[doc] for m, v in per_metric.items()}} for doc in range(count)]
        (folder / f"{date}_samples_{task}.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


# A hand-computed Cambrian table: lmms-eval values -> points -> category means -> overall.
CAMBRIAN_VALUES = {
    "mme": {"mme_perception_score": (1500.0, None), "mme_cognition_score": (300.0, None)},  # 1500 / 20 = 75
    "mmbench_en_dev": {"gpt_eval_score": (60.0, None)},                      # already a percentage
    "seedbench": {"seed_image": (0.55, None), "seed_all": (0.5, None)},    # 55
    "gqa": {"exact_match": (0.50, 0.005)},                                   # 50   General = 60
    "scienceqa_img": {"exact_match": (0.70, None)},                          # 70
    "mmmu_val": {"mmmu_acc": (0.30, None)},                                  # 30
    "mathvista_testmini_format": {"llm_as_judge_eval": (40.0, None)},        # 40 (a percentage)
    "ai2d": {"exact_match": (0.60, None)},                                   # 60   Knowledge = 50
    "chartqa": {"relaxed_overall": (0.20, 0.01)},                            # 20
    "ocrbench": {"ocrbench_accuracy": (0.30, 0.01)},                         # 30
    "textvqa_val": {"exact_match": (0.40, 0.01)},                            # 40
    "docvqa_val": {"anls": (0.50, 0.01)},                                    # 50   OCR & Chart = 35 +- 0.5
    "mmvp": {"mmvp_accuracy": (0.25, None)},                                 # 25
    "realworldqa": {"exact_match": (0.45, None)},                            # 45
    "cv_bench_2d": {"cv_bench_acc": (0.65, None)},                           # 65
    "cv_bench_3d": {"cv_bench_acc": (0.65, None)},                           # 65   Vision-centric = 50
}
CATEGORY_MEANS = {"General": 60.0, "Knowledge": 50.0, "OCR & Chart": 35.0, "Vision-centric": 50.0, "overall": 48.75}
