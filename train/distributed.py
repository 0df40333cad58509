"""Process-group setup for torchrun (NCCL on GPUs, gloo on CPUs) and the few collectives the loop uses."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """This process's place: ``rank`` of ``world`` processes, its ``device``."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def check_device(device: str | None) -> None:
    """Refuse a ``--device`` that is not ``cpu``, ``cuda`` or ``cuda:N``, or asks for a GPU torch does not see
    (:class:`train.config.SettingsError`, one line with the fix)."""
    from .config import SettingsError

    if device is None:
        return
    text = str(device)
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if text != "cpu" and match is None:
        raise SettingsError(f"--device {text!r}: unknown device; pass cpu, cuda or cuda:N (or leave it out: cuda when present, else cpu)")
    if match is None:
        return
    if not torch.cuda.is_available():
        raise SettingsError(f"--device {text}: torch sees no GPU here (torch.cuda.is_available() is False); pass --device cpu or leave --device out")
    if match.group(1) is not None and int(match.group(1)) >= torch.cuda.device_count():
        raise SettingsError(f"--device {text}: torch sees {torch.cuda.device_count()} GPU(s) (cuda:0..cuda:{torch.cuda.device_count() - 1}); pass one of them or plain cuda")


def setup(device: str | None = None) -> DistContext:
    """Join the process group that torchrun describes (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), if any.

    ``device`` ``None`` picks ``cuda:LOCAL_RANK`` when CUDA is present, else the CPU; an unknown or
    absent device is refused (:func:`check_device`).
    """
    check_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else str(device).startswith("cuda")
    explicit = use_cuda and device is not None and ":" in str(device) and world == 1  # one process: the GPU asked for
    target = torch.device(str(device) if explicit else f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(target)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    return DistContext(rank=rank, world=world, local_rank=local_rank, device=target)


def all_reduce_sum(value: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Sum of ``value`` over all processes (a copy; the input is untouched)."""
    value = value.detach().clone()
    if context.distributed:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def barrier(context: DistContext) -> None:
    if context.distributed:
        dist.barrier()
