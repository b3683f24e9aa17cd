from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from bilaf.selection import SelectionError, select
from bilaf.selection.kmeans import fit_kmeans
from tests.selection.contract import SelectionContract, blobs
from tests.selection.test_maxherding import unit


class TestUsl(SelectionContract):
    method = "usl"
    options: ClassVar[dict[str, Any]] = {"device": "cpu", "iters": 20}
    option_tests: ClassVar[dict[str, tuple[str, ...]]] = {
        **{
            key: ("test_matches_the_plain_usl", "test_bad_options_rejected")
            for key in ("k_neighbors", "reg_weight", "reg_power", "rounds", "momentum")
        },
        "points": ("test_points_estimate_the_density_on_a_seeded_subset",),
        "iters": ("test_matches_the_plain_usl",),
        "tol": ("test_matches_the_plain_usl",),
    }


def plain_usl(feats, budget, seed, k, weight, power, rounds, momentum, points=None, iters=20):
    """USL written out on dense float64 matrices: density from all pairwise cosine distances,
    then per cluster argmax of density - weight · (moving average of Reg)."""
    x = unit(feats.astype(np.float64))
    n = len(x)
    rng = np.random.default_rng(seed)
    ref = np.arange(n) if points is None else np.sort(rng.choice(n, points, replace=False))
    cos = 1.0 - x @ x[ref].T
    cos[ref[None, :] == np.arange(n)[:, None]] = np.inf  # not its own neighbour
    density = 1.0 / np.sort(cos, axis=1)[:, :k].mean(1)
    _, labels = fit_kmeans(torch.from_numpy(x.astype(np.float32)), budget, rng, iters, 1e-4)
    labels = labels.numpy()

    def per_cluster(utility):
        return [
            int(np.flatnonzero(labels == c)[np.argmax(utility[labels == c])]) for c in range(budget)
        ]

    picks, smoothed = per_cluster(density), None
    for _ in range(rounds):
        dist = np.sqrt(((x[:, None] - x[picks][None]) ** 2).sum(-1))
        with np.errstate(divide="ignore"):  # a pick's distance to itself, masked below
            inverse = dist**-power
        reg = np.where(labels[:, None] == np.arange(budget)[None], 0.0, inverse).sum(1)
        smoothed = reg if smoothed is None else momentum * smoothed + (1 - momentum) * reg
        picks = per_cluster(density - weight * smoothed)
    return picks


@pytest.mark.parametrize(
    ("k", "weight", "power", "rounds", "momentum"),
    [(20, 0.5, 2.0, 10, 0.9), (5, 2.0, 1.0, 3, 0.5), (10, 0.0, 2.0, 0, 0.9)],
)
def test_matches_the_plain_usl(k, weight, power, rounds, momentum):
    feats = blobs(n=300, d=8, centres=6, seed=1)
    options = {
        "k_neighbors": k,
        "reg_weight": weight,
        "reg_power": power,
        "rounds": rounds,
        "momentum": momentum,
    }
    picked = select("usl", feats, 12, 2, device="cpu", iters=20, **options)
    assert picked.tolist() == plain_usl(feats, 12, 2, k, weight, power, rounds, momentum)


def test_points_estimate_the_density_on_a_seeded_subset():
    feats = blobs(n=300, d=8, seed=3)
    picked = select("usl", feats, 10, 1, points=120, iters=20, device="cpu")
    assert picked.tolist() == plain_usl(feats, 10, 1, 20, 0.5, 2.0, 10, 0.9, points=120)


def test_the_regulariser_pushes_picks_apart():
    """Without it each cluster gives its densest member; with a strong one, the picks' nearest
    other pick lies farther away on average (the paper's diversity term)."""
    feats = blobs(n=400, d=8, centres=4, seed=6)
    x = unit(feats.astype(np.float64))

    def nearest_other(picks):
        d = np.sqrt(((x[picks][:, None] - x[picks][None]) ** 2).sum(-1))
        np.fill_diagonal(d, np.inf)
        return d.min(1).mean()

    plain = select("usl", feats, 16, 0, rounds=0, device="cpu")
    spread = select("usl", feats, 16, 0, reg_weight=50.0, device="cpu")
    assert nearest_other(spread) > nearest_other(plain)


def test_empty_clusters_pass_their_pick_to_the_best_unpicked():
    """10 distinct points, 3 copies each, 20 clusters: k-means leaves clusters empty, and the
    budget is still met by unpicked samples, of the largest utility first."""
    feats = np.repeat(blobs(n=10, d=4, seed=2), 3, axis=0)
    picked = select("usl", feats, 20, 0, device="cpu")
    assert np.unique(picked).size == 20
    assert np.unique(feats[picked], axis=0).shape[0] == 10  # every distinct point is reached


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"k_neighbors": 0}, "usl k_neighbors must be an integer >= 1"),
        ({"reg_weight": -1.0}, "usl reg_weight must be a finite number >= 0"),
        ({"reg_power": 0}, "usl reg_power must be a finite number > 0"),
        ({"rounds": -1}, "usl rounds must be an integer >= 0"),
        ({"momentum": 1.0}, r"usl momentum must be a finite number in \[0, 1\)"),
        ({"points": 1}, "usl points must be an integer >= 2"),
    ],
)
def test_bad_options_rejected(options, match):
    with pytest.raises(SelectionError, match=match):
        select("usl", blobs(), 10, 0, **options)
