"""``python -m encoders list`` and ``python -m encoders inspect PATH [--arch NAME] [--json]``."""
from __future__ import annotations

import argparse
import json
import sys

from .checkpoint import CheckpointError
from .family import FAMILIES
from .loader import EncoderSpec, load_encoder, mllm_vision_tower


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m encoders", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the registered encoder families")
    inspect = commands.add_parser("inspect", help="load a checkpoint strictly and describe it")
    inspect.add_argument("path", help="checkpoint file, Hugging Face model directory, or MLLM directory (python -m train; its vision tower)")
    inspect.add_argument("--arch", default="", help="architecture, e.g. vit_small_patch16_224 or open_clip:ViT-B-32")
    inspect.add_argument("--family", default="")
    inspect.add_argument("--allow-partial", action="store_true", help="load despite missing/unexpected keys (recorded)")
    inspect.add_argument("--allow-resample", action="store_true", help="let converters resample position/patch embeddings (recorded)")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name in FAMILIES.names():
            doc = (sys.modules[type(FAMILIES.get(name)).__module__].__doc__ or "").strip().splitlines()[0]
            print(f"{name:12s} {doc}")
        return 0
    try:
        encoder = load_encoder(EncoderSpec(checkpoint=args.path, arch=args.arch, family=args.family, allow_partial=args.allow_partial, allow_resample=args.allow_resample))
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    info = encoder.describe()
    tower = mllm_vision_tower(args.path)
    if tower is not None:
        info["mllm"] = args.path
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
    else:
        remap = info["remap"]
        if tower is not None:
            print(f"mllm         {args.path} (an MLLM directory; below, its vision tower)")
        print(f"checkpoint   {info['checkpoint']} ({info['checkpoint_format']})")
        print(f"family/arch  {info['family']} / {info['arch']}")
        print(f"parameters   {info['parameters']:,}")
        print(f"layers       {info['num_layers']} blocks, {info['num_prefix_tokens']} prefix tokens, width {info['embed_dim']}")
        print(f"weights hash {info['weights_hash']}")
        print(f"layout       {info['remap_summary']}")
        print(f"missing      {len(remap['missing'])} {remap['missing'][:5]}")
        print(f"unexpected   {len(remap['unexpected'])} {remap['unexpected'][:5]}")
        print(f"preprocess   {info['preprocess']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
