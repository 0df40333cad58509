"""Tests for probes.knn: temperature-weighted cosine kNN and the class-mean prototype classifier."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from probes import knn
from probes.knn import knn_probe, prototype_probe


def clusters(n: int, dim: int, n_classes: int, *, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clusters around fixed directions (cosine geometry): class c at a random unit direction."""
    directions = torch.randn(n_classes, dim, generator=torch.Generator().manual_seed(99))
    directions = torch.nn.functional.normalize(directions, dim=1)
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(0, n_classes, (n,), generator=generator)
    norms = torch.rand(n, 1, generator=generator) * 3 + 0.5  # cosine must ignore the norm
    x = (directions[y] + spread * torch.randn(n, dim, generator=generator)) * norms
    return x, y


def test_knn_on_clustered_data():
    tx, ty = clusters(300, 16, 6, spread=0.15, seed=0)
    ex, ey = clusters(100, 16, 6, spread=0.15, seed=1)
    results = knn_probe(tx, ty, ex, ey, ks=(10, 20))
    assert set(results) == {10, 20}
    for k, result in results.items():
        assert result.method == f"knn_k{k}" and result.selected == {"k": k, "temperature": 0.07}
        assert result.top1 > 95.0 and result.top5 is not None and result.top5 >= result.top1
        assert result.correct.shape == (100,) and result.top1_ci[0] <= result.top1 <= result.top1_ci[1]


def test_knn_near_chance_on_random_labels():
    tx, _ = clusters(300, 16, 4, spread=1.0, seed=0)
    ex, _ = clusters(300, 16, 4, spread=1.0, seed=1)
    rng = torch.Generator().manual_seed(5)
    ty, ey = torch.randint(0, 4, (300,), generator=rng), torch.randint(0, 4, (300,), generator=rng)
    result = knn_probe(tx, ty, ex, ey, ks=(10,))[10]
    assert 12.0 < result.top1 < 40.0 and result.top5 is None


def _two_class_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    # The query's nearest neighbour (cos 0.99) is class 0; the next two (cos 0.5) are class 1.
    query = torch.tensor([[1.0, 0.0, 0.0]])
    angle_near, angle_far = math.acos(0.99), math.acos(0.5)
    train = torch.tensor(
        [
            [math.cos(angle_near), math.sin(angle_near), 0.0],
            [math.cos(angle_far), 0.0, math.sin(angle_far)],
            [math.cos(angle_far), 0.0, -math.sin(angle_far)],
            [-1.0, 0.0, 0.0],
        ]
    )
    return train, torch.tensor([0, 1, 1, 0]), query, torch.tensor([0])


def test_temperature_weights_close_neighbours_more():
    tx, ty, ex, ey = _two_class_case()
    # exp(0.99 / 0.07) outweighs 2 * exp(0.5 / 0.07): the single close neighbour wins ...
    assert knn_probe(tx, ty, ex, ey, ks=(3,), temperature=0.07)[3].top1 == 100.0
    # ... while at a high temperature the votes are almost equal and the majority wins.
    assert knn_probe(tx, ty, ex, ey, ks=(3,), temperature=100.0)[3].top1 == 0.0
    # With k=1 only the nearest neighbour votes, whatever the temperature.
    assert knn_probe(tx, ty, ex, ey, ks=(1,), temperature=100.0)[1].top1 == 100.0


def test_knn_chunking_does_not_change_results():
    tx, ty = clusters(120, 8, 5, spread=0.6, seed=0)
    ex, ey = clusters(50, 8, 5, spread=0.6, seed=1)
    whole = knn_probe(tx, ty, ex, ey, ks=(5, 10))
    chunked = knn_probe(tx, ty, ex, ey, ks=(5, 10), batch_size=7)
    for k in (5, 10):
        assert np.array_equal(whole[k].correct, chunked[k].correct)
        assert whole[k].top5 == chunked[k].top5


