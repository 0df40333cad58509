"""The literature's linear segmentation head, driven by mmsegmentation (docs/protocol.md section 2).

The encoder is registered as an mmseg backbone (:class:`FrozenEncoderBackbone`: no gradients, always
in eval mode, patch tokens reshaped with the encoder's own grid); a :class:`BNHead` (BatchNorm + 1x1
conv, as DINOv2's linear protocol) reads the last block's patch map, or the concatenation of the last
four, each passed through the encoder's final norm as dinov2's ``get_intermediate_layers(norm=True)``
(and timm's ``forward_intermediates(norm=True)``) do. Data goes through mmseg's dataset and pipeline (``reduce_zero_label``, random resize 0.5-2.0,
crop, flip, photometric distortion), training through mmengine's ``Runner`` (AdamW lr 1e-3, wd 0,
linear warm-up, poly decay), evaluation through sliding-window inference and ``IoUMetric``.

The crop is the encoder's own input resolution (512 for a 512 px encoder): a ViT with learned position
embeddings sees only the resolution it was built for. The trained head is saved as a state dict only
(mmengine's own checkpoints do not load under ``torch.load(weights_only=True)``).
mmcv-lite lacks the compiled ``mmcv.ops`` that ``mmseg.models`` imports at module level
(``point_sample``, ``sigmoid_focal_loss``): :func:`ensure_mmcv_ops` provides pure-torch ones only when
the compiled ops are absent, computing what mmcv's kernels compute.
"""
from __future__ import annotations

import sys
import types
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from encoders import Encoder
from encoders.base import token_stride
from probes.segmentation import MMSegConfig  # declared beside the other heads' configs, importable without mmseg
from probes.threads import at_most_threads


def point_sample(input: torch.Tensor, points: torch.Tensor, align_corners: bool = False, **kwargs) -> torch.Tensor:
    """mmcv's ``point_sample``: features of ``input`` (N, C, H, W) at ``points`` (N, P, 2) or (N, Hg, Wg, 2)
    given in [0, 1] x [0, 1], by ``grid_sample``."""
    add_dim = points.dim() == 3
    if add_dim:
        points = points.unsqueeze(2)
    output = F.grid_sample(input, 2.0 * points - 1.0, align_corners=align_corners, **kwargs)
    return output.squeeze(3) if add_dim else output


_FLT_MIN = float(torch.finfo(torch.float32).tiny)  # the kernels' FLT_MIN floor inside log()


class _SigmoidFocalLoss(torch.autograd.Function):
    """mmcv's ``sigmoid_focal_loss_forward/backward`` kernels (``sigmoid_focal_loss_cuda_kernel.cuh``),
    element by element, in torch."""

    @staticmethod
    def forward(ctx, input: torch.Tensor, target: torch.Tensor, gamma: float, alpha: float, weight: torch.Tensor | None) -> torch.Tensor:
        positive, row_weight = _focal_parts(input, target, weight)
        p = torch.sigmoid(input)
        term_p = (1 - p).pow(gamma) * torch.log(p.clamp_min(_FLT_MIN))
        term_n = p.pow(gamma) * torch.log((1 - p).clamp_min(_FLT_MIN))
        loss = torch.where(positive, -alpha * term_p, -(1 - alpha) * term_n)
        ctx.save_for_backward(input, positive, row_weight)
        ctx.gamma, ctx.alpha = gamma, alpha
        return loss * row_weight

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        input, positive, row_weight = ctx.saved_tensors
        gamma, alpha = ctx.gamma, ctx.alpha
        p = torch.sigmoid(input)
        term_p = (1 - p).pow(gamma) * (1 - p - gamma * p * torch.log(p.clamp_min(_FLT_MIN)))
        term_n = p.pow(gamma) * (gamma * (1 - p) * torch.log((1 - p).clamp_min(_FLT_MIN)) - p)
        grad = torch.where(positive, -alpha * term_p, -(1 - alpha) * term_n) * row_weight
        return grad * grad_output, None, None, None, None


