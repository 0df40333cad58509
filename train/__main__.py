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
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

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
    return parser


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
    from benchmarks.options import join_negative_values

    numeric = {f"--{name}" for name, _ in STAGE_NUMBERS + PIVOT_NUMBERS} | {"--visual-layer", "--replicates"}
    return join_negative_values(argv, numeric, looks_negative=_is_negative_number)


def main(argv: list[str] | None = None) -> int:
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
        elif args.command == "demo":
            from .demo import make_demo_lineage

            from .demo import DEFAULT_REPLICATES

            replicates = DEFAULT_REPLICATES if args.replicates is None else args.replicates
            print(f"lineage manifest: {make_demo_lineage(args.out, replicates=replicates, force=args.force)}")
    except (CheckpointError, DataError, MLLMError, TrainingError, ValueError, FileNotFoundError, NotADirectoryError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2 if not isinstance(err, TrainingError) else 1
    return 0


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
    if args.command == "demo" and args.replicates is not None:
        from .demo import check_replicates

        check_replicates(args.replicates)
    return {}


if __name__ == "__main__":
    sys.exit(main())
