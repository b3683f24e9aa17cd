"""BiLAF's distance building blocks against brute force: the exact nearest-core search (step 0)
and one class's distances (every later step), on ties, near-ties, duplicates and every storage
path."""

from __future__ import annotations

import numpy as np
import pytest

from bilaf.selection.bilaf.distances import ClusterDistances, MatrixBuffer, _symmetric_distances
from bilaf.selection.bilaf.plain import pairwise_distances
from bilaf.selection.bilaf.pseudo_classes import nearest_cores


def brute_nearest(x: np.ndarray, cores: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Direct float64 distances from differences; order by (distance, core position)."""
    to_cores = pairwise_distances(x, cores)
    order = np.lexsort((np.broadcast_to(np.arange(len(cores)), to_cores.shape), to_cores), axis=1)[
        :, :depth
    ]
    return order, np.take_along_axis(to_cores, order, axis=1)


@pytest.mark.parametrize("kind", ["integer", "near-tie", "gaussian"])
def test_nearest_cores_equals_brute_force(kind):
    rng = np.random.default_rng(7)
    if kind == "integer":  # many exact ties, and duplicate cores
        x = rng.integers(-2, 3, size=(500, 6)).astype(np.float32)
        cores = x[[0, 1, 2, 3, 4, 0, 7]]
        cores[5] = x[0]
    elif kind == "near-tie":  # a large common offset: float32 Gram values cannot tell them apart
        base = rng.normal(0, 1, size=8) * 1000
        x = (base + rng.normal(0, 1e-2, size=(500, 8))).astype(np.float32)
        cores = (base + rng.normal(0, 1e-2, size=(30, 8))).astype(np.float32)
    else:
        x = rng.normal(0, 1, size=(500, 12)).astype(np.float32)
        cores = rng.normal(0, 1, size=(300, 12)).astype(np.float32)
    for depth in (1, 2, 4):
        ids, dists = nearest_cores(x, cores, depth, block_elements=4096)  # several row blocks
        want_ids, want_d = brute_nearest(x, cores, depth)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_allclose(dists, want_d, rtol=1e-14, atol=1e-14)


def test_nearest_cores_torch_path_agrees():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    x = rng.integers(-2, 3, size=(300, 5)).astype(np.float32)
    cores = x[rng.choice(300, 40, replace=False)]
    want = nearest_cores(x, cores, 3)
    got = nearest_cores(x, cores, 3, torch_device=torch.device("cpu"))
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("store", [True, False])
def test_cluster_distances_match_differences(store):
    rng = np.random.default_rng(9)
    rows = rng.normal(3, 1, size=(120, 10)).astype(np.float32)
    rows[[5, 40, 90]] = rows[17]  # duplicates: exactly 0 apart, exactly tied to everything
    buffer = MatrixBuffer(np.float64) if store else None
    distances = ClusterDistances(rows, rows[0], buffer=buffer, block_elements=500)
    r64 = rows.astype(np.float64)
    want = pairwise_distances(r64, r64)
    every = np.arange(120)
    full = distances.block(every, every)
    np.testing.assert_allclose(full, want, rtol=1e-12, atol=1e-12)
    assert (full[17, [5, 40, 90]] == 0).all() and (np.diag(full) == 0).all()
    assert not store or (full == full.T).all()  # the stored matrix is symmetric, like cdist
    np.testing.assert_array_equal(full[:, 5], full[:, 17])
    part, other = rng.permutation(120)[:30], rng.permutation(120)[:45]
    np.testing.assert_array_equal(distances.block(part, other), full[np.ix_(part, other)])
    out = np.empty((30, 45))
    assert distances.block(part, other, out=out) is out
    np.testing.assert_array_equal(out, full[np.ix_(part, other)])
    np.testing.assert_allclose(distances.from_member(40), full[40], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(distances.from_member(40), distances.from_member(17))
    np.testing.assert_array_equal(distances.to_centre(), np.sqrt(((r64 - r64[0]) ** 2).sum(-1)))
    cols = rng.integers(0, 120, size=(120, 4))
    np.testing.assert_allclose(
        distances.gather(every, cols), np.take_along_axis(want, cols, 1), rtol=1e-12, atol=1e-12
    )
    subset = rng.choice(120, 50, replace=False)
    np.testing.assert_allclose(distances.mean_to(subset), want[:, subset].mean(1), rtol=1e-12)
    to_all = distances.to_points(distances.centred(r64[3:4]))[:, 0]
    np.testing.assert_allclose(to_all, want[3], rtol=1e-12, atol=1e-12)
    some = distances.to_points(distances.centred(r64[[3, 8]]), every[10:20])
    np.testing.assert_allclose(some, want[10:20][:, [3, 8]], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("block", [16, 512])
def test_symmetric_distances_match_differences(dtype, block):
    """Several row blocks (16) and one (512): diagonal blocks by syrk, the rest mirrored."""
    rows = np.random.default_rng(2).normal(0, 1, size=(70, 12))
    sq = np.einsum("ij,ij->i", rows, rows)
    out = _symmetric_distances(
        rows.astype(dtype), sq.astype(dtype), np.empty((70, 70), dtype), block
    )
    want = pairwise_distances(rows, rows)
    np.testing.assert_allclose(out, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)
    assert (out == out.T).all() and (np.diag(out) == 0).all()