def _focal_parts(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) bool "column c is row n's class", and the (N, 1) factor of each row: ``weight[target[n]]``."""
    if input.dim() != 2 or target.dim() != 1 or input.shape[0] != target.shape[0]:
        raise ValueError(f"sigmoid_focal_loss: input must be (N, C) and target (N,); got {tuple(input.shape)} and {tuple(target.shape)}")
    classes = input.shape[1]
    target = target.long()
    positive = target[:, None] == torch.arange(classes, device=input.device)[None, :]  # -1 or C: no class, all negatives
    if weight is None:
        return positive, input.new_ones(input.shape[0], 1)
    if weight.dim() != 1 or weight.shape[0] != classes:
        raise ValueError(f"sigmoid_focal_loss: weight must be ({classes},), one value per class; got {tuple(weight.shape)}")
    no_class = (target < 0) | (target >= classes)
    if bool(no_class.any()):
        # mmcv's kernel reads weight[target[n]] there, outside the vector: its result is undefined.
        raise ValueError(
            f"sigmoid_focal_loss: {int(no_class.sum())} rows have no class (target -1 or {classes}) but a class weight was given; "
            "mmcv's kernel would read outside the weight vector: drop those rows or pass weight=None"
        )
    return positive, weight.to(input)[target][:, None]


def sigmoid_focal_loss(input: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float = 0.25, weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """mmcv's ``sigmoid_focal_loss`` in torch, as its kernels compute it. ``input`` (N, C) logits,
    ``target`` (N,) class ids; a target outside 0..C-1 (mmdet's background C, or -1) is no class: every
    column of that row is a negative. Element (n, c), with p = sigmoid(input[n, c]):
    ``-alpha (1 - p)^gamma log(max(p, FLT_MIN))`` when c == target[n], else
    ``-(1 - alpha) p^gamma log(max(1 - p, FLT_MIN))``, times ``weight[target[n]]`` when ``weight`` (C,) is
    given (a per-class weight applied to the whole row of that class's items, not to column c). ``mean``
    divides the sum by N, ``sum`` sums, ``none`` returns (N, C). The gradient is the kernel's closed form."""
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"sigmoid_focal_loss: reduction must be none, mean or sum; got {reduction!r}")
    loss = _SigmoidFocalLoss.apply(input, target, float(gamma), float(alpha), weight)
    if reduction == "none":
        return loss
    return loss.sum() / input.shape[0] if reduction == "mean" else loss.sum()


def ensure_mmcv_ops() -> bool:
    """Make ``import mmcv.ops`` work; True when the pure-torch stand-in was installed (mmcv-lite),
    False when the compiled ops are there (a full mmcv keeps them)."""
    try:
        import mmcv.ops

        return False
    except ModuleNotFoundError as err:
        if "mmcv._ext" not in str(err) and "mmcv.ops" not in str(err):
            raise
    import mmcv

    module = types.ModuleType("mmcv.ops", "pure-torch stand-in for mmcv-lite (no compiled ops): point_sample and sigmoid_focal_loss only")
    module.point_sample = point_sample
    module.sigmoid_focal_loss = sigmoid_focal_loss

    def missing(name: str):
        # mmseg guards its optional ops with ``except ModuleNotFoundError`` (e.g. CrissCrossAttention).
        if name.startswith("__"):
            raise AttributeError(name)
        raise ModuleNotFoundError(f"mmcv.ops.{name} needs the compiled mmcv ops; mmcv-lite has none (install the full mmcv 2.1.0 to use it)")

    module.__getattr__ = missing
    sys.modules["mmcv.ops"] = module
    mmcv.ops = module
    return True


ensure_mmcv_ops()

from mmengine.config import ConfigDict
from mmengine.model import BaseModule
from mmseg.evaluation.metrics import IoUMetric
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import METRICS, MODELS

# Where the families keep the norm applied to the last block's tokens (timm / dinov2, transformers,
# open_clip, torchvision ViT).
_FINAL_NORMS = ("norm", "post_layernorm", "layernorm", "vision_model.post_layernorm", "ln_post", "encoder.ln")


def final_norm(encoder: Encoder) -> nn.Module:
    """The module that takes the last block's patch tokens to the encoder's final ones
    (``EncoderOutput.patch_tokens``): found by name and checked on a probe image, or ``nn.Identity`` for a
    family whose final tokens are the last block's own (e.g. transformers' CLIP). dinov2's
    ``get_intermediate_layers(norm=True)`` applies this module to every block it returns."""
    last = encoder.num_layers - 1
    size = encoder.preprocess.resolution
    probe = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    parameter = next(encoder.parameters(), None)
    if parameter is not None:
        probe = probe.to(parameter)
    with torch.no_grad():
        out = encoder.features(probe, layers=[last])
        raw, final = out.layers[last].patches, out.patch_tokens
        candidates: list[tuple[str, nn.Module]] = []
        for path in _FINAL_NORMS:
            module: object = encoder.model
            for part in path.split("."):
                module = getattr(module, part, None)
            if isinstance(module, nn.Module):
                candidates.append((path, module))
        candidates.append(("identity", nn.Identity()))
        for _, module in candidates:
            mapped = module(raw)
            if mapped.shape == final.shape and torch.allclose(mapped, final, rtol=1e-4, atol=1e-5):
                return module
    tried = ", ".join(path for path, _ in candidates)
    raise ValueError(
        f"{encoder.name}: no module maps its last block's tokens to its final ones (tried {tried}), so the earlier "
        "blocks cannot be normalised as the last one; use blocks=1 (--seg-blocks 1)"
    )


class FrozenEncoderBackbone(BaseModule):
    """An :class:`~encoders.Encoder` as an mmseg backbone: ``(B, 3, H, W) -> [(B, D, h, w), ...]``, the
    last ``blocks`` blocks' patch maps, every one passed through the encoder's final norm
    (:func:`final_norm`) as dinov2's ``get_intermediate_layers(norm=True)`` does (the last one is then
    the encoder's final tokens). Inputs of another size are resized to the encoder's resolution; the
    head's logits are resized back by mmseg."""

    def __init__(self, encoder: Encoder, blocks: int = 1) -> None:
        super().__init__()
        if not 1 <= blocks <= encoder.num_layers:
            raise ValueError(f"blocks={blocks}: the encoder {encoder.name} has {encoder.num_layers} blocks")
        self.encoder = encoder
        self.blocks = blocks
        self.resolution = encoder.preprocess.resolution
        for parameter in self.encoder.parameters():
            parameter.requires_grad_(False)
        self.encoder.eval()
        # Not a submodule: its parameters are the encoder's, already frozen and not to be registered twice.
        self._norm = [final_norm(encoder) if blocks > 1 else nn.Identity()]

    def init_weights(self) -> None:
        """The encoder's weights are the ones under test: never re-initialised."""

    def train(self, mode: bool = True) -> FrozenEncoderBackbone:
        super().train(mode)
        self.encoder.eval()  # frozen means eval mode too (dropout, norm statistics)
        return self

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        if tuple(images.shape[-2:]) != (self.resolution, self.resolution):
            images = F.interpolate(images, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        last = self.encoder.num_layers - 1
        norm = self._norm[0]
        with torch.no_grad():
            out = self.encoder.features(images, layers=list(range(last - self.blocks + 1, last)))
            maps = [norm(out.layers[layer].patches) for layer in sorted(out.layers)] + [out.patch_tokens]
        h, w = out.grid
        return [tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w).contiguous() for tokens in maps]


class BNHead(BaseDecodeHead):
    """DINOv2's linear head: the selected patch maps (concatenated after resizing to the first one's
    size when several), BatchNorm, then mmseg's 1x1 ``conv_seg``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bn = nn.BatchNorm2d(self.in_channels)  # mmseg sums in_channels for resize_concat

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.cls_seg(self.bn(self._transform_inputs(inputs)))


class RecordingIoUMetric(IoUMetric):
    """mmseg's ``IoUMetric`` that also keeps the per-image areas (for bootstrap CIs and per-item scores),
    the image paths, and the predicted masks of the images named in ``keep`` (file stems)."""

    def __init__(self, keep: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.keep = set(keep)
        self.kept_areas: np.ndarray | None = None
        self.paths: list[str] = []
        self.kept_paths: list[str] = []
        self.predictions: dict[str, np.ndarray] = {}

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        super().process(data_batch, data_samples)
        for sample in data_samples:
            self.paths.append(sample["img_path"])
            stem = Path(sample["img_path"]).stem
            if stem in self.keep:
                self.predictions[stem] = sample["pred_sem_seg"]["data"].squeeze(0).cpu().numpy().astype(np.uint8)

    def compute_metrics(self, results: list) -> dict[str, float]:
        self.kept_areas = np.stack([torch.stack([torch.as_tensor(part) for part in r]).cpu().numpy() for r in results])
        self.kept_paths, self.paths = self.paths, []
        return super().compute_metrics(results)


for _module in (FrozenEncoderBackbone, BNHead):
    if _module.__name__ not in MODELS.module_dict:
        MODELS.register_module(module=_module)
if "RecordingIoUMetric" not in METRICS.module_dict:
    METRICS.register_module(module=RecordingIoUMetric)


SINGLE_THREAD_MACS = 1 << 30  # multiply-adds per image below which CPU training runs on one thread


def _patch_pixels(encoder: Encoder) -> tuple[int, int]:
    return token_stride(encoder.model) or (16, 16)


@dataclass
class SegFolder:
    """An ``ADEChallengeData2016``-layout folder for mmseg: ``images/<sub>`` and ``annotations/<sub>``
    (annotations hold class + 1, 0 = ignore, read with ``reduce_zero_label``)."""

    root: Path
    classes: list[str]
    img_suffix: str = ".jpg"
    train_sub: str = "training"
    val_sub: str = "validation"
    ade20k: bool = True  # mmseg's ADE20KDataset (its 150 classes); False: BaseSegDataset with ``classes``


@dataclass
class MMSegResult:
    metrics: dict[str, float]  # IoUMetric's mIoU, mAcc, aAcc (%)
    areas: np.ndarray  # (n, 4, C) per image, in file-name order
    paths: list[str]
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    head_checkpoint: str = ""
    warmup: int = 0
    peak_lr: float = 0.0  # the optimizer's peak learning rate as mmengine's schedulers read it


def _dataset(folder: SegFolder, sub: str, pipeline: list[dict]) -> dict:
    common = {"data_root": str(folder.root), "data_prefix": {"img_path": f"images/{sub}", "seg_map_path": f"annotations/{sub}"},
                  "img_suffix": folder.img_suffix, "seg_map_suffix": ".png", "reduce_zero_label": True, "pipeline": pipeline}
    if folder.ade20k:
        return dict(type="mmseg.ADE20KDataset", **common)
    return dict(type="mmseg.BaseSegDataset", metainfo={"classes": tuple(folder.classes)}, **common)


def build_segmentor(encoder: Encoder, num_classes: int, config: MMSegConfig) -> nn.Module:
    """mmseg's ``EncoderDecoder``: frozen encoder backbone, BNHead, sliding-window test mode."""
    from mmseg.models import EncoderDecoder  # noqa: F401  (registers the segmentors)

    crop = config.crop or encoder.preprocess.resolution
    mean = [255.0 * v for v in encoder.preprocess.mean]
    std = [255.0 * v for v in encoder.preprocess.std]
    in_channels = [encoder.embed_dim] * config.blocks
    return MODELS.build({
        "type": "mmseg.EncoderDecoder",
        "data_preprocessor": {"type": "mmseg.SegDataPreProcessor", "mean": mean, "std": std, "bgr_to_rgb": True, "pad_val": 0, "seg_pad_val": 255, "size": (crop, crop)},
        "backbone": {"type": FrozenEncoderBackbone, "encoder": encoder, "blocks": config.blocks},
        "decode_head": {
            "type": BNHead, "in_channels": in_channels if config.blocks > 1 else encoder.embed_dim, "in_index": list(range(config.blocks)) if config.blocks > 1 else -1,
            "input_transform": "resize_concat" if config.blocks > 1 else None, "channels": sum(in_channels), "dropout_ratio": 0.0, "num_classes": num_classes,
            "align_corners": False, "loss_decode": {"type": "mmseg.CrossEntropyLoss", "use_sigmoid": False, "loss_weight": 1.0},
        },
        "test_cfg": ConfigDict(mode="slide", crop_size=(crop, crop), stride=(max(1, 2 * crop // 3),) * 2),
    })


def _pipelines(crop: int) -> tuple[list[dict], list[dict]]:
    """mmseg's ADE20K train and test pipelines for ``crop`` px crops (scale (2048, 512) for a 512 crop)."""
    scale = (4 * crop, crop)
    train = [
        {"type": "LoadImageFromFile"},
        {"type": "mmseg.LoadAnnotations", "reduce_zero_label": True},
        {"type": "RandomResize", "scale": scale, "ratio_range": (0.5, 2.0), "keep_ratio": True},
        {"type": "mmseg.RandomCrop", "crop_size": (crop, crop), "cat_max_ratio": 0.75},
        {"type": "RandomFlip", "prob": 0.5},
        {"type": "mmseg.PhotoMetricDistortion"},
        {"type": "mmseg.PackSegInputs"},
    ]
    test = [
        {"type": "LoadImageFromFile"},
        {"type": "Resize", "scale": scale, "keep_ratio": True},
        {"type": "mmseg.LoadAnnotations", "reduce_zero_label": True},
        {"type": "mmseg.PackSegInputs"},
    ]
    return train, test


def run_mmseg_linear(encoder: Encoder, folder: SegFolder, work_dir: str | Path, config: MMSegConfig = MMSegConfig(), keep: Sequence[str] = (), device: str = "cpu") -> MMSegResult:
    """Train the BNHead for ``config.iters`` iterations on ``folder``'s training images with mmengine's
    Runner and evaluate it on the validation images (sliding window, IoUMetric)."""
    from mmengine.runner import Runner

    train_pipeline, test_pipeline = _pipelines(config.crop or encoder.preprocess.resolution)
    model = build_segmentor(encoder, len(folder.classes), config).to(device)
    warmup = min(config.warmup, max(1, config.iters // 5))
    work_dir = Path(work_dir)
    runner = Runner(
        model=model,
        work_dir=str(work_dir),
        experiment_name=f"mmseg_linear-{encoder.name}-{uuid.uuid4().hex[:8]}",
        train_dataloader={"batch_size": config.batch_size, "num_workers": config.workers, "persistent_workers": False,
                              "sampler": {"type": "InfiniteSampler", "shuffle": True}, "dataset": _dataset(folder, folder.train_sub, train_pipeline)},
        val_dataloader={"batch_size": 1, "num_workers": config.workers, "persistent_workers": False,
                            "sampler": {"type": "DefaultSampler", "shuffle": False}, "dataset": _dataset(folder, folder.val_sub, test_pipeline)},
        val_evaluator={"type": RecordingIoUMetric, "iou_metrics": ["mIoU"], "keep": list(keep), "prefix": "mmseg"},
        train_cfg={"type": "IterBasedTrainLoop", "max_iters": config.iters, "val_begin": config.iters + 1, "val_interval": config.iters + 1},
        val_cfg={"type": "ValLoop"},
        optim_wrapper={"type": "OptimWrapper", "optimizer": {"type": "AdamW", "lr": config.lr, "weight_decay": config.weight_decay, "betas": (0.9, 0.999)}},
        param_scheduler=[
            {"type": "LinearLR", "start_factor": 1e-6, "by_epoch": False, "begin": 0, "end": warmup},
            {"type": "PolyLR", "power": 1.0, "eta_min": 0.0, "by_epoch": False, "begin": warmup, "end": config.iters},
        ],
        default_hooks={
            "timer": {"type": "IterTimerHook"}, "logger": {"type": "LoggerHook", "interval": config.log_interval, "log_metric_by_epoch": False},
            "param_scheduler": {"type": "ParamSchedulerHook"}, "checkpoint": None, "sampler_seed": {"type": "DistSamplerSeedHook"},
        },
        default_scope="mmseg",
        randomness={"seed": config.seed},
        log_level="WARNING",
        cfg={},
    )
    # A small encoder's per-image work is tiny; on shared CPU cores OpenMP waits then dominate (see
    # probes.threads), so it runs on one thread.
    tokens = encoder.preprocess.resolution ** 2 // max(1, int(np.prod(_patch_pixels(encoder))))
    small = torch.device(device).type == "cpu" and encoder.num_parameters() * tokens < SINGLE_THREAD_MACS
    with at_most_threads(1 if small else torch.get_num_threads()):
        runner.train()
        metrics = runner.val()
    metric: RecordingIoUMetric = runner.val_evaluator.metrics[0]
    head_path = work_dir / "bn_head.pth"
    torch.save({k: v.detach().cpu() for k, v in model.decode_head.state_dict().items()}, head_path)  # tensors only
    order = np.argsort([Path(p).name for p in metric.kept_paths], kind="stable")
    return MMSegResult(
        metrics={k: float(metrics[f"mmseg/{k}"]) for k in ("mIoU", "mAcc", "aAcc")},
        areas=metric.kept_areas[order], paths=[metric.kept_paths[i] for i in order],
        predictions=dict(metric.predictions), head_checkpoint=str(head_path), warmup=warmup,
        peak_lr=float(runner.optim_wrapper.optimizer.param_groups[0]["initial_lr"]),
    )
