"""``python -m train``: build MLLMs, train a stage (alone or under torchrun), make the demo lineage.

Examples::

    python -m train build --encoder ckpt.safetensors --lm /models/Qwen2.5-1.5B-Instruct --out runs/mllm0
    python -m train stage --stage align --init runs/mllm0 --data captions.jsonl --out runs/align
    torchrun --nproc_per_node 8 -m train stage --stage dpo --init runs/pretrain/mllm --data prefs.jsonl --out runs/dpo
    python -m train stage --stage sft --init runs/pretrain/mllm --data prefs.jsonl --out runs/sft --resume
    python -m train shapes-data --data shapes:n=500:seed=1 --split train --out data/shapes
    python -m train demo --out runs/demo/lineage --replicates 3
    python -m train pivot-eval --encoder ckpt.safetensors --lm /models/Qwen2.5-0.5B --data data/shapes --out runs/pe
    python -m train pivot-eval --encoders lineage.toml --lm runs/demo/lineage/lm --data shapes:n=240:seed=3 --out runs/pe
    python -m train import-mllm /models/llava-onevision-qwen2-0.5b-si runs/ov --vision-config /models/siglip-so400m-patch14-384 --dtype bf16
    python -m train export-mllm runs/dpo/mllm runs/dpo-hf --format llava-hf
    python -m train tiny-llava runs/tiny-llava --layout llava-hf
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from common.console import quiet_progress_bars

from .config import BOUNDS, STAGES, STRATEGIES, SettingsError, StageConfig, check_out_folder, check_settings, check_world, flag_of, stage_config

STAGE_NUMBERS = (("lr", float), ("encoder-lr", float), ("epochs", float), ("global-batch", int), ("micro-batch", int), ("beta", float),
                 ("sft-weight", float), ("max-length", int), ("save-every", int), ("seed", int), ("workers", int), ("max-bad-fraction", float),
                 ("warmup-ratio", float), ("max-grad-norm", float))
PIVOT_NUMBERS = (("align-lr", float), ("instruct-lr", float), ("epochs", float), ("global-batch", int), ("micro-batch", int), ("seed", int))


def _number_help(flag: str) -> str:
    """``--help`` text of a stage flag: its valid range (declared once, in ``train.config``)."""
    name = {"align_lr": "lr", "instruct_lr": "lr"}.get(flag.replace("-", "_"), flag.replace("-", "_"))
    bound = BOUNDS[name]
    return f"{bound.describe()}: {bound.why} (default: the stage's)"


def _stage_parser(sub) -> None:
    parser = sub.add_parser("stage", help="train one stage from an MLLM directory")
    parser.add_argument("--stage", required=True, choices=STAGES)
    parser.add_argument("--init", required=True, help="MLLM directory to start from (python -m train build, or a previous stage's OUT/mllm)")
    parser.add_argument("--data", required=True, help="caption or preference JSONL (image paths relative to the file)")
    parser.add_argument("--out", required=True, help="stage folder: checkpoint/, metrics.jsonl, mllm/, encoder.safetensors, stage.json")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint (same start, data and settings)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--strategy", choices=STRATEGIES, default=None, help="ddp (default) or fsdp (torch fully_shard) under torchrun")
    for name, kind in STAGE_NUMBERS:
        parser.add_argument(f"--{name}", type=kind, default=None, help=_number_help(name))
    parser.add_argument("--no-reference-cache", action="store_true", help="DPO: run a frozen reference copy every step instead of caching its log-probs once")
    parser.add_argument("--gradient-checkpointing", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    """The command line of every ``python -m train`` command."""
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="a new MLLM: encoder checkpoint + fresh projector + local LM directory")
    build.add_argument("--encoder", required=True)
    build.add_argument("--lm", required=True, help="local transformers causal-LM directory (e.g. Qwen2.5)")
    build.add_argument("--out", required=True)
    build.add_argument("--visual-layer", type=int, default=-2)
    build.add_argument("--arch", default="", help="architecture, for encoder files that do not embed one")
    _stage_parser(sub)
    shapes = sub.add_parser("shapes-data", help="write the shapes world as caption + preference JSONL with PNG images")
    shapes.add_argument("--data", default="shapes:n=500:seed=1")
    shapes.add_argument("--split", default="train")
    shapes.add_argument("--out", required=True)
    demo = sub.add_parser("demo", help="train the demo lineage (original, +SFT, +PIVOT) on the shapes world, on CPU")
    demo.add_argument("--out", default="runs/demo/lineage")
    demo.add_argument("--force", action="store_true", help="retrain even when a lineage made with the same recipe exists")
    demo.add_argument("--replicates", type=int, default=None, help="Stage-2 training seeds per arm (sft, dpo) from the one Stage-1 model, 1 to 16 (default 1, what fits the demo's 15-minute first run on 2 cores; --control needs 2; each one adds 6 trainings)")
    pivot = sub.add_parser("pivot-eval", help="PIVOT's protocol: each encoder frozen inside a fresh MLLM (new LM; projector, then projector + LM)")
    pivot.add_argument("--encoder", help="encoder checkpoint")
    pivot.add_argument("--encoders", help="lineage manifest: every encoder gets its own fresh MLLM; OUT/lineage.toml is written")
    pivot.add_argument("--arch", default="", help="architecture, for an --encoder file that does not embed one")
    pivot.add_argument("--lm", required=True, help="the new LM: a local transformers causal-LM directory")
    pivot.add_argument("--data", required=True, help="folder with captions.jsonl + preferences.jsonl (python -m train shapes-data), or a shapes spec")
    pivot.add_argument("--out", required=True)
    pivot.add_argument("--device", default=None)
    for name, kind in PIVOT_NUMBERS:
        pivot.add_argument(f"--{name}", type=kind, default=None, help=_number_help(name))
    _transfer_parsers(sub)
    return parser


def _transfer_parsers(sub) -> None:
    """import-mllm, export-mllm and tiny-llava: MLLMs in and out of the field's layouts."""
    from .mllm_import import DEFAULT_TOLERANCE, DTYPES

    imp = sub.add_parser("import-mllm", help="a transformers Llava directory or a LLaVA-NeXT checkpoint as a project MLLM directory, checked against transformers")
    imp.add_argument("source", help="the MLLM to read: a LlavaForConditionalGeneration directory or a LLaVA-NeXT/OneVision checkpoint")
    imp.add_argument("out", help="the project MLLM directory to write (mllm.json records the source and the import check)")
    imp.add_argument("--dtype", choices=tuple(DTYPES), default="fp32", help="dtype of the written weights (default fp32)")
    imp.add_argument("--vision-config", default=None, metavar="DIR", help="LLaVA-NeXT: a folder with the vision tower's config.json (when mm_vision_tower is a hub name the project does not know)")
    imp.add_argument("--check-tolerance", type=float, default=DEFAULT_TOLERANCE, help=f"largest |logit difference| the import check accepts (default {DEFAULT_TOLERANCE:g}, fp32)")
    exp = sub.add_parser("export-mllm", help="a project MLLM as a transformers LlavaForConditionalGeneration directory (for transformers, lmms-eval's llava_hf)")
    exp.add_argument("mllm", help="an MLLM directory (python -m train ... OUT/mllm, or any layout import-mllm reads)")
    exp.add_argument("out", help="the LlavaForConditionalGeneration directory to write")
    exp.add_argument("--format", choices=("llava-hf",), default="llava-hf")
    exp.add_argument("--check-tolerance", type=float, default=DEFAULT_TOLERANCE, help=f"largest |logit difference| the export check accepts (default {DEFAULT_TOLERANCE:g})")
    tiny = sub.add_parser("tiny-llava", help="write a tiny random LLaVA (transformers Llava or LLaVA-NeXT layout) to try import-mllm, export-mllm and the MLLM suites")
    tiny.add_argument("out")
    tiny.add_argument("--layout", choices=("llava-hf", "llava-next"), default="llava-hf")
    tiny.add_argument("--tower", choices=("siglip", "clip"), default="siglip")
    tiny.add_argument("--lm", choices=("qwen2", "llama"), default="qwen2")
    tiny.add_argument("--image-size", type=int, default=64, help="the tower's input size in pixels (patch 16)")
    tiny.add_argument("--corpus", default=None, help="a caption or preference JSONL whose words the tokenizer should know (python -m train shapes-data)")


