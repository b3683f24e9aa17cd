from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from bilaf.selection import SelectionError, select
from bilaf.selection.kernels import median_distance
from tests.selection.contract import SelectionContract, blobs


class TestMaxHerding(SelectionContract):
    method = "maxherding"
    options: ClassVar[dict[str, Any]] = {"device": "cpu"}
    option_tests: ClassVar[dict[str, tuple[str, ...]]] = {
        "bandwidth": ("test_matches_the_plain_greedy", "test_bad_options_rejected"),
        "normalize": ("test_matches_the_plain_greedy",),
        "points": ("test_points_estimate_the_coverage_on_a_seeded_subset",),
    }


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def gaussian(a: np.ndarray, b: np.ndarray, sigma: float) -> np.ndarray:
    """Brute force: the dense float64 Gaussian kernel exp(-||a - b||² / (2σ²))."""
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * sigma * sigma))


def plain_maxherding(x: np.ndarray, budget: int, sigma: float, points=None) -> list[int]:
    """The paper's greedy, literally: each step the sample that most raises
    C(S) = Σ_x max_{s in S} k(x, s), recomputed from scratch for every candidate."""
    over = x if points is None else x[points]
    kernel = gaussian(over, x, sigma)  # (points, candidates)
    picks: list[int] = []
    for _ in range(budget):
        covered = kernel[:, picks].max(1) if picks else np.zeros(len(over))
        coverage = np.maximum(kernel, covered[:, None]).sum(0)
        coverage[picks] = -np.inf
        picks.append(int(np.argmax(coverage)))
    return picks


@pytest.mark.parametrize(("normalize", "sigma"), [(True, 0.3), (True, 0.8), (False, 4.0)])
def test_matches_the_plain_greedy(normalize, sigma):
    feats = blobs(n=300, d=8, centres=6, seed=1)
    x = unit(feats.astype(np.float64)) if normalize else feats.astype(np.float64)
    picked = select("maxherding", feats, 40, 0, bandwidth=sigma, normalize=normalize, device="cpu")
    assert picked.tolist() == plain_maxherding(x, 40, sigma)


def test_default_bandwidth_is_the_median_pairwise_distance():
    feats = blobs(n=300, d=8, seed=2)
    x = unit(feats.astype(np.float64))
    pairs = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))[np.triu_indices(300, 1)]
    median = float(np.median(pairs))
    got = median_distance(torch.from_numpy(x.astype(np.float32)), np.random.default_rng(0))
    assert got == pytest.approx(median, rel=1e-5)
    np.testing.assert_array_equal(
        select("maxherding", feats, 30, 0, device="cpu"),
        select("maxherding", feats, 30, 0, bandwidth=got, device="cpu"),
    )


def test_median_of_a_large_pool_comes_from_a_seeded_subsample():
    x = torch.from_numpy(blobs(n=5000, d=4, seed=3))
    rng = np.random.default_rng(5)
    ids = np.sort(np.random.default_rng(5).choice(5000, 2048, replace=False))
    sub = x[ids].double().numpy()
    pairs = np.sqrt(((sub[:, None] - sub[None]) ** 2).sum(-1))[np.triu_indices(2048, 1)]
    assert median_distance(x, rng) == pytest.approx(float(np.median(pairs)), rel=1e-5)


def test_points_estimate_the_coverage_on_a_seeded_subset():
    feats = blobs(n=300, d=8, seed=4)
    x = unit(feats.astype(np.float64))
    points = np.sort(np.random.default_rng(3).choice(300, 100, replace=False))
    picked = select("maxherding", feats, 25, 3, bandwidth=0.5, points=100, device="cpu")
    assert picked.tolist() == plain_maxherding(x, 25, 0.5, points)
    every = select("maxherding", feats, 25, 3, bandwidth=0.5, device="cpu")
    np.testing.assert_array_equal(
        select("maxherding", feats, 25, 3, bandwidth=0.5, points=300, device="cpu"), every
    )


def test_equal_gains_do_not_follow_storage_order():
    """Copies of one point have equal gains throughout: seeds order them differently."""
    feats = np.repeat(blobs(n=5, d=4), 20, axis=0)
    firsts = {int(select("maxherding", feats, 1, s, device="cpu")[0]) for s in range(6)}
    assert len(firsts) > 1


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"bandwidth": 0}, "maxherding bandwidth must be a finite number > 0"),
        ({"bandwidth": float("nan")}, "maxherding bandwidth"),
        ({"points": 0}, "maxherding points must be an integer >= 1"),
    ],
)
def test_bad_options_rejected(options, match):
    with pytest.raises(SelectionError, match=match):
        select("maxherding", blobs(), 10, 0, **options)


def test_copies_of_one_point_have_no_bandwidth():
    with pytest.raises(SelectionError, match="median pairwise distance is 0: pass bandwidth="):
        select("maxherding", np.ones((20, 3), np.float32), 5, 0)
