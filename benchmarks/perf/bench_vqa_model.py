"""Benchmark: the vee_mllm lmms-eval model's batched loglikelihood (one vision pass per document, the
choices of a document in one batch) vs. one request at a time (what lmms-eval's LLaVA model does).

Both score the same multiple-choice requests (the shapes world's correct / wrong answer pairs) with the
same MLLM; printed: wall time of each, the speed ratio, and the largest difference between the two sets
of log-probabilities (nats; it should be float noise).

    python -m benchmarks.perf.bench_vqa_model --mllm runs/demo/lineage/dpo/mllm --items 200
    python -m benchmarks.perf.bench_vqa_model --quick          # a random demo-sized MLLM, 16 documents
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def _requests(docs: list[dict], doc_to_visual) -> list:
    from lmms_eval.api.instance import Instance

    return [Instance("loglikelihood", (doc["question"], " " + choice, doc_to_visual, i, "shapes_vqa_mc", "test"), 0,
                     {"task": "shapes_vqa_mc", "doc_id": i, "repeats": 1}) for i, doc in enumerate(docs) for choice in doc["choices"]]


def random_mllm(folder: Path, data: str) -> str:
    """A randomly initialised demo-sized MLLM (64 px 4-block ViT, tiny Qwen2 over the shapes vocabulary)."""
    import timm

    from encoders import save_encoder_checkpoint
    from imagesets import open_split
    from train.mllm import IMAGE_TOKEN, build_mllm, save_mllm
    from train.tiny_lm import build_tiny_lm

    options = {"img_size": 64, "patch_size": 8, "embed_dim": 96, "depth": 4, "num_heads": 3}
    split = open_split(data, "val")
    corpus = [f"{item.question} {item.chosen} {item.rejected}" for index in range(len(split)) for item in split.vqa_items(index)]
    lm = build_tiny_lm(folder / "lm", corpus, extra_special=[IMAGE_TOKEN])
    state = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, **options).state_dict()
    encoder = save_encoder_checkpoint(state, {"family": "timm", "arch": "vit_small_patch16_224", "options": options}, folder / "encoder.safetensors")
    return str(save_mllm(build_mllm(encoder, lm), folder / "mllm"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.perf.bench_vqa_model", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mllm", default="", help="MLLM directory (default: a random tiny one, built here)")
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data", default="shapes:n=400:seed=0")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    from benchmarks.lmms.model import ProjectMLLM
    from benchmarks.lmms.shapes_task import doc_to_visual, write_shapes_tasks

    with tempfile.TemporaryDirectory() as tmp:
        items = 16 if args.quick else args.items
        mllm = args.mllm
        if not mllm:
            mllm = random_mllm(Path(tmp), args.data)
        task = write_shapes_tasks(args.data, Path(tmp) / "task", n_items=items)
        docs = [json.loads(line) for line in task.docs.read_text().splitlines()]
        model = ProjectMLLM(pretrained=mllm, batch_size=args.batch_size)
        model.task_dict = {"shapes_vqa_mc": {"test": docs}}
        requests = _requests(docs, doc_to_visual)
        model.loglikelihood(requests[:4])  # warm-up
        started = time.perf_counter()
        batched = [item.text[0] for item in model.loglikelihood(requests)]
        batched_s = time.perf_counter() - started
        model.batch_size = 1
        started = time.perf_counter()
        single = [item.text[0] for item in model.loglikelihood(requests)]
        single_s = time.perf_counter() - started
    diff = max(abs(a - b) for a, b in zip(batched, single))
    print(f"{len(requests)} loglikelihood requests ({items} documents x 2 choices), MLLM {mllm}")
    print(f"batched (batch {args.batch_size}, one vision pass per document): {batched_s:.2f} s")
    print(f"one request at a time:                                  {single_s:.2f} s")
    print(f"speed-up: {single_s / batched_s:.1f}x; largest log-prob difference {diff:.2e} nats")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