def _is_negative_number(value: str) -> bool:
    if not value.startswith("-"):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def _join_numbers(argv: list[str]) -> list[str]:
    """``["--lr", "-1e-5"]`` -> ``["--lr=-1e-5"]``: argparse takes a negative number in exponent form for a
    flag ("expected one argument"), which would hide the real cause, a value out of range."""
    from common.options import join_negative_values

    numeric = {f"--{name}" for name, _ in STAGE_NUMBERS + PIVOT_NUMBERS} | {"--visual-layer", "--replicates", "--check-tolerance", "--image-size"}
    return join_negative_values(argv, numeric, looks_negative=_is_negative_number)


def main(argv: list[str] | None = None) -> int:
    quiet_progress_bars()  # before transformers is imported: no progress bar in a log file
    args = build_parser().parse_args(_join_numbers(list(sys.argv[1:] if argv is None else argv)))

    from encoders import CheckpointError

    from .data import DataError
    from .loop import TrainingError
    from .mllm import MLLMError

    try:
        configs = _check_usage(args)
        if args.command == "build":
            from encoders import EncoderSpec, load_encoder

            from .mllm import build_mllm, save_mllm

            encoder = load_encoder(EncoderSpec(checkpoint=args.encoder, arch=args.arch))
            path = save_mllm(build_mllm(encoder, args.lm, visual_layer=args.visual_layer), args.out)
            print(f"MLLM written to {path}")
        elif args.command == "stage":
            from .loop import train_stage

            train_stage(args.init, args.data, args.out, configs[args.stage], resume=args.resume, device=args.device, progress=sys.stderr.isatty())
        elif args.command == "shapes-data":
            from .data import write_shapes_data

            paths = write_shapes_data(args.data, args.split, args.out)
            print("\n".join(f"{kind}: {path}" for kind, path in paths.items()))
        elif args.command == "pivot-eval":
            from .pivot_eval import pivot_eval, pivot_eval_lineage, resolve_data

            stages = configs
            data = resolve_data(args.data, Path(args.out))
            if args.encoders:
                print(f"lineage manifest: {pivot_eval_lineage(args.encoders, args.lm, data, args.out, device=args.device, progress=sys.stderr.isatty(), **stages)}")
            else:
                print(f"MLLM: {pivot_eval(args.encoder, args.lm, data, args.out, arch=args.arch, device=args.device, progress=sys.stderr.isatty(), **stages)}")
        elif args.command in ("import-mllm", "export-mllm", "tiny-llava"):
            _transfer(args)
        elif args.command == "demo":
            from .demo import make_demo_lineage

            from .demo import DEFAULT_REPLICATES

            replicates = DEFAULT_REPLICATES if args.replicates is None else args.replicates
            print(f"lineage manifest: {make_demo_lineage(args.out, replicates=replicates, force=args.force)}")
    except (CheckpointError, DataError, MLLMError, TrainingError, ValueError, FileNotFoundError, NotADirectoryError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2 if not isinstance(err, TrainingError) else 1
    return 0


def _transfer(args: argparse.Namespace) -> None:
    if args.command == "import-mllm":
        from .mllm_import import import_mllm

        print(f"MLLM written to {import_mllm(args.source, args.out, dtype=args.dtype, vision_config=args.vision_config, tolerance=args.check_tolerance)}")
    elif args.command == "export-mllm":
        from .mllm import load_mllm
        from .mllm_export import export_llava_hf

        print(f"{args.format} directory written to {export_llava_hf(load_mllm(args.mllm), args.out, tolerance=args.check_tolerance)}")
    else:
        from .tiny_llava import write_tiny_llava

        print(f"tiny {args.layout} written to {write_tiny_llava(args.out, layout=args.layout, tower=args.tower, lm=args.lm, image_size=args.image_size, corpus=args.corpus)}")


def _check_usage(args: argparse.Namespace) -> dict[str, StageConfig]:
    """Every flag's range, the device and the output folder, before anything is read or loaded; returns
    the stage configs the command trains (stage name -> config; empty for commands that train none)."""
    from .distributed import check_device

    check_out_folder(args.out)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if args.command == "stage":
        names = [name.replace("-", "_") for name, _ in STAGE_NUMBERS]
        given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
        check_settings(given, flags={name: flag_of(name) for name in names})
        check_device(args.device)
        extra = {"strategy": args.strategy, "cache_reference": False if args.no_reference_cache else None, "gradient_checkpointing": True if args.gradient_checkpointing else None}
        config = stage_config(args.stage, **given, **extra)
        check_world(config, world)
        return {args.stage: config}
    if args.command == "pivot-eval":
        from .pivot_eval import ALIGN, INSTRUCT

        if bool(args.encoder) == bool(args.encoders):
            raise SettingsError("pivot-eval takes one of --encoder CKPT or --encoders lineage.toml")
        flags = {"epochs": "--epochs", "global_batch": "--global-batch", "micro_batch": "--micro-batch", "seed": "--seed"}
        common = {name: getattr(args, name) for name in flags if getattr(args, name) is not None}
        check_settings({"lr": args.align_lr} if args.align_lr is not None else {}, flags={"lr": "--align-lr"})
        check_settings({"lr": args.instruct_lr} if args.instruct_lr is not None else {}, flags={"lr": "--instruct-lr"})
        check_settings(common, flags=flags)
        check_device(args.device)
        configs = {"align": ALIGN.with_overrides(lr=args.align_lr, **common), "instruct": INSTRUCT.with_overrides(lr=args.instruct_lr, **common)}
        for config in configs.values():
            check_world(config, world)
        return configs
    if args.command in ("import-mllm", "export-mllm") and not (args.check_tolerance >= 0 and args.check_tolerance != float("inf")):
        raise SettingsError(f"--check-tolerance {args.check_tolerance}: the largest accepted |logit difference| must be a finite number >= 0; pass e.g. 1e-4")
    if args.command == "tiny-llava" and (args.image_size < 16 or args.image_size % 16):
        raise SettingsError(f"--image-size {args.image_size}: the tiny tower's patches are 16 px; pass a multiple of 16 (e.g. 64)")
    if args.command == "demo" and args.replicates is not None:
        from .demo import check_replicates

        check_replicates(args.replicates)
    return {}


if __name__ == "__main__":
    sys.exit(main())
