"""One training loop for every stage (align, pretrain, sft, dpo), single process or under torchrun.

An optimiser step consumes ``global_batch`` items: ``accumulation`` micro-batches of ``micro_batch``
items on each of ``world`` processes (DDP, or FSDP2's ``fully_shard`` with ``strategy="fsdp"``). Losses
are normalised by the *global* count of answer tokens (SFT-type stages) or items (DPO) of the step, so
the update does not depend on how the step is split across processes and micro-batches. A resumable
state (model, optimiser, scheduler, data position, RNG states, config) is written atomically every
``save_every`` steps; ``resume=True`` continues from it and ends with the same weights as an
uninterrupted run. When the stage ends its MLLM is exported (``out/mllm``, read by
``train.mllm.load_mllm``) together with the vision tower as a project encoder checkpoint
(``out/encoder.safetensors``, read by ``encoders.load_encoder`` with no ``--arch``).
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

from .checkpointing import load_state, rng_state, save_state, set_rng_state
from .config import StageConfig, check_world
from .data import DataError, ItemDataset, TrainItem, read_items
from .distributed import DistContext, all_reduce_sum, barrier, setup
from .losses import dpo_loss, sft_loss
from .mllm import MLLM, load_mllm, save_mllm

DONE_FILE = "stage.json"
# A stage that does not train the encoder (align, PIVOT's evaluation protocol) encodes each image once, not
# every step, when all the tokens fit in this many bytes; above it images are encoded every step as usual.
FROZEN_CACHE_BYTES = 512 * 2**20


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, bad settings); names the step, the batch and what was kept."""


@dataclass
class StageResult:
    """Where a finished stage put its outputs, and how fast it ran."""

    out: Path
    mllm_dir: Path
    encoder_checkpoint: Path
    steps: int
    summary: dict[str, Any]


