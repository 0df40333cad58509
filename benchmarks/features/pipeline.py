"""The input pipeline of feature extraction: the images of a split as normalised float32 batches on the device.

Two ways in (``ExtractionConfig.decode``): ``cpu`` (DataLoader workers decode with PIL, resize and crop to
uint8 pixels; on CUDA the next batch's copy overlaps the current forward) or ``gpu`` (workers read the
file bytes; torchvision decodes them on the device in batches). Either way the pixels are normalised on
the device with exactly the arithmetic of ``ToTensor`` + ``Normalize``, and an unreadable image is a row
of zeros with ``readable`` False.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from imagesets import BadImageError, ImageSplit

from .config import ExtractionConfig

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""(images, labels (B,) int64, dataset indices (B,) int64, readable (B,) bool)."""


class TransformedSplit(Dataset):
    """(image tensor, label, index, readable) for a DataLoader; unreadable images become zeros."""

    def __init__(self, split: ImageSplit, transform, resolution: int, indices: Sequence[int]) -> None:
        self.split, self.transform, self.resolution, self.indices = split, transform, resolution, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int):
        index = self.indices[position]
        label = int(self.split.labels[index]) if len(self.split.labels) else -1
        try:
            image = self.transform(self.split.load_image(index))
            return image, label, index, True
        except BadImageError:
            return torch.zeros(3, self.resolution, self.resolution, dtype=torch.uint8), label, index, False


def uint8_transform(preprocess):
    """The encoder's eval transform up to (not including) ``ToTensor``/``Normalize``: PIL -> uint8 (3, R, R).

    Workers hand these uint8 pixels over (a quarter of float32's bytes through queues and to the
    device); :func:`normalize_on_device` then does exactly what ``ToTensor`` + ``Normalize`` did
    (``/ 255``, ``- mean``, ``/ std`` in float32, in that order), so the inputs are bit-identical."""
    from torchvision import transforms as T

    steps = preprocess.transform().transforms
    if not (isinstance(steps[-2], T.ToTensor) and isinstance(steps[-1], T.Normalize)):
        raise TypeError(f"expected a transform ending in ToTensor, Normalize; got {steps}")
    return T.Compose([*steps[:-2], T.PILToTensor()])


