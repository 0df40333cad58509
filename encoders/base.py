"""The Encoder: one loaded checkpoint with its preprocessing, identity and a single feature call."""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .layouts import RemapReport


RESIZE_RULES = ("shorter", "square", "pad")


@dataclass(frozen=True)
class PreprocessConfig:
    """How images must be prepared for this encoder: square ``resolution`` in pixels, per-channel
    ``mean``/``std`` on [0, 1] RGB values, resize ``interpolation`` and ``crop_pct``. ``resize`` is the rule:
    ``shorter`` resizes the shorter side to ``resolution / crop_pct``, then centre-crops ``resolution``
    (timm's eval transform); ``square`` squashes the image to ``resolution`` x ``resolution`` (SigLIP's
    processor); ``pad`` first pads it to a square of the mean colour, centred (LLaVA's ``expand2square``)."""

    resolution: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    crop_pct: float = 1.0
    resize: str = "shorter"

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_RULES:
            raise ValueError(f"resize {self.resize!r}: one of {', '.join(RESIZE_RULES)}")

    def geometry(self, interpolation: str | None = None):
        """PIL image -> PIL image of ``resolution`` x ``resolution``: the resize rule alone (no tensor, no
        normalisation), with ``interpolation`` (e.g. ``nearest`` for masks) instead of the model's."""
        from torchvision import transforms as T

        mode = _interpolation_mode(interpolation or self.interpolation)
        if self.resize == "shorter":
            return T.Compose([T.Resize(int(round(self.resolution / self.crop_pct)), interpolation=mode, antialias=True), T.CenterCrop(self.resolution)])
        square = T.Resize((self.resolution, self.resolution), interpolation=mode, antialias=True)
        if self.resize == "square":
            return square
        background = tuple(int(value * 255) for value in self.mean)
        return T.Compose([PadToSquare(background), square])

    def transform(self):
        """The torchvision eval transform: PIL RGB image -> normalised float tensor (3, R, R)."""
        from torchvision import transforms as T

        return T.Compose([self.geometry(), T.ToTensor(), T.Normalize(self.mean, self.std)])

    def cache_key(self) -> str:
        rule = "" if self.resize == "shorter" else f"-{self.resize}"
        return f"r{self.resolution}-{self.interpolation}-c{self.crop_pct:g}-m{','.join(f'{v:.4g}' for v in self.mean)}-s{','.join(f'{v:.4g}' for v in self.std)}{rule}"


