from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from bilaf.selection import SelectionError, select
from bilaf.selection.probcover import (
    auto_delta,
    choose_delta,
    delta_graph,
    greedy_cover,
    purity_radii,
)
from tests.selection.contract import SelectionContract, blobs


class TestProbCover(SelectionContract):
    method = "probcover"
    options: ClassVar[dict[str, Any]] = {"device": "cpu", "iters": 20}
    option_tests: ClassVar[dict[str, tuple[str, ...]]] = {
        "delta": ("test_selection_starts_with_greedy_cover_then_fills_randomly",),
        "max_edges": ("test_bad_options_rejected",),  # its case: too many edges for that delta
        **{
            key: ("test_auto_delta_options_reach_the_choice", "test_bad_options_rejected")
            for key in ("alpha", "clusters", "delta_grid", "iters", "tol")
        },
    }


def unit(feats: np.ndarray) -> np.ndarray:
    return (feats / np.linalg.norm(feats, axis=1, keepdims=True)).astype(np.float32)


def dense_balls(feats: np.ndarray, delta: float) -> np.ndarray:
    """Brute force: the (n, n) float64 matrix of ||x_i - x_j|| < δ on unit rows."""
    x = unit(feats).astype(np.float64)
    dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    return dist < delta


@pytest.mark.parametrize("delta", [0.2, 0.5, 0.9])
def test_graph_matches_dense_brute_force(delta):
    feats = blobs(n=300, d=8, seed=1)
    indptr, indices = delta_graph(torch.from_numpy(unit(feats)), delta, max_edges=10**6)
    sparse = np.zeros((300, 300), dtype=bool)
    sparse[np.repeat(np.arange(300), np.diff(indptr)), indices] = True
    np.testing.assert_array_equal(sparse, dense_balls(feats, delta))


def test_each_pick_covers_the_most_uncovered_points():
    feats = blobs(n=300, d=8, seed=2)
    balls = dense_balls(feats, 0.5)
    indptr, indices = delta_graph(torch.from_numpy(unit(feats)), 0.5, max_edges=10**6)
    rank = np.random.default_rng(7).permutation(300)
    picks = greedy_cover(indptr, indices, 300, rank)
    covered = np.zeros(300, dtype=bool)
    for pick in picks:
        gains = (balls & ~covered[None, :]).sum(1)
        assert gains[pick] == gains.max() > 0
        best = np.flatnonzero(gains == gains.max())
        assert pick == best[np.argmin(rank[best])]  # equal gains: the lowest tie rank
        covered |= balls[pick]
    assert covered.all()  # it stops exactly when everything is covered
    assert (balls[picks[:-1]].sum(0) > 0).sum() < 300


def test_selection_starts_with_greedy_cover_then_fills_randomly():
    feats = blobs(n=200, d=8, seed=3)
    indptr, indices = delta_graph(torch.from_numpy(unit(feats)), 1.0, max_edges=10**6)
    ties = np.random.default_rng(np.random.SeedSequence(0).spawn(1)[0]).permutation(200)
    cover = greedy_cover(indptr, indices, 200, ties)  # the seed's tie ranks
    picked = select("probcover", feats, 60, 0, delta=1.0, device="cpu")
    assert len(cover) < 60
    assert picked[: len(cover)].tolist() == cover
    assert not np.array_equal(picked, select("probcover", feats, 60, 1, delta=1.0, device="cpu"))


def test_purity_radius_is_distance_to_nearest_other_label():
    feats = blobs(n=120, d=6, seed=4)
    labels = np.arange(120) % 3
    x = unit(feats).astype(np.float64)
    dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    dist[labels[:, None] == labels[None, :]] = np.inf
    radii = purity_radii(torch.from_numpy(unit(feats)), torch.from_numpy(labels))
    np.testing.assert_allclose(radii, dist.min(1), atol=1e-3)


def test_delta_is_largest_grid_value_with_enough_purity():
    radii = np.array([0.1, 0.3, 0.3, 0.5, 0.7, 0.9, 1.0, 1.0, 1.0, 1.0])
    assert choose_delta(radii, 0.8, (0.2, 0.3, 0.4, 0.6)) == 0.3  # purity(0.3) = 0.9
    assert choose_delta(radii, 0.5, (0.2, 0.3, 0.4, 0.6)) == 0.6  # purity(0.6) = 0.6
    with pytest.raises(SelectionError, match="delta="):
        choose_delta(radii, 0.95, (0.2, 0.3))


def test_auto_delta_on_separated_blobs_uses_the_blob_labels():
    rng = np.random.default_rng(5)
    means = np.eye(8, 16) * 3.0
    labels = np.repeat(np.arange(8), 50)
    feats = (means[labels] + rng.normal(0, 0.3, size=(400, 16))).astype(np.float32)
    x = torch.from_numpy(unit(feats))
    grid = tuple(round(0.02 * i, 2) for i in range(1, 101))
    expected = choose_delta(purity_radii(x, torch.from_numpy(labels)), 0.95, grid)
    delta = auto_delta(x, 8, 0.95, grid, np.random.default_rng(0), 50, 1e-4)
    assert delta == expected
    assert (dense_balls(feats, delta).sum(1) > 1).all()  # a δ that groups points, not singletons


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"delta": 0.0}, "delta must be a finite number > 0 or None"),
        ({"delta": -1.0}, "delta must be a finite number > 0 or None"),
        ({"alpha": 1.5}, "alpha"),
        ({"clusters": 0}, r"clusters must be an integer in \[1, 400\], got 0"),
        ({"clusters": 2.5}, "clusters must be an integer"),
        ({"delta_grid": []}, "delta_grid"),
        ({"delta_grid": [0.1, -0.2]}, "delta_grid"),
        ({"delta_grid": [1.9], "clusters": 8}, "no δ in"),
        ({"iters": -1}, "iters"),
        ({"delta": 1.9, "max_edges": 100}, "lower delta"),
    ],
)
def test_bad_options_rejected(options, match):
    with pytest.raises(SelectionError, match=match):
        select("probcover", blobs(), 10, 0, device="cpu", **options)


def test_auto_delta_options_reach_the_choice():
    feats = blobs(n=300, d=8, seed=2)
    x = torch.from_numpy(unit(feats))
    chosen = set()
    for clusters, alpha, grid, iters, tol in [
        (8, 0.95, tuple(round(0.05 * i, 2) for i in range(1, 30)), 20, 1e-4),
        (3, 0.6, (0.3, 0.6, 0.9, 1.2), 1, 1e9),
    ]:
        delta = auto_delta(x, clusters, alpha, grid, np.random.default_rng(0), iters, tol)
        options = {"clusters": clusters, "alpha": alpha, "delta_grid": grid}
        picked = select("probcover", feats, 10, 0, device="cpu", iters=iters, tol=tol, **options)
        np.testing.assert_array_equal(picked, select("probcover", feats, 10, 0, delta=delta))
        chosen.add(delta)
    assert len(chosen) == 2
