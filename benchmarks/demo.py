"""``make demo``: the main job on the embedded default, offline, on CPU, in minutes.

Until ``train/`` produces a trained original / +SFT / +PIVOT trio, the lineage is a STAND-IN: one
randomly initialised tiny ViT (the "original") and two copies with small seeded weight perturbations
labelled sft and pivot. Their differences show the machinery (deltas, CIs, paired significance), not
a finding about any training recipe; the report says so.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from benchmarks import run
from encoders import save_encoder_checkpoint
from probes.linear import LinearProbeConfig

DEMO_ARCH = "vit_small_patch16_224"
DEMO_OPTIONS = {"img_size": 64, "patch_size": 8, "embed_dim": 96, "depth": 4, "num_heads": 3}
DEMO_DATA = "shapes:n=800:seed=0"
_GRID = LinearProbeConfig()
NOTE = (
    "Demo-sized: shapes world with 800 train / 200 val images at 224 px, a 4-block ViT (embed 96, 64 px input, "
    f"patch 8), linear grid of {len(_GRID.lrs) * len(_GRID.weight_decays)} heads "
    f"({len(_GRID.lrs)} learning rates x {len(_GRID.weight_decays)} weight decays) for {_GRID.epochs} epochs "
    f"(at least {_GRID.min_steps} steps), all blocks probed. STAND-IN lineage: sft and pivot are "
    "seeded perturbations of a randomly initialised original, not trained checkpoints (train/ is not built yet)."
)

DIGITS_NOTE = "Demo-sized: scikit-learn digits (1078 train / 359 val, 8x8 upscaled), last block only; same stand-in lineage."


def write_stand_in_lineage(folder: Path) -> Path:
    """Write original / sft / pivot project checkpoints and a manifest; returns the manifest path."""
    import timm

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    original = timm.create_model(DEMO_ARCH, pretrained=False, num_classes=0, **DEMO_OPTIONS).state_dict()
    spec = {"family": "timm", "arch": DEMO_ARCH, "options": DEMO_OPTIONS}
    entries = []
    for seed, (name, role, scale) in enumerate([("demo-vit", "original", 0.0), ("demo-vit-sft", "sft", 0.05), ("demo-vit-pivot", "pivot", 0.10)]):
        generator = torch.Generator().manual_seed(seed)
        state = {k: v + scale * v.std().nan_to_num(0.0) * torch.randn(v.shape, generator=generator) if v.is_floating_point() and v.numel() > 1 else v.clone() for k, v in original.items()}
        path = save_encoder_checkpoint(state, spec, folder / f"{name}.safetensors")
        entries.append(f'[[encoder]]\nname = "{name}"\ncheckpoint = "{path.name}"\nrole = "{role}"\n' + ('' if role == "original" else 'base = "demo-vit"\n'))
    manifest = folder / "lineage.toml"
    manifest.write_text("\n".join(entries))
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.demo", description=__doc__)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--cache-dir", default=".cache/features")
    args = parser.parse_args(argv)
    out = Path(args.out)
    manifest = write_stand_in_lineage(out / "checkpoints")
    print(f"stand-in lineage written to {manifest} (see the note in the report)")
    common = ["--encoders", str(manifest), "--cache-dir", args.cache_dir, "--batch-size", "100", "--workers", "1", "--no-report"]
    status = run.main([*common, "--suite", "all", "--data", DEMO_DATA, "--out", str(out / "shapes"), "--layers", "all", "--note", NOTE])
    # Real images too: random-weight features separate the digits well above chance, unlike the shapes.
    status |= run.main([*common, "--suite", "cls", "--data", "digits", "--out", str(out / "digits"), "--note", DIGITS_NOTE])
    from reports.build import build_report

    report = build_report([out / "shapes", out / "digits"], out / "report.html", title="Demo: stand-in lineage on the shapes world and digits")
    print(f"\nHTML report: {report.resolve()}")
    return status


if __name__ == "__main__":
    sys.exit(main())