def test_knn_train_chunks_merge_to_the_same_neighbours(monkeypatch):
    tx, ty = clusters(230, 8, 5, spread=0.6, seed=0)
    ex, ey = clusters(40, 8, 5, spread=0.6, seed=1)
    whole = knn_probe(tx, ty, ex, ey, ks=(5, 10))
    monkeypatch.setattr(knn, "_SIM_BUDGET", 40 * 23)  # 23 train rows per block: 10 blocks, the last one partial
    chunked = knn_probe(tx, ty, ex, ey, ks=(5, 10))
    for k in (5, 10):
        assert np.array_equal(whole[k].correct, chunked[k].correct) and whole[k].top5 == chunked[k].top5
    queries, train = torch.randn(6, 4), torch.randn(50, 4)
    sims, idx = knn._topk_similar(queries, train, 7, train_chunk=9)
    expected_sims, expected_idx = (queries @ train.T).topk(7, dim=1)
    assert torch.equal(idx, expected_idx) and torch.allclose(sims, expected_sims)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine: CPU vs CUDA equality not checked")
def test_knn_and_prototype_equal_on_cpu_and_cuda():
    tx, ty = clusters(3000, 32, 10, spread=0.7, seed=0)
    ex, ey = clusters(500, 32, 10, spread=0.7, seed=1)
    cpu, gpu = knn_probe(tx, ty, ex, ey), knn_probe(tx, ty, ex, ey, device="cuda")
    for k in (10, 20):
        # float32 sums differ in the last bits between devices: allow one near-tie to flip
        assert np.sum(cpu[k].correct != gpu[k].correct) <= 1 and abs(cpu[k].top5 - gpu[k].top5) <= 0.2
    cpu_p, gpu_p = prototype_probe(tx, ty, ex, ey), prototype_probe(tx, ty, ex, ey, device="cuda")
    assert np.sum(cpu_p.correct != gpu_p.correct) <= 1


def test_knn_matches_a_direct_computation():
    tx, ty = clusters(80, 6, 3, spread=0.8, seed=0)
    ex, ey = clusters(30, 6, 3, spread=0.8, seed=1)
    k, temperature = 7, 0.1
    sims = torch.nn.functional.normalize(ex, dim=1) @ torch.nn.functional.normalize(tx, dim=1).T
    expected = []
    for row in sims:
        top = row.topk(k)
        votes = np.zeros(3)
        for s, i in zip(top.values.tolist(), top.indices.tolist()):
            votes[int(ty[i])] += math.exp(s / temperature)
        expected.append(int(np.argmax(votes)))
    result = knn_probe(tx, ty, ex, ey, ks=(k,), temperature=temperature)[k]
    assert np.array_equal(result.correct, np.array(expected) == ey.numpy())


def test_knn_rejects_bad_arguments():
    tx, ty = clusters(20, 4, 2, spread=0.5, seed=0)
    with pytest.raises(ValueError, match="exceeds"):
        knn_probe(tx, ty, tx, ty, ks=(21,))
    with pytest.raises(ValueError, match="temperature"):
        knn_probe(tx, ty, tx, ty, temperature=0.0)
    with pytest.raises(ValueError, match="ks"):
        knn_probe(tx, ty, tx, ty, ks=(0,))
    bad = tx.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"eval features contain NaN/Inf \(1 rows"):
        knn_probe(tx, ty, bad, ty, ks=(3,))
    with pytest.raises(ValueError, match="feature rows but"):
        prototype_probe(tx, ty[:-1], tx, ty)


def test_prototype_on_clustered_data_and_labels_kept_apart():
    tx, ty = clusters(200, 16, 6, spread=0.2, seed=0)
    ex, ey = clusters(100, 16, 6, spread=0.2, seed=1)
    result = prototype_probe(tx, ty * 3 + 1, ex, ey * 3 + 1)
    assert result.method == "prototype" and result.top1 > 95.0 and result.top5 is not None


def test_prototype_matches_class_means_of_normalised_features():
    tx, ty = clusters(90, 5, 3, spread=1.0, seed=0)
    ex, ey = clusters(40, 5, 3, spread=1.0, seed=1)
    unit = tx / tx.norm(dim=1, keepdim=True)
    means = torch.stack([unit[ty == c].mean(0) for c in range(3)])
    scores = (ex / ex.norm(dim=1, keepdim=True)) @ (means / means.norm(dim=1, keepdim=True)).T
    expected = (scores.argmax(1) == ey).numpy()
    result = prototype_probe(tx, ty, ex, ey)
    assert np.array_equal(result.correct, expected)
    assert result.top1 == pytest.approx(expected.mean() * 100.0) and result.top5 is None
    # Rescaling rows changes no cosine similarity.
    assert np.array_equal(prototype_probe(tx * 5.0, ty, ex * 0.1, ey).correct, expected)
