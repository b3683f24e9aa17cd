from typing import Any, ClassVar

import numpy as np
import pytest

from bilaf.selection import SelectionError, select
from tests.selection.contract import SelectionContract, blobs


class TestTypiClust(SelectionContract):
    method = "typiclust"
    options: ClassVar[dict[str, Any]] = {"device": "cpu", "iters": 20}
    option_tests: ClassVar[dict[str, tuple[str, ...]]] = {
        "k_neighbors": ("test_k_neighbors_sets_the_typicality_neighbourhood",),
        "min_cluster_size": ("test_cluster_smaller_than_five_ignored_unless_needed",),
        "iters": ("test_iters_and_tol_reach_the_clustering", "test_bad_options_rejected"),
        "tol": ("test_iters_and_tol_reach_the_clustering", "test_bad_options_rejected"),
    }


def constructed(sizes: list[int], d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Blobs 100 apart, shuffled: per blob a centre, 20 points at radius 1 and the rest at 3.

    Returns features and blob labels; a blob's first row in the unshuffled order is its centre.
    """
    rng = np.random.default_rng(seed)
    parts = []
    for b, size in enumerate(sizes):
        directions = rng.normal(size=(size - 1, d))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        radii = np.where(np.arange(size - 1) < min(20, size - 1), 1.0, 3.0)[:, None]
        parts.append(100.0 * np.eye(d)[b] + np.vstack([np.zeros(d), radii * directions]))
    labels = np.repeat(np.arange(len(sizes)), sizes)
    order = rng.permutation(labels.size)
    return np.vstack(parts)[order].astype(np.float32), labels[order]


def most_typical(feats: np.ndarray, k: int = 20) -> int:
    """Brute force: the row with the smallest mean distance to its k nearest other rows."""
    x = feats.astype(np.float64)
    dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(dist, np.inf)
    return int(np.argmin(np.sort(dist, axis=1)[:, : min(k, len(x) - 1)].mean(1)))


@pytest.mark.parametrize("seed", [0, 1])
def test_picks_the_densest_point_of_each_blob_largest_first(seed):
    sizes = [25, 40, 30, 33]
    feats, labels = constructed(sizes, seed=seed)
    picked = select("typiclust", feats, 4, seed, device="cpu")
    expected = []
    for b in np.argsort(sizes, kind="stable")[::-1]:
        members = np.flatnonzero(labels == b)
        expected.append(int(members[most_typical(feats[members])]))
    assert picked.tolist() == expected
    assert np.allclose(feats[picked], 100.0 * np.eye(8)[np.argsort(sizes)[::-1]])  # the centres


def test_cluster_smaller_than_five_ignored_unless_needed():
    feats, labels = constructed([25, 30, 3])
    picked = select("typiclust", feats, 3, 0, device="cpu")
    assert labels[picked].tolist() == [1, 0, 1]  # a second pick from the largest blob
    # ... its next most typical member, found by brute force with the first pick removed.
    members = np.flatnonzero(labels == 1)
    dist = np.sqrt(((feats[members, None] - feats[None, members]) ** 2).sum(-1))
    np.fill_diagonal(dist, np.inf)
    ranking = members[np.argsort(np.sort(dist, axis=1)[:, :20].mean(1), kind="stable")]
    assert picked[[0, 2]].tolist() == ranking[:2].tolist()
    # With min_cluster_size 1 the small blob is an ordinary uncovered cluster.
    relaxed = select("typiclust", feats, 3, 0, device="cpu", min_cluster_size=1)
    assert labels[relaxed].tolist() == [1, 0, 2]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"k_neighbors": 0}, "k_neighbors"),
        ({"min_cluster_size": 0}, "min_cluster_size"),
        ({"iters": -2}, "iters"),
        ({"tol": float("nan")}, "tol"),
    ],
)
def test_bad_options_rejected(options, match):
    with pytest.raises(SelectionError, match=match):
        select("typiclust", blobs(), 10, 0, device="cpu", **options)


def test_k_neighbors_sets_the_typicality_neighbourhood():
    feats, _ = constructed([40])  # one blob: the pick is its most typical member
    for k in (3, 30):
        picked = select("typiclust", feats, 1, 0, device="cpu", k_neighbors=k)
        assert picked.tolist() == [most_typical(feats, k)]


def test_iters_and_tol_reach_the_clustering():
    feats = np.random.default_rng(2).normal(size=(300, 4)).astype(np.float32)  # no clear clusters
    one_step = select("typiclust", feats, 10, 0, device="cpu", iters=1)
    assert not np.array_equal(one_step, select("typiclust", feats, 10, 0, device="cpu"))
    # a tolerance above any centre shift stops after the first step
    np.testing.assert_array_equal(
        select("typiclust", feats, 10, 0, device="cpu", tol=1e9), one_step
    )
