"""Supervised pretraining of a small ViT on the shapes world: the demo lineage's ``original`` encoder.

Two linear heads on the pooled output predict the type (10 classes) and the colour (10) of the largest
shape, and a third on every patch token predicts the segmentation class that covers most of that patch
(background or a shape type): dense labels teach a small ViT shapes in few epochs. All heads are dropped
on export, so the checkpoint holds the encoder alone (a project encoder
checkpoint that ``encoders.load_encoder`` reads with no ``--arch``).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from encoders import save_encoder_checkpoint


@dataclass(frozen=True)
class VitPretrainConfig:
    """What to train and how: timm ``arch`` + ``options``, the shapes ``data`` spec (its train split),
    epochs, batch, AdamW ``lr`` / ``weight_decay`` with cosine decay, horizontal-flip augmentation."""

    arch: str = "vit_convstem_demo"  # a ViT with a convolutional stem (encoders/families/conv_stem_vit.py)
    options: dict[str, Any] = field(default_factory=lambda: {"img_size": 64, "embed_dim": 96, "depth": 4, "num_heads": 3})
    data: str = "shapes:n=4000:seed=3"
    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _patch_labels(mask: torch.Tensor, grid: int) -> torch.Tensor:
    """Majority class of each cell of a ``grid`` x ``grid`` partition of a (H, W) mask: (grid * grid,)."""
    size = mask.shape[0] - mask.shape[0] % grid
    cells = mask[:size, :size].reshape(grid, size // grid, grid, size // grid).permute(0, 2, 1, 3).reshape(grid * grid, -1)
    return torch.mode(cells, dim=1).values


def _render(config: VitPretrainConfig, transform: Callable, split: str, grid: int) -> tuple[torch.Tensor, ...]:
    """All images of ``split`` through the encoder's transform, with type, colour and patch labels."""
    from imagesets import open_split
    from imagesets.shapes import COLOUR_NAMES

    data = open_split(config.data, split)
    images = torch.stack([transform(data.load_image(i)) for i in range(len(data))])
    colours = torch.tensor([COLOUR_NAMES.index(data.objects(i)[-1].colour) for i in range(len(data))])
    patches = torch.stack([_patch_labels(torch.from_numpy(data.seg_mask(i).astype("int64")), grid) for i in range(len(data))])
    return images, torch.as_tensor(data.labels), colours, patches


def _batch_loss(model: nn.Module, heads: nn.ModuleDict, train: tuple[torch.Tensor, ...], index: torch.Tensor, grid: int, generator: torch.Generator) -> torch.Tensor:
    """Shape + colour + per-patch cross-entropy of the images ``index`` of ``train`` (images, types, colours,
    patch labels), half of them flipped left-right (their patch labels with them)."""
    train_x, train_type, train_colour, train_patch = train
    loss_fn = nn.CrossEntropyLoss()
    images = train_x[index]
    flip = torch.rand(len(index), generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    patch_labels = train_patch[index].view(len(index), grid, grid)
    patch_labels = torch.where(flip[:, None, None], patch_labels.flip(-1), patch_labels).flatten(1)
    tokens = model.forward_features(images)
    pooled = model.forward_head(tokens, pre_logits=True)
    patch_logits = heads["patch"](tokens[:, model.num_prefix_tokens:])
    return (loss_fn(heads["shape"](pooled), train_type[index]) + loss_fn(heads["colour"](pooled), train_colour[index])
            + loss_fn(patch_logits.flatten(0, 1), patch_labels.flatten()))


def pretrain_vit(out: str | os.PathLike, config: VitPretrainConfig = VitPretrainConfig(), log: Callable[[str], None] = print, progress: bool = True) -> tuple[Path, dict[str, float]]:
    """Train the ViT and write it to ``out`` (``.safetensors``); returns the path and val accuracies (%)."""
    import timm
    from timm.data import resolve_model_data_config

    import encoders  # noqa: F401  (registers the project's own timm architectures)
    from tqdm import tqdm

    from encoders import PreprocessConfig

    torch.manual_seed(config.seed)
    model = timm.create_model(config.arch, pretrained=False, num_classes=0, **config.options)
    data_config = resolve_model_data_config(model)
    size = model.patch_embed.img_size[-1]
    transform = PreprocessConfig(size, tuple(data_config["mean"]), tuple(data_config["std"])).transform()
    started = time.perf_counter()
    grid = model.patch_embed.grid_size[0]
    train_x, train_type, train_colour, train_patch = _render(config, transform, "train", grid)
    val_x, val_type, val_colour, _ = _render(config, transform, "val", grid)
    log(f"original encoder: {len(train_x)} train / {len(val_x)} val shapes images rendered in {time.perf_counter() - started:.1f} s")
    heads = nn.ModuleDict({"shape": nn.Linear(model.num_features, 10), "colour": nn.Linear(model.num_features, 10), "patch": nn.Linear(model.num_features, 11)})
    params = list(model.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * math.ceil(len(train_x) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(config.seed)
    bar = tqdm(total=steps, desc="original encoder", unit="step", disable=not progress)
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(train_x), generator=generator)
        for start in range(0, len(order), config.batch_size):
            index = order[start:start + config.batch_size]
            loss = _batch_loss(model, heads, (train_x, train_type, train_colour, train_patch), index, grid, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
            bar.update(1)
    bar.close()
    model.eval()
    with torch.no_grad():
        pooled = torch.cat([model(val_x[i:i + 256]) for i in range(0, len(val_x), 256)])
        accuracy = {
            "type_top1": float((heads["shape"](pooled).argmax(1) == val_type).float().mean() * 100),
            "colour_top1": float((heads["colour"](pooled).argmax(1) == val_colour).float().mean() * 100),
        }
    path = save_encoder_checkpoint(model.state_dict(), {"family": "timm", "arch": config.arch, "options": dict(config.options)}, out)
    log(f"original encoder: val type top-1 {accuracy['type_top1']:.1f}%, colour top-1 {accuracy['colour_top1']:.1f}% after {steps} steps ({time.perf_counter() - started:.1f} s)")
    return path, accuracy