class PadToSquare:
    """LLaVA's ``expand2square`` as a transform: the image centred on a square canvas of ``background``
    (RGB 0-255; single-channel images such as masks get 0)."""

    def __init__(self, background: tuple[int, int, int]) -> None:
        self.background = tuple(background)

    def __call__(self, image):
        from PIL import Image

        width, height = image.size
        if width == height:
            return image
        side = max(width, height)
        canvas = Image.new(image.mode, (side, side), self.background if image.mode == "RGB" else 0)
        canvas.paste(image, ((side - width) // 2, (side - height) // 2))
        return canvas


def _interpolation_mode(name: str):
    from torchvision import transforms as T

    return {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR, "nearest": T.InterpolationMode.NEAREST}[name]


@dataclass
class LayerTokens:
    """Tokens of one transformer block (or stage): prefix tokens (B, P, D) and patch tokens (B, N, D)."""

    prefix: torch.Tensor
    patches: torch.Tensor

    def pooled(self) -> torch.Tensor:
        """First prefix token (CLS) when there is one, else the mean of the patch tokens: (B, D)."""
        return self.prefix[:, 0] if self.prefix.shape[1] else self.patches.mean(dim=1)


@dataclass
class EncoderOutput:
    """Features of a batch. ``pooled`` (B, D) is the model's own pooled output (CLS / MAP head / global
    pool); ``patch_tokens`` (B, N, D) with N = h * w for ``grid`` (h, w); ``prefix_tokens`` (B, P, D),
    P = number of CLS/register tokens (0 for SigLIP); ``layers`` maps requested block indices
    (non-negative, 0-based) to their tokens."""

    pooled: torch.Tensor
    patch_tokens: torch.Tensor
    grid: tuple[int, int]
    prefix_tokens: torch.Tensor
    layers: dict[int, LayerTokens] = field(default_factory=dict)


def weights_hash(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 (hex) over (key, dtype, shape, bytes) of every tensor in sorted key order.

    Depends only on names and values, so the same weights give the same hash from any file format.
    """
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.view(torch.int16)
        digest.update(memoryview(tensor.numpy()).cast("B") if tensor.numel() else b"")
    return digest.hexdigest()


class Encoder(nn.Module):
    """A vision encoder loaded from a checkpoint.

    ``adapter`` is the family's feature function ``(model, images, layers) -> EncoderOutput``.
    ``num_layers`` counts the blocks addressable by ``layers=`` in :meth:`features`.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str,
        family: str,
        arch: str,
        preprocess: PreprocessConfig,
        adapter,
        num_layers: int,
        num_prefix_tokens: int,
        embed_dim: int,
        weights_hash: str,
        checkpoint: str = "",
        checkpoint_format: str = "",
        remap: RemapReport | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.family = family
        self.arch = arch
        self.preprocess = preprocess
        self._adapter = adapter
        self.num_layers = num_layers
        self.num_prefix_tokens = num_prefix_tokens
        self.embed_dim = embed_dim
        self.weights_hash = weights_hash
        self.checkpoint = checkpoint
        self.checkpoint_format = checkpoint_format
        self.remap = remap or RemapReport()
        self.options = dict(options or {})

    def resolve_layers(self, layers: Sequence[int] | str | None) -> list[int]:
        """Block indices as non-negative ints: ``-1`` is the last block, ``'all'`` every block."""
        if layers is None:
            return []
        if layers == "all":
            return list(range(self.num_layers))
        resolved = []
        for layer in layers:
            index = layer + self.num_layers if layer < 0 else layer
            if not 0 <= index < self.num_layers:
                raise ValueError(f"{self.name}: layer {layer} out of range; the encoder has {self.num_layers} blocks (use -{self.num_layers}..{self.num_layers - 1})")
            resolved.append(index)
        return sorted(set(resolved))

    def features(self, images: torch.Tensor, layers: Sequence[int] | str | None = None) -> EncoderOutput:
        """Features of a normalised image batch (B, 3, H, W); see :class:`EncoderOutput`."""
        return self._adapter(self.model, images, self.resolve_layers(layers))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images).pooled

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def describe(self) -> dict[str, Any]:
        """Identity and provenance, JSON-serialisable (goes into result rows and reports)."""
        return {
            "name": self.name,
            "family": self.family,
            "arch": self.arch,
            "options": self.options,
            "checkpoint": self.checkpoint,
            "checkpoint_format": self.checkpoint_format,
            "weights_hash": self.weights_hash,
            "parameters": self.num_parameters(),
            "num_layers": self.num_layers,
            "num_prefix_tokens": self.num_prefix_tokens,
            "embed_dim": self.embed_dim,
            "preprocess": asdict(self.preprocess),
            "remap": self.remap.to_dict(),
            "remap_summary": self.remap.summary(),
        }


def token_stride(model: nn.Module) -> tuple[int, int] | None:
    """Input pixels per patch token (h, w) of a model with a timm-style ``patch_embed``: its ``patch_size``
    times the backbone's stride for a hybrid (CNN-stem) embedding, whose ``patch_size`` counts feature-map
    cells. None when the model has no such embedding."""
    patch_embed = getattr(model, "patch_embed", None)
    patch = getattr(patch_embed, "patch_size", None)
    if patch is None:
        return None
    patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
    ratio = getattr(patch_embed, "feature_ratio", (1, 1))
    ratio = (ratio, ratio) if isinstance(ratio, int) else tuple(ratio)
    return int(patch[0] * ratio[0]), int(patch[1] * ratio[1])


def grid_from_tokens(num_patches: int, image_hw: tuple[int, int], patch: int | tuple[int, int]) -> tuple[int, int]:
    """Patch grid (h, w) for an image of ``image_hw`` pixels; checked against the token count."""
    ph, pw = (patch, patch) if isinstance(patch, int) else patch
    grid = (image_hw[0] // ph, image_hw[1] // pw)
    if grid[0] * grid[1] != num_patches:
        side = int(round(np.sqrt(num_patches)))
        if side * side != num_patches:
            raise ValueError(f"cannot infer the patch grid: {num_patches} tokens for a {image_hw} image with patch {patch}")
        grid = (side, side)
    return grid
