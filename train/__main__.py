"""``python -m train``: build MLLMs, train a stage (alone or under torchrun), make the demo lineage.

Examples::

    python -m train build --encoder ckpt.safetensors --lm /models/Qwen2.5-1.5B-Instruct --out runs/mllm0
    python -m train stage --stage align --init runs/mllm0 --data captions.jsonl --out runs/align
    torchrun --nproc_per_node 8 -m train stage --stage dpo --init runs/pretrain/mllm --data prefs.jsonl --out runs/dpo
    python -m train stage --stage sft --init runs/pretrain/mllm --data prefs.jsonl --out runs/sft --resume
    python -m train shapes-data --data shapes:n=500:seed=1 --split train --out data/shapes
    python -m train demo --out runs/demo/lineage --replicates 3
    python -m train demo --original-only   # regenerate the shipped original (train/assets)
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
from typing import Any

from common.console import quiet_progress_bars
from common.errors import UserError
from common.options import Option, add_flags, build, given, given_values, join_negative_values, negative_value_flags, options_of

from .config import SettingsError, StageConfig, check_out_folder, check_world, stage_config


def build_parser() -> argparse.ArgumentParser:
    """The command line of every ``python -m train`` command, generated from its options classes
    (``train.commands``)."""
    from .commands import commands

    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in commands().items():
        part = sub.add_parser(name, help=command.help, description=command.help)
        add_flags(part, command.inputs, "inputs")
        if command.settings is not None:
            add_flags(part.add_argument_group("training settings"), command.settings, "settings", defaults=command.settings_defaults)
    return parser


def every_option() -> list[Option]:
    """The options of every command (inputs and training settings)."""
    from .commands import commands

    return [opt for command in commands().values() for cls in (command.inputs, command.settings) if cls is not None for opt in options_of(cls)]


def parse_args(argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed; a negative number after a numeric flag (``--lr -1e-5``) is its value, so the
    refusal names the real cause (a value out of range), not argparse's "expected one argument"."""
    return build_parser().parse_args(join_negative_values(argv, negative_value_flags(every_option())))


def main(argv: list[str] | None = None) -> int:
    quiet_progress_bars()  # before transformers is imported: no progress bar in a log file
    args = parse_args(list(sys.argv[1:] if argv is None else argv))

    from encoders import CheckpointError

    from .data import DataError
    from .loop import TrainingError
    from .mllm import MLLMError

    try:
        inputs, configs = _check_usage(args)
        _run(args.command, inputs, configs)
    except (UserError, CheckpointError, DataError, MLLMError, TrainingError, ValueError, FileNotFoundError, NotADirectoryError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2 if not isinstance(err, TrainingError) else 1
    return 0


def _where(opt: Option | None) -> str:
    return opt.flag if opt is not None else "python -m train"


def _check_usage(args: argparse.Namespace) -> tuple[Any, dict[str, StageConfig]]:
    """Every value (type, range, device, output folder, the batch split over the processes) before
    anything is read or loaded; returns the command's inputs and the stage configs it trains (stage
    name -> config; empty for commands that train none)."""
    from .commands import commands
    from .distributed import check_device

    command = commands()[args.command]
    inputs = build(command.inputs, given(args, "inputs"), _where)
    check_out_folder(inputs.out)
    settings = given(args, "settings")
    configs: dict[str, StageConfig] = {}
    if args.command == "stage":
        overrides = given_values(StageConfig, settings, _where)
        configs = {overrides["stage"]: stage_config(**overrides)}
    elif args.command == "pivot-eval":
        if bool(inputs.encoder) == bool(inputs.encoders):
            raise SettingsError("pivot-eval takes one of --encoder CKPT or --encoders lineage.toml")
        configs = build(command.settings, settings, _where).stages()
    if configs:
        check_device(inputs.device or None)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    for config in configs.values():
        check_world(config, world)
    return inputs, configs


def _run(command: str, inputs: Any, configs: dict[str, StageConfig]) -> None:
    progress = sys.stderr.isatty()
    if command == "build":
        from encoders import EncoderSpec, load_encoder

        from .mllm import build_mllm, save_mllm

        encoder = load_encoder(EncoderSpec(checkpoint=inputs.encoder, arch=inputs.arch))
        print(f"MLLM written to {save_mllm(build_mllm(encoder, inputs.lm, visual_layer=inputs.visual_layer), inputs.out)}")
    elif command == "stage":
        from .loop import train_stage

        (config,) = configs.values()
        train_stage(inputs.init, inputs.data, inputs.out, config, resume=inputs.resume, device=inputs.device or None, progress=progress)
    elif command == "shapes-data":
        from .data import write_shapes_data

        paths = write_shapes_data(inputs.data, inputs.split, inputs.out)
        print("\n".join(f"{kind}: {path}" for kind, path in paths.items()))
    elif command == "pivot-eval":
        from .pivot_eval import pivot_eval, pivot_eval_lineage, resolve_data

        data = resolve_data(inputs.data, Path(inputs.out))
        if inputs.encoders:
            print(f"lineage manifest: {pivot_eval_lineage(inputs.encoders, inputs.lm, data, inputs.out, device=inputs.device or None, progress=progress, **configs)}")
        else:
            print(f"MLLM: {pivot_eval(inputs.encoder, inputs.lm, data, inputs.out, arch=inputs.arch, device=inputs.device or None, progress=progress, **configs)}")
    elif command == "demo" and inputs.original_only:
        from .original import train_original

        print(f"original encoder: {train_original(progress=progress)}")
    elif command == "demo":
        from .demo import make_demo_lineage

        print(f"lineage manifest: {make_demo_lineage(inputs.out, replicates=inputs.replicates, force=inputs.force)}")
    else:
        _transfer(command, inputs)


def _transfer(command: str, inputs: Any) -> None:
    """import-mllm, export-mllm and tiny-llava: MLLMs in and out of the field's layouts."""
    if command == "import-mllm":
        from .mllm_import import import_mllm

        written = import_mllm(inputs.source, inputs.out, dtype=inputs.dtype, vision_config=inputs.vision_config or None, tolerance=inputs.check_tolerance)
        print(f"MLLM written to {written}")
    elif command == "export-mllm":
        from .mllm import load_mllm
        from .mllm_export import export_llava_hf

        print(f"{inputs.format} directory written to {export_llava_hf(load_mllm(inputs.mllm), inputs.out, tolerance=inputs.check_tolerance)}")
    else:
        from .tiny_llava import write_tiny_llava

        written = write_tiny_llava(inputs.out, layout=inputs.layout, tower=inputs.tower, lm=inputs.lm, image_size=inputs.image_size, corpus=inputs.corpus or None)
        print(f"tiny {inputs.layout} written to {written}")


if __name__ == "__main__":
    sys.exit(main())
