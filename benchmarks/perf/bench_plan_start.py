"""Benchmark: what opening every suite's data before any model loads adds to ``benchmarks.run``'s start, on a
COCO root whose val instances file has val2017's size, and how many times that file is parsed.

Writes a synthetic COCO 2017 root (``annotations/instances_val2017.json`` with val2017's 5,000 images and
36,781 polygon annotations, about its 19 MB; a small train split; empty image files, since opening a split
stats the images but decodes none) and times ``benchmarks.run.validate`` (everything a run does before it
loads an encoder) for ``--suite cls,seg,loc`` on it, three suites that all read both splits:

- ``open``: as the run does it: every split opened in the plan stage, once per (dataset, split);
- ``skip``: the same with the opening left out (the plan stage before it existed);
- ``per suite``: what the suites did before, after the encoders had loaded: each opened its own splits.

Prints the median of ``--repeats`` runs of each, the difference open - skip (what the opening adds to
the start), ``json.load`` alone on the val file, and how many times each instances file was parsed per
``validate``.

    python -m benchmarks.perf.bench_plan_start
    python -m benchmarks.perf.bench_plan_start --quick      # 500 images: seconds (its timings mean nothing)
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

VAL2017_IMAGES, VAL2017_ANNOTATIONS = 5000, 36781


def write_coco_root(root: Path, images: int, annotations: int, train_images: int = 50, seed: int = 0) -> Path:
    """A COCO 2017 root: val of ``images`` images and ``annotations`` polygon annotations (80 categories,
    640x480 images, 8-40 polygon points each, as val2017's spread), train of ``train_images``."""
    rng = np.random.default_rng(seed)
    categories = [{"supercategory": "thing", "id": k + 1, "name": f"class{k}"} for k in range(80)]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, n_images, n_annotations in (("val", images, annotations), ("train", train_images, train_images * 7)):
        folder = root / f"{split}2017"
        folder.mkdir(exist_ok=True)
        entries = [{"id": i + 1, "file_name": f"{i + 1:012d}.jpg", "width": 640, "height": 480} for i in range(n_images)]
        for entry in entries:
            (folder / entry["file_name"]).touch()
        notes = []
        for a in range(n_annotations):
            points = int(rng.integers(8, 41))
            x, y = rng.uniform(20, 560), rng.uniform(20, 400)
            polygon = np.round(np.column_stack([x + rng.uniform(0, 80, points), y + rng.uniform(0, 80, points)]).ravel(), 2).tolist()
            notes.append({"id": a + 1, "image_id": a % n_images + 1, "category_id": int(rng.integers(1, 81)), "iscrowd": 0,
                          "segmentation": [polygon], "area": float(rng.uniform(100, 6000)), "bbox": [round(x, 2), round(y, 2), 80.0, 80.0]})
        document = {"info": {"year": 2017}, "licenses": [], "images": entries, "annotations": notes, "categories": categories}
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(document))
    return root


def _validate_seconds(root: Path, encoder: Path, out: Path, open_data: bool) -> tuple[float, Counter]:
    """Seconds of one ``validate`` of ``--suite cls,seg,loc`` on ``root``, and the instances files it parsed."""
    from benchmarks import plan as plan_module
    from benchmarks import run
    from imagesets import coco

    parsed: Counter = Counter()
    real_read, real_open = coco.read_instances, plan_module.open_data
    coco.read_instances = lambda path: parsed.update([Path(path).name]) or real_read(path)
    if not open_data:
        plan_module.open_data = lambda plan, item: None
    try:
        namespace = run.parse_args(["--encoder", str(encoder), "--suite", "cls,seg,loc", "--data", f"coco:root={root}", "--out", str(out)])
        started = time.perf_counter()
        run.validate(namespace)
        return time.perf_counter() - started, parsed
    finally:
        coco.read_instances, plan_module.open_data = real_read, real_open


def _per_suite_seconds(root: Path) -> float:
    """Seconds for cls, seg and loc each opening train and val themselves (what the run did before)."""
    from imagesets import open_split

    started = time.perf_counter()
    for _suite in ("cls", "seg", "loc"):
        for split in ("train", "val"):
            open_split(f"coco:root={root}", split)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.perf.bench_plan_start", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=VAL2017_IMAGES)
    parser.add_argument("--annotations", type=int, default=VAL2017_ANNOTATIONS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="500 images, 3,678 annotations, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.annotations, args.repeats = 500, 3678, 1
    import warnings

    warnings.simplefilter("ignore")  # the synthetic boxes: a few lie partly outside; counted, not the point here
    with tempfile.TemporaryDirectory(prefix="bench_plan_start_") as tmp:
        root = write_coco_root(Path(tmp) / "coco", args.images, args.annotations)
        val = root / "annotations" / "instances_val2017.json"
        encoder = Path(tmp) / "enc.safetensors"
        encoder.write_bytes(b"validate checks that it exists; nothing loads it")
        started = time.perf_counter()
        with val.open("rb") as handle:
            json.load(handle)
        load_seconds = time.perf_counter() - started
        timings: dict[bool, list[float]] = {True: [], False: []}
        counts = Counter()
        for _ in range(args.repeats):
            for opened in (False, True):
                seconds, parsed = _validate_seconds(root, encoder, Path(tmp) / "run", opened)
                timings[opened].append(seconds)
                if opened:
                    counts = parsed
        skip, opened = statistics.median(timings[False]), statistics.median(timings[True])
        per_suite = _per_suite_seconds(root)
        print(f"val instances file: {val.stat().st_size / 1e6:.1f} MB, {args.images} images, {args.annotations} annotations; json.load alone {load_seconds:.2f} s")
        print(f"validate --suite cls,seg,loc (median of {args.repeats}): skip {skip:.2f} s, open {opened:.2f} s: opening adds {opened - skip:.2f} s")
        print(f"per suite (before: each of the 3 suites opened train and val after loading): {per_suite:.2f} s, {per_suite / max(opened - skip, 1e-9):.1f}x the plan stage's opening")
        print(f"instances files parsed per validate: {dict(sorted(counts.items()))} (3 suites read each split)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