def _fingerprint(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _set_trainable(mllm: MLLM, config: StageConfig) -> set[str]:
    """Mark what trains in this stage (``requires_grad``); returns the names of the encoder parameters that train.

    Encoder parameters that cannot reach the visual tokens (blocks after the visual layer, the final
    norm, a pooling head) are found by one backward pass and left frozen, so data parallelism sees no
    unused parameters and the optimiser holds no state for them.
    """
    mllm.requires_grad_(False)
    mllm.projector.requires_grad_(True)
    if config.trains_lm:
        mllm.lm.requires_grad_(True)
    trained: set[str] = set()
    if config.trains_encoder:
        mllm.encoder.requires_grad_(True)
        size = mllm.encoder.preprocess.resolution
        probe = torch.zeros(1, 3, size, size, device=mllm.device)
        mllm.encoder_tokens(probe).float().square().sum().backward()
        for name, param in mllm.encoder.named_parameters(prefix="encoder"):  # names as in mllm.named_parameters()
            if param.grad is None:
                param.requires_grad_(False)
            else:
                trained.add(name)
            param.grad = None
    return trained


def _wrap(mllm: MLLM, config: StageConfig, context: DistContext) -> torch.nn.Module:
    if not context.distributed:
        return mllm
    if config.strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in mllm.lm.get_decoder().layers:
            fully_shard(layer)
        fully_shard(mllm)
        return mllm
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(mllm, device_ids=[context.device.index] if context.device.type == "cuda" else None)


def _no_sync(model: torch.nn.Module, config: StageConfig, context: DistContext, last: bool):
    """Skip the gradient all-reduce on all but the last micro-batch of a step."""
    if not context.distributed or last:
        return contextlib.nullcontext()
    if config.strategy == "fsdp":
        model.set_requires_gradient_sync(False)
        return contextlib.nullcontext()
    return model.no_sync()


def _cosine_with_warmup(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    warmup = max(1, math.ceil(total_steps * warmup_ratio)) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _epoch_batches(n: int, config: StageConfig, context: DistContext, epoch: int) -> list[list[int]]:
    """This process's micro-batches of item indices for ``epoch`` (DistributedSampler order)."""
    sampler = DistributedSampler(range(n), num_replicas=context.world, rank=context.rank, shuffle=True, seed=config.seed, drop_last=False)
    sampler.set_epoch(epoch)
    indices = list(sampler)
    return [indices[i:i + config.micro_batch] for i in range(0, len(indices), config.micro_batch)]


class _Autocast:
    """bf16 autocast on CUDA, nothing on the CPU (bf16 is emulated and slow on many CPUs here)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __call__(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else contextlib.nullcontext()


def _reference_logprobs(reference: MLLM, items: list[TrainItem], dataset: ItemDataset, config: StageConfig, context: DistContext, autocast: _Autocast, progress: bool) -> torch.Tensor:
    """Summed answer log-probs of the reference model for every item: (n, 2) = (chosen, rejected).

    Each process scores every ``world``-th item; a sum over processes fills in the rest.
    """
    from tqdm import tqdm

    table = torch.zeros(len(items), 2, dtype=torch.float64)
    mine = list(range(context.rank, len(items), context.world))
    loader = DataLoader(dataset, batch_sampler=[mine[i:i + config.micro_batch] for i in range(0, len(mine), config.micro_batch)], num_workers=config.workers)
    reference.eval()
    with torch.no_grad():
        for indices, images in tqdm(loader, desc="reference log-probs", disable=not progress, unit="batch"):
            chosen, rejected = _pair_logprobs(reference, [items[i] for i in indices.tolist()], images.to(context.device), autocast)
            table[indices, 0] = chosen.double().cpu()
            table[indices, 1] = rejected.double().cpu()
    return all_reduce_sum(table.to(context.device), context).cpu()


class EncodedDataset(torch.utils.data.Dataset):
    """Items with the frozen encoder's tokens of their image: ``(index, (N, D) tensor)``."""

    def __init__(self, items: list[TrainItem], tokens: dict[str, torch.Tensor]) -> None:
        self.items, self.tokens = items, tokens

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        return index, self.tokens[self.items[index].image]


def _frozen_tokens(mllm: MLLM, items: list[TrainItem], config: StageConfig, context: DistContext, autocast: _Autocast) -> dict[str, torch.Tensor] | None:
    """The encoder's tokens at the visual layer (CPU) of every distinct image of ``items``, computed once with
    the encoder in eval mode (as it runs in a stage that does not train it), or None when they would not
    fit :data:`FROZEN_CACHE_BYTES`. Called before wrapping, so FSDP never sees a call outside its forward."""
    paths = sorted({item.image for item in items})
    if len(paths) * mllm.num_visual_tokens * mllm.encoder.embed_dim * 4 > FROZEN_CACHE_BYTES:
        return None
    images = ItemDataset([TrainItem(path, "", "") for path in paths], mllm.image_transform(), cache_bytes=0)
    loader = DataLoader(images, batch_size=config.micro_batch, num_workers=config.workers)
    was_training = mllm.encoder.training
    mllm.encoder.eval()
    tokens: dict[str, torch.Tensor] = {}
    with torch.no_grad(), autocast():
        for indices, pixels in loader:
            encoded = mllm.encoder_tokens(pixels.to(context.device)).float().cpu()
            tokens.update((paths[i], encoded[row].clone()) for row, i in enumerate(indices.tolist()))
    mllm.encoder.train(was_training)
    return tokens


def _pair_logprobs(model: MLLM | torch.nn.Module, batch_items: list[TrainItem], images: torch.Tensor, autocast: _Autocast) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of chosen and rejected answers in one forward (images encoded once)."""
    core = model.module if hasattr(model, "module") else model
    questions = [item.question for item in batch_items]
    batch = core.prepare(images.repeat(2, 1, 1, 1), questions * 2, [item.chosen for item in batch_items] + [item.rejected for item in batch_items])
    batch.images = images
    with autocast():
        logp, _ = model(batch, image_repeats=2)
    half = len(batch_items)
    return logp[:half], logp[half:]


def train_stage(
    start: str | Path, data: str | Path, out: str | Path, config: StageConfig, *, resume: bool = False, device: str | None = None,
    progress: bool = True, log: Callable[[str], None] = print, stop_after_steps: int | None = None,
) -> StageResult | None:
    """Train ``config.stage`` from the MLLM directory ``start`` on the JSONL file ``data`` into ``out``.

    Returns the exported result, or ``None`` when ``stop_after_steps`` ended the run early (as a kill
    would: nothing exported, the last checkpoint kept). A stage already finished in ``out`` with the
    same start, data and config is not trained again.
    """
    start, data, out = Path(start), Path(data), Path(out)
    context = setup(device)
    check_world(config, context.world)  # a usage error, found before anything loads
    say = log if context.is_main else (lambda message: None)
    identity = _identity(start, data, config, context)
    done = out / DONE_FILE
    if done.exists() and json.loads(done.read_text()).get("identity") == identity:
        say(f"{config.stage}: already trained in {out} (same start, data and settings); reusing it")
        summary = json.loads(done.read_text())
        return StageResult(out, out / "mllm", out / "encoder.safetensors", summary["steps"], summary)

    torch.manual_seed(config.seed)
    mllm = load_mllm(start, device=context.device)
    mllm.max_length = config.max_length
    items, report = read_items(data, length_of=mllm.sequence_length, max_length=config.max_length, max_bad_fraction=config.max_bad_fraction)
    say(report.summary())
    if config.stage == "dpo" and any(not item.rejected for item in items):
        raise DataError(f"{data}: the dpo stage needs preference items (question, chosen, rejected); caption lines have no rejected answer")
    run = _prepare(mllm, items, data, out, identity, config, context, progress and context.is_main)
    position = _start_position(run, resume, say)
    metrics_path = out / "metrics.jsonl"
    if context.is_main and not resume and metrics_path.exists():
        metrics_path.unlink()
    say(_plan_line(run))
    throughput = _run_steps(run, position, progress and context.is_main, stop_after_steps)
    if throughput is None:
        return None
    summary = {
        "stage": config.stage, "identity": identity, "steps": run.total_steps, "items": len(items), "skipped": dict(report.skipped),
        **throughput,
        "peak_cuda_memory_mb": torch.cuda.max_memory_allocated(context.device) / 2**20 if context.device.type == "cuda" else None,
        "world": context.world,
    }
    _export(run, start, summary, say)
    return StageResult(out, out / "mllm", out / "encoder.safetensors", run.total_steps, summary)


def _identity(start: Path, data: Path, config: StageConfig, context: DistContext) -> dict[str, Any]:
    """What a finished stage, a saved state and a cached reference table belong to: start, data, settings, world."""
    start_weights = json.loads((start / "mllm.json").read_text()).get("encoder_weights_hash", "") if (start / "mllm.json").exists() else ""
    return {"start": str(start.resolve()), "start_weights": start_weights, "data": _fingerprint(data) if data.exists() else "", "config": config.to_dict(), "world": context.world}


@dataclass
class _Training:
    """What the steps of one stage work with (built by :func:`_prepare`)."""

    config: StageConfig
    context: DistContext
    mllm: MLLM
    model: torch.nn.Module  # ``mllm``, or its DDP / FSDP wrapper
    items: list[TrainItem]
    dataset: torch.utils.data.Dataset
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    groups: list[dict[str, Any]]
    autocast: _Autocast
    data: Path
    out: Path
    identity: dict[str, Any]
    total_steps: int
    accumulation: int
    reference: MLLM | None = None
    reference_table: torch.Tensor | None = None
    frozen_images: int | None = None  # images whose frozen-encoder tokens were computed once (None: encoded every step)

    @property
    def checkpoint_dir(self) -> Path:
        return self.out / "checkpoint"

    @property
    def trains_encoder(self) -> bool:
        return len(self.groups) > 1


@dataclass
class _Position:
    """Where in the schedule training stands: optimiser steps done, epoch, micro-batches done in the epoch."""

    step: int = 0
    epoch: int = 0
    micro_done: int = 0


def _prepare(mllm: MLLM, items: list[TrainItem], data: Path, out: Path, identity: dict[str, Any], config: StageConfig, context: DistContext, progress: bool) -> _Training:
    """The schedule, the DPO reference, the trainable (wrapped) model, its optimiser and scheduler, and the dataset."""
    per_step = config.micro_batch * context.world
    accumulation = config.global_batch // per_step
    micro_per_epoch = math.ceil(math.ceil(len(items) / context.world) / config.micro_batch)
    steps_per_epoch = math.ceil(micro_per_epoch / accumulation)
    total_steps = max(1, math.ceil(config.epochs * steps_per_epoch))
    autocast = _Autocast(context.device)
    reference, reference_table = _dpo_reference(mllm, items, out, identity, config, context, autocast, progress)
    # Tokens of a frozen encoder, computed once (SFT-type stages; DPO's reference path encodes images itself).
    frozen = _frozen_tokens(mllm, items, config, context, autocast) if not config.trains_encoder and config.stage != "dpo" else None
    encoder_names = _set_trainable(mllm, config)
    if config.gradient_checkpointing:
        mllm.lm.gradient_checkpointing_enable()
        if hasattr(mllm.encoder.model, "set_grad_checkpointing"):
            mllm.encoder.model.set_grad_checkpointing(True)
    model = _wrap(mllm, config, context)
    # Parameters are collected after wrapping: fully_shard replaces them with sharded ones.
    encoder_params = [p for name, p in mllm.named_parameters() if p.requires_grad and name in encoder_names]
    other_params = [p for name, p in mllm.named_parameters() if p.requires_grad and name not in encoder_names]
    groups = [{"params": other_params, "lr": config.lr}]
    if encoder_params:
        groups.append({"params": encoder_params, "lr": config.encoder_lr if config.encoder_lr is not None else config.lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine_with_warmup(total_steps, config.warmup_ratio))
    dataset = EncodedDataset(items, frozen) if frozen is not None else ItemDataset(items, mllm.image_transform())
    if context.is_main:
        out.mkdir(parents=True, exist_ok=True)
    return _Training(config, context, mllm, model, items, dataset, optimizer, scheduler, groups, autocast, data, out, identity, total_steps, accumulation,
                     reference, reference_table, len(frozen) if frozen is not None else None)


def _dpo_reference(mllm: MLLM, items: list[TrainItem], out: Path, identity: dict[str, Any], config: StageConfig, context: DistContext,
                   autocast: _Autocast, progress: bool) -> tuple[MLLM | None, torch.Tensor | None]:
    """DPO's reference policy: a table of its answer log-probs (computed once, cached in ``out``) or a frozen
    copy of the model; (None, None) for the other stages. Called before any training or resumed state:
    the freshly loaded model *is* the reference."""
    if config.stage != "dpo":
        return None, None
    if not config.cache_reference:
        return copy.deepcopy(mllm).eval().requires_grad_(False), None
    cache = out / "reference_logprobs.pt"
    cached = torch.load(cache, weights_only=True) if cache.exists() else None
    if cached is not None and cached.get("identity") == identity:
        return None, cached["table"]
    table = _reference_logprobs(mllm, items, ItemDataset(items, mllm.image_transform()), config, context, autocast, progress)
    if context.is_main:
        out.mkdir(parents=True, exist_ok=True)
        torch.save({"identity": identity, "table": table}, cache.with_suffix(".tmp"))
        cache.with_suffix(".tmp").replace(cache)
    return None, table


def _start_position(run: _Training, resume: bool, say: Callable[[str], None]) -> _Position:
    """Step 0, or with ``resume`` the saved state of ``run.checkpoint_dir`` loaded (model, optimiser, scheduler, RNG)."""
    config, folder = run.config, run.checkpoint_dir
    if not resume:
        if run.context.is_main and (folder / "state.pt").exists():
            say(f"{config.stage}: a saved state exists in {folder}; starting over (pass --resume to continue it)")
        return _Position()
    state = load_state(folder)
    if state is None:
        return _Position()
    if state["identity"] != run.identity:
        raise TrainingError(f"{folder}: the saved state belongs to another start, data file or settings; delete it or run without --resume")
    _load_model_state(run.model, run.mllm, config, run.context, state["model"])
    _load_optimizer_state(run.model, run.optimizer, config, run.context, state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    position = _Position(state["step"], state["epoch"], state["micro_done"])
    set_rng_state(state["rng"])
    say(f"{config.stage}: resumed at step {position.step}/{run.total_steps} (epoch {position.epoch}, micro-batch {position.micro_done})")
    return position


def _plan_line(run: _Training) -> str:
    config, context = run.config, run.context
    encoder = f", encoder lr {config.encoder_lr if config.encoder_lr is not None else config.lr:g}" if run.trains_encoder else ", encoder frozen"
    frozen = f" (its tokens of {run.frozen_images} images computed once)" if run.frozen_images is not None else ""
    return (f"{config.stage}: {len(run.items)} items, {run.total_steps} steps of {config.global_batch} items ({run.accumulation} x {config.micro_batch} x {context.world} processes), "
            f"lr {config.lr:g}{encoder}{frozen}")


def _run_steps(run: _Training, position: _Position, progress: bool, stop_after_steps: int | None) -> dict[str, float] | None:
    """Train from ``position`` to the last step, writing ``metrics.jsonl`` and saving state every
    ``save_every`` steps; the run's seconds and throughput, or None when ``stop_after_steps`` stopped it."""
    from tqdm import tqdm

    config, context, main = run.config, run.context, run.context.is_main
    bar = tqdm(total=run.total_steps, initial=position.step, desc=config.stage, unit="step", disable=not progress)
    started, samples_seen, tokens_seen = time.perf_counter(), 0, 0
    if context.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(context.device)
    run.model.train()
    if not config.trains_encoder:
        run.mllm.encoder.eval()  # a frozen encoder keeps its normalisation statistics (BatchNorm) and has no dropout
    while position.step < run.total_steps:
        batches = _epoch_batches(len(run.items), config, context, position.epoch)
        windows = [batches[i:i + run.accumulation] for i in range(0, len(batches), run.accumulation)]
        for window in windows[position.micro_done // run.accumulation:]:
            if position.step >= run.total_steps:
                break
            step_metrics = _optimizer_step(run, window, position.step)
            position.step += 1
            position.micro_done += len(window)
            samples_seen += step_metrics.pop("samples")
            tokens_seen += step_metrics.pop("tokens")
            elapsed = time.perf_counter() - started
            record = {"step": position.step, "epoch": position.epoch, **step_metrics, "lr": run.scheduler.get_last_lr()[0],
                      "samples_per_s": samples_seen / elapsed, "tokens_per_s": tokens_seen / elapsed}
            if main:
                with open(run.out / "metrics.jsonl", "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")
                bar.set_postfix(loss=f"{record['loss']:.4f}", samples_s=f"{record['samples_per_s']:.1f}")
                bar.update(1)
            last_step = position.step >= run.total_steps
            if config.save_every and position.step % config.save_every == 0 and not last_step:
                _save(run.model, run.mllm, run.optimizer, run.scheduler, config, context, run.checkpoint_dir, run.identity, position.step, position.epoch, position.micro_done)
            if stop_after_steps is not None and position.step >= stop_after_steps and not last_step:
                bar.close()
                return None
        if position.step < run.total_steps:
            position.epoch, position.micro_done = position.epoch + 1, 0
    bar.close()
    elapsed = time.perf_counter() - started
    return {"seconds": round(elapsed, 3), "samples_per_s": samples_seen / max(elapsed, 1e-9), "tokens_per_s": tokens_seen / max(elapsed, 1e-9)}


def _optimizer_step(run: _Training, window: list[list[int]], step: int) -> dict[str, float]:
    """One optimiser step over the micro-batches ``window``; its metrics (with ``grad_norm``, ``samples``, ``tokens``)."""
    config, context = run.config, run.context
    loader = DataLoader(run.dataset, batch_sampler=window, num_workers=config.workers)
    loaded = [(indices, images.to(context.device, non_blocking=True)) for indices, images in loader]
    step_metrics = _train_step(run.model, run.mllm, run.items, loaded, run.reference, run.reference_table, config, context, run.autocast, step, run.data,
                               encoded=run.frozen_images is not None)
    grad_norm = torch.nn.utils.clip_grad_norm_([p for group in run.groups for p in group["params"]], config.max_grad_norm)
    if not torch.isfinite(grad_norm):
        raise TrainingError(f"{config.stage}: non-finite gradient norm at step {step} (items at lines {_lines(run.items, loaded)} of {run.data}); nothing of this step was applied and the last checkpoint in {run.checkpoint_dir} is kept; lower the learning rate or check those items")
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return {**step_metrics, "grad_norm": float(grad_norm)}


def _export(run: _Training, start: Path, summary: dict[str, Any], say: Callable[[str], None]) -> None:
    """Rank 0 writes the trained MLLM (``out/mllm``), its encoder checkpoint and ``stage.json``; every rank waits for it."""
    config, context, out = run.config, run.context, run.out
    state = _full_model_state(run.model, run.mllm, config, context)
    if context.is_main:
        export = _rebuilt(start, state) if config.strategy == "fsdp" and context.distributed else copy.deepcopy(run.mllm)
        save_mllm(export.cpu().eval(), out / "mllm", extra={"stage": config.stage, "config": config.to_dict(), "start": str(start), "data": str(run.data)})
        shutil.copyfile(out / "mllm" / "encoder.safetensors", out / "encoder.safetensors")
        (out / DONE_FILE).write_text(json.dumps(summary, indent=2))
        say(f"{config.stage}: done in {summary['seconds']:.1f} s ({summary['samples_per_s']:.1f} samples/s); MLLM {out / 'mllm'}, encoder {out / 'encoder.safetensors'}")
    barrier(context)


def _lines(items: list[TrainItem], loaded: list[tuple[torch.Tensor, torch.Tensor]]) -> list[int]:
    return [items[i].line for indices, _ in loaded for i in indices.tolist()][:10]


def _train_step(model, mllm: MLLM, items: list[TrainItem], loaded, reference, reference_table, config: StageConfig, context: DistContext, autocast: _Autocast, step: int, data: Path,
                encoded: bool = False) -> dict[str, float]:
    """Forward and backward of every micro-batch of one step; returns the step's metrics (global means).
    ``encoded``: the loaded tensors are the frozen encoder's tokens, not images."""
    batch_items = [[items[i] for i in indices.tolist()] for indices, _ in loaded]
    if config.stage == "dpo":
        return _dpo_step(model, mllm, batch_items, loaded, reference, reference_table, config, context, autocast, step, data)
    prepared = [mllm.prepare(images, [item.question for item in group], [item.chosen for item in group]) for group, (_, images) in zip(batch_items, loaded)]
    local_tokens = sum(int((batch.labels != -100).sum()) for batch in prepared)
    totals = all_reduce_sum(torch.tensor([float(local_tokens), float(sum(len(g) for g in batch_items))], device=context.device), context)
    loss_sum = torch.zeros((), device=context.device)
    for position, batch in enumerate(prepared):
        with _no_sync(model, config, context, last=position == len(prepared) - 1):
            with autocast():
                logp, n_tokens = model(batch, encoded=encoded)
            loss = sft_loss(logp, n_tokens, normaliser=totals[0]) * context.world
            _check_finite(loss, config, step, batch_items[position], data)
            loss.backward()
        loss_sum += loss.detach() / context.world
    loss_total = all_reduce_sum(loss_sum, context)
    return {"loss": float(loss_total), "samples": int(totals[1]), "tokens": int(totals[0])}


def _dpo_step(model, mllm: MLLM, batch_items, loaded, reference, reference_table, config: StageConfig, context: DistContext, autocast: _Autocast, step: int, data: Path) -> dict[str, float]:
    local_items = sum(len(group) for group in batch_items)
    chosen_tokens = sum(len(mllm.answer_ids(item.chosen)) for group in batch_items for item in group)
    totals = all_reduce_sum(torch.tensor([float(local_items), float(chosen_tokens)], device=context.device), context)
    sums = torch.zeros(6, device=context.device, dtype=torch.float64)  # loss, chosen, rejected, margin, accuracy, sft
    for position, (group, (indices, images)) in enumerate(zip(batch_items, loaded)):
        if reference_table is not None:
            ref_chosen, ref_rejected = (reference_table[indices, k].to(context.device, torch.float32) for k in (0, 1))
        else:
            with torch.no_grad():
                ref_chosen, ref_rejected = _pair_logprobs(reference, group, images, autocast)
        with _no_sync(model, config, context, last=position == len(loaded) - 1):
            policy_chosen, policy_rejected = _pair_logprobs(model, group, images, autocast)
            per_item, metrics = dpo_loss(policy_chosen, policy_rejected, ref_chosen.to(policy_chosen.dtype), ref_rejected.to(policy_chosen.dtype), beta=config.beta)
            loss = per_item.sum() / totals[0]
            sft_part = -policy_chosen.sum() / totals[1]
            if config.sft_weight:
                loss = loss + config.sft_weight * sft_part
            loss = loss * context.world
            _check_finite(loss, config, step, group, data)
            loss.backward()
        sums += torch.stack([loss.detach().double() / context.world, metrics["rewards/chosen"].sum().double(), metrics["rewards/rejected"].sum().double(),
                             metrics["rewards/margins"].sum().double(), metrics["rewards/accuracies"].sum().double(), sft_part.detach().double()])
    sums = all_reduce_sum(sums, context)
    n = float(totals[0])
    return {
        "loss": float(sums[0]), "rewards/chosen": float(sums[1]) / n, "rewards/rejected": float(sums[2]) / n,
        "rewards/margins": float(sums[3]) / n, "rewards/accuracies": float(sums[4]) / n, "sft_loss": float(sums[5]),
        "samples": int(n), "tokens": int(totals[1]),
    }


def _check_finite(loss: torch.Tensor, config: StageConfig, step: int, group: list[TrainItem], data: Path) -> None:
    if not torch.isfinite(loss):
        lines = [item.line for item in group][:10]
        raise TrainingError(f"{config.stage}: non-finite loss at step {step} (items at lines {lines} of {data}); the step was not applied and the last checkpoint is kept; lower the learning rate or check those items")


def _full_model_state(model, mllm: MLLM, config: StageConfig, context: DistContext) -> dict[str, torch.Tensor]:
    if config.strategy == "fsdp" and context.distributed:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {key: value.detach().cpu().clone() for key, value in mllm.state_dict().items()}


def _load_model_state(model, mllm: MLLM, config: StageConfig, context: DistContext, state: dict[str, torch.Tensor]) -> None:
    if config.strategy == "fsdp" and context.distributed:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=False))
        return
    mllm.load_state_dict(state)


def _load_optimizer_state(model, optimizer, config: StageConfig, context: DistContext, state) -> None:
    if config.strategy == "fsdp" and context.distributed:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=False))
        return
    optimizer.load_state_dict(state)


def _save(model, mllm: MLLM, optimizer, scheduler, config: StageConfig, context: DistContext, folder: Path, identity: dict, step: int, epoch: int, micro_done: int) -> None:
    model_state = _full_model_state(model, mllm, config, context)
    if config.strategy == "fsdp" and context.distributed:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        optimizer_state = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        optimizer_state = optimizer.state_dict()
    if context.is_main:
        save_state(folder, {"identity": identity, "model": model_state, "optimizer": optimizer_state, "scheduler": scheduler.state_dict(),
                            "step": step, "epoch": epoch, "micro_done": micro_done, "rng": rng_state(), "config": config.to_dict()})
    barrier(context)


def _rebuilt(start: Path, state: dict[str, torch.Tensor]) -> MLLM:
    """A plain (unsharded) MLLM with ``state`` loaded: what rank 0 exports after FSDP training."""
    mllm = load_mllm(start)
    mllm.load_state_dict(state)
    return mllm
