"""``make demo``: the main job on the embedded default, offline, on CPU, in minutes.

1. ``python -m train demo``: a really trained lineage on the shapes world: a small ViT pretrained
   supervised on shapes (``original``, shipped in ``train/assets``) and the vision towers of two MLLMs trained
   from the same Stage-1 model on the same preference items with SFT (``+SFT``) and with DPO (``+PIVOT``),
   ``DEFAULT_REPLICATES`` training seeds per arm. Reused, not retrained, while its recipe (settings, package
   versions, source of ``train/``) is unchanged.
2. Every suite on the shapes world (``seg`` in a run of its own) and the ``cls`` suite on scikit-learn's
   digits, by ``plans/demo.toml`` (the demo-sized schedules, stated in the report).
3. The ``vqa`` suite under PIVOT's evaluation protocol: each encoder frozen inside a fresh MLLM
   (trained, and reused, with the lineage), so the MLLMs differ only in the encoder.
4. ``loc``, ``seg`` and ``grad`` on the controls of the lineage (``train.controls``): the Stage-1 encoder
   with its patch tokens shuffled on the grid, which they must flag as significantly worse, and a seed-only
   retraining of +SFT, which they must not flag.
   The five runs of 2-4 are independent: they run side by side, one process per core.
5. One HTML report over the five runs, answer first; its path is the last line printed.
"""
from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

from benchmarks.run_many import RunJob, run_many
from benchmarks.suites.segmentation import SegOptions
from common.options import options_of

DEMO_PLAN = Path(__file__).resolve().parent.parent / "plans" / "demo.toml"
CONTROL_SUITES = "loc,seg,grad"
PIVOT_EVAL_NOTE = ("PIVOT evaluation protocol, demo-sized: each encoder frozen inside a fresh MLLM (new tiny LM; projector, then "
                   "projector + LM, on the Stage-1 data), then lmms-eval on the offline shapes-world questions.")
CONTROL_NOTE = ("Controls of the demo lineage: positive = the Stage-1 encoder with its patch tokens shuffled after the position "
                "embedding (same weights, same pooled features), which loc, seg and grad must flag as worse; null = +SFT "
                "retrained with another Stage-2 seed, which they must not flag.")
DIGITS_NOTE = "Demo-sized: scikit-learn digits (1078 train / 359 val, 8x8 upscaled), last block only, the exact probe's C path not extended beyond its edge (--no-grid-extend); same lineage."


def eval_note(plan: Path = DEMO_PLAN) -> str:
    """The evaluation schedule of ``plan`` in one sentence, next to the suites' own defaults it changes."""
    document = tomllib.loads(plan.read_text())
    seg, vqa = document.get("seg", {}), document.get("vqa", {})
    defaults = {opt.name: opt.default for opt in options_of(SegOptions)}
    changed = ", ".join(f"{name} {value:g} (default {defaults[name]:g})" for name, value in seg.items())
    return (f"Evaluation, demo-sized ({plan.name}): {document['data']} at 224 px (resized to the encoder's 64 px); seg: {changed}; "
            f"cls/loc/grad/align on the suites' default item counts; VQA: lmms-eval on {vqa.get('items')} offline questions per task "
            f"({', '.join(vqa.get('tasks', []))}) instead of the 16 Cambrian benchmarks.")


def _common(lineage: Path, cache_dir: str) -> list[str]:
    return ["--encoders", str(lineage), "--plan", str(DEMO_PLAN), "--cache-dir", cache_dir, "--no-report"]


def eval_jobs(out: Path, manifest: Path, cache_dir: str, note: str, controls: Path | None = None) -> list[RunJob]:
    """The demo's independent evaluation runs of the lineage ``manifest`` (each writes ``out / name``),
    longest first: seg alone takes about as long as the other shapes suites together. With ``controls`` (the
    controls manifest), loc, seg and grad on the controls too."""
    from train.demo import PIVOT_EVAL_MANIFEST

    jobs = [
        RunJob("seg", [*_common(manifest, cache_dir), "--suite", "seg", "--out", str(out / "seg"), "--note", note]),
        RunJob("shapes", [*_common(manifest, cache_dir), "--suite", "cls,loc,grad,align,vqa", "--out", str(out / "shapes"), "--note", note]),
        RunJob("pivot-eval", [*_common(manifest.parent / PIVOT_EVAL_MANIFEST, cache_dir), "--suite", "vqa", "--out", str(out / "pivot-eval"), "--note", f"{PIVOT_EVAL_NOTE} {note}"]),
    ]
    if controls is not None:
        jobs.append(RunJob("controls", [*_common(controls, cache_dir), "--suite", CONTROL_SUITES, "--out", str(out / "controls"), "--note", f"{CONTROL_NOTE} {note}"]))
    jobs.append(RunJob("digits", [*_common(manifest, cache_dir), "--suite", "cls", "--data", "digits", "--out", str(out / "digits"), "--no-grid-extend", "--note", DIGITS_NOTE]))
    return jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--cache-dir", default=".cache/features")
    parser.add_argument("--retrain", action="store_true", help="train the lineage again even if its recipe is unchanged")
    parser.add_argument("--replicates", type=int, default=None, help="Stage-2 training seeds per arm, 1 to 16 (default: train.demo.DEFAULT_REPLICATES; each one adds 6 trainings)")
    parser.add_argument("--no-control", action="store_true", help="leave out the controls run (loc, seg and grad on the token-shuffled and seed-only controls)")
    args = parser.parse_args(argv)
    from train.demo import DEFAULT_REPLICATES, check_replicates, make_demo_lineage, schedule_note

    out = Path(args.out)
    replicates = DEFAULT_REPLICATES if args.replicates is None else args.replicates
    try:
        check_replicates(replicates)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    manifest = make_demo_lineage(out / "lineage", replicates=replicates, force=args.retrain, progress=sys.stderr.isatty())
    controls = None
    if args.no_control:
        print("controls: left out (--no-control)")
    elif replicates < 2:
        print("controls: left out (the null control is a second Stage-2 seed; --replicates 2 or more runs them)")
    else:
        from train.controls import write_control_lineage

        controls = write_control_lineage(out / "lineage")
    note = f"{schedule_note(replicates)} {eval_note()}"
    jobs = eval_jobs(out, manifest, args.cache_dir, note, controls)
    status = run_many(jobs, out / "logs")
    from reports.build import build_report

    report = build_report([out / job.name for job in jobs], out / "report.html",
                          title="Demo: a trained original, +SFT and +PIVOT on the shapes world and digits, with controls")
    print(f"\nHTML report: {report.resolve()}")
    return status


if __name__ == "__main__":
    sys.exit(main())