def normalize_on_device(images: torch.Tensor, valid: torch.Tensor, mean: Sequence[float], std: Sequence[float], device: str) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> normalised float32 on ``device`` (rows of unreadable images stay zeros, as before)."""
    x = images.to(device, non_blocking=True).to(torch.float32).div_(255)
    x.sub_(torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(-1, 1, 1))
    x.div_(torch.as_tensor(std, dtype=torch.float32, device=x.device).view(-1, 1, 1))
    if not bool(valid.all()):
        x[~valid.to(x.device)] = 0.0
    return x


def _prefetch(loader, device: str) -> Iterator[tuple]:
    """Batches of ``loader`` with their images already on ``device``. On CUDA the next batch's (pinned,
    non-blocking) copy is issued on a side stream before the current batch is handed out, so it
    overlaps the current forward; elsewhere batches pass through unchanged."""
    if torch.device(device).type != "cuda":
        yield from loader
        return
    stream = torch.cuda.Stream(device=device)

    def start(batch):
        images, *rest = batch
        with torch.cuda.stream(stream):
            images = images.to(device, non_blocking=True)
        return (images, *rest)

    batches = iter(loader)
    upcoming = next(batches, None)
    upcoming = None if upcoming is None else start(upcoming)
    while upcoming is not None:
        torch.cuda.current_stream(device).wait_stream(stream)
        current = upcoming
        current[0].record_stream(torch.cuda.current_stream(device))
        following = next(batches, None)
        upcoming = None if following is None else start(following)
        yield current


class _FileBytes(Dataset):
    """(file bytes as a uint8 numpy array, label, index, readable) per image, for device-side decoding.
    numpy arrays, not tensors: thousands of small tensors through worker queues exhaust file descriptors."""

    def __init__(self, split: ImageSplit, indices: Sequence[int]) -> None:
        self.split, self.indices = split, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int):
        index = self.indices[position]
        label = int(self.split.labels[index]) if len(self.split.labels) else -1
        try:
            data = np.fromfile(self.split.path(index), dtype=np.uint8)
        except OSError:
            data = np.zeros(0, dtype=np.uint8)
        return data, label, index, data.size > 0


def _collate_bytes(batch: list) -> tuple:
    data, labels, index, valid = zip(*batch)
    return list(data), torch.tensor(labels), torch.tensor(index), torch.tensor(valid)


def decode_resize_crop(files: Sequence[np.ndarray], preprocess, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode encoded images on ``device`` (JPEGs in one batched ``decode_jpeg`` call, nvJPEG on CUDA;
    other formats on CPU), resize the shorter side to ``resolution / crop_pct`` with antialias and
    centre-crop ``resolution``, as the PIL transform does. Returns uint8 (B, 3, R, R) on ``device`` and
    a bool (B,) readable mask (undecodable files give zero images)."""
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    resolution = preprocess.resolution
    size = int(round(resolution / preprocess.crop_pct))
    mode = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR, "nearest": InterpolationMode.NEAREST}[preprocess.interpolation]
    decoded: list[torch.Tensor | None] = [None] * len(files)
    jpegs = [i for i, data in enumerate(files) if data.size > 3 and data[0] == 0xFF and data[1] == 0xD8]
    if jpegs:
        try:
            images = decode_jpeg([torch.from_numpy(files[i]) for i in jpegs], mode=ImageReadMode.RGB, device=device)
            for i, image in zip(jpegs, images):
                decoded[i] = image
        except RuntimeError:
            for i in jpegs:  # one bad file fails the batch: decode one by one to find it
                with contextlib.suppress(RuntimeError):
                    decoded[i] = decode_jpeg(torch.from_numpy(files[i]), mode=ImageReadMode.RGB, device=device)
    for i, data in enumerate(files):
        if decoded[i] is None and i not in jpegs and data.size:
            with contextlib.suppress(RuntimeError):
                decoded[i] = decode_image(torch.from_numpy(data), mode=ImageReadMode.RGB).to(device)
    out = torch.zeros(len(files), 3, resolution, resolution, dtype=torch.uint8, device=device)
    for i, image in enumerate(decoded):
        if image is not None:
            image = TF.resize(image, [size], interpolation=mode, antialias=True)
            out[i] = TF.center_crop(image, [resolution, resolution])
    return out, torch.tensor([image is not None for image in decoded])


def _device_decoded(split: ImageSplit, indices: Sequence[int], preprocess, config: ExtractionConfig) -> Iterator[tuple]:
    """Batches (uint8 images on the device, labels, indices, readable) decoded on ``config.device``."""
    loader = DataLoader(_FileBytes(split, indices), batch_size=config.batch_size, num_workers=config.workers, collate_fn=_collate_bytes, persistent_workers=False)
    for files, labels, index, valid in loader:
        images, readable = decode_resize_crop(files, preprocess, config.device)
        yield images, labels, index, valid & readable


def image_batches(split: ImageSplit, indices: Sequence[int], preprocess, config: ExtractionConfig) -> Iterator[Batch]:
    """The images ``indices`` of ``split``, in that order, in batches of ``config.batch_size``: normalised
    float32 (B, 3, R, R) on ``config.device`` (zeros where unreadable), labels, indices and readable,
    decoded as ``config.decode`` says."""
    if config.decode == "cpu":
        dataset = TransformedSplit(split, uint8_transform(preprocess), preprocess.resolution, indices)
        loader = DataLoader(dataset, batch_size=config.batch_size, num_workers=config.workers, pin_memory=config.device.startswith("cuda"), persistent_workers=False)
        batches = _prefetch(loader, config.device)
    else:
        batches = _device_decoded(split, indices, preprocess, config)
    for images, labels, index, valid in batches:
        yield normalize_on_device(images, valid, preprocess.mean, preprocess.std, config.device), labels, index, valid
