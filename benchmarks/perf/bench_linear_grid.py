"""Benchmark: one-pass grid of linear heads vs. sequential scikit-learn LogisticRegression fits.

Both methods see the same synthetic features, choose their regularisation on the same held-out part
of train and are scored on the same eval rows. Printed: wall time of each, the speed ratio, the best
held-out and eval top-1 of each (percent), and the eval top-1 difference.

    python -m benchmarks.perf.bench_linear_grid                  # 50k x 768, 100 classes
    python -m benchmarks.perf.bench_linear_grid --quick          # seconds-long smoke test
    python -m benchmarks.perf.bench_linear_grid --sklearn-fits 4 # time 4 C values, extrapolate the rest
    python -m benchmarks.perf.bench_linear_grid --sklearn-cs 0.003 0.01 0.03 0.1

By default scikit-learn is fitted once per C for as many C values as the grid has heads, log-spaced
over the range the grid's weight decays cover (``C = 1 / (wd * n_fit)``, widened 3x each way). At
50k x 768 x 100 one lbfgs fit takes minutes, so ``--sklearn-fits k`` fits only ``k`` of those values
(evenly spread) and ``--sklearn-cs`` fits exactly the given values; either way sklearn's time for the
full count is extrapolated from its mean time per fit (plus one refit), its accuracy is the best of
the values actually fitted, and the output says so.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
import torch

from probes.linear import LinearProbeConfig, linear_probe, sklearn_logreg_probe


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


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark, print the table, and return its numbers."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000, help="train rows")
    parser.add_argument("--n-eval", type=int, default=10_000, help="eval rows")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=None, help="grid epochs (default: LinearProbeConfig's)")
    parser.add_argument("--sklearn-fits", type=int, default=None, help="fit only this many C values and extrapolate")
    parser.add_argument(
        "--sklearn-cs", type=float, nargs="+", default=None, help="fit exactly these C values and extrapolate"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny problem for a smoke test (timings meaningless)")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.n_eval, args.dim, args.classes = 600, 200, 32, 5
        args.epochs = args.epochs or 5
        args.sklearn_fits = args.sklearn_fits or 4

    data = make_features(args.n, args.n_eval, args.dim, args.classes, seed=args.seed)
    config = LinearProbeConfig(seed=args.seed)
    if args.epochs is not None:
        config = LinearProbeConfig(epochs=args.epochs, seed=args.seed)
    n_values = config.n_heads
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
        f"torch threads {torch.get_num_threads()}"
    )
    started = time.perf_counter()
    grid = linear_probe(data.train_x, data.train_y, data.eval_x, data.eval_y, config=config)
    grid_seconds = time.perf_counter() - started

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

    rows = [
        ("one-pass grid", f"{n_values} heads", grid_seconds, grid.selection_score, grid.top1, str(grid.selected)),
        (
            "sklearn LogisticRegression",
            f"{n_sklearn} C values" + (f" (time for {n_values} extrapolated)" if extrapolated else ""),
            sklearn_total,
            ref.selection_score,
            ref.top1,
            str(ref.selected),
        ),
    ]
    print(f"\n{'method':<28} {'values':<36} {'wall s':>8} {'holdout top1':>13} {'eval top1':>10}  selected")
    for name, values, seconds, hold, top1, selected in rows:
        print(f"{name:<28} {values:<36} {seconds:>8.1f} {hold:>13.2f} {top1:>10.2f}  {selected}")
    speedup = sklearn_total / grid_seconds
    diff = grid.top1 - ref.top1
    print(f"\nspeed ratio (sklearn / grid): {speedup:.1f}x")
    print(f"eval top-1 difference (grid - sklearn): {diff:+.2f} points")
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
    return {
        "grid_seconds": grid_seconds,
        "sklearn_seconds": float(sklearn_total),
        "speedup": float(speedup),
        "grid_top1": grid.top1,
        "sklearn_top1": ref.top1,
        "top1_difference": diff,
    }


if __name__ == "__main__":
    main()
