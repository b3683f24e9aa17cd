import math
from typing import Any, ClassVar

import numpy as np
import pytest

from bilaf.selection import SelectionError, select
from bilaf.selection.herding import default_alpha
from tests.selection.contract import SelectionContract, blobs
from tests.selection.test_maxherding import gaussian, unit


class TestHerding(SelectionContract):
    method = "herding"
    options: ClassVar[dict[str, Any]] = {"device": "cpu"}
    option_tests: ClassVar[dict[str, tuple[str, ...]]] = {
        "alpha": ("test_each_pick_lowers_alpha_mmd_most", "test_bad_options_rejected"),
        "bandwidth": ("test_each_pick_lowers_alpha_mmd_most", "test_bad_options_rejected"),
        "normalize": ("test_each_pick_lowers_alpha_mmd_most",),
        "points": ("test_points_estimate_the_mean_embedding_on_a_seeded_subset",),
    }


def plain_herding(x: np.ndarray, budget: int, sigma: float, alpha: float, points=None) -> list:
    """Brute force from the definition: each step adds the unpicked sample whose set has the
    smallest α-MMD² = ||mean φ(S) - α mean φ(pool)||², expanded in kernel sums."""
    over = x if points is None else x[points]
    k_xx = gaussian(x, x, sigma)
    k_px = gaussian(over, x, sigma)
    picks: list[int] = []
    for _ in range(budget):
        best, best_mmd = -1, math.inf
        for c in range(len(x)):
            if c in picks:
                continue
            s = [*picks, c]
            mmd = (
                k_xx[np.ix_(s, s)].mean()
                - 2 * alpha * k_px[:, s].mean()
                + alpha**2 * gaussian(over, over, sigma).mean()
            )
            if mmd < best_mmd:
                best, best_mmd = c, mmd
        picks.append(best)
    return picks


@pytest.mark.parametrize(
    ("normalize", "sigma", "alpha"), [(False, 5.0, None), (False, 2.0, 0.5), (True, 0.6, 0.9)]
)
def test_each_pick_lowers_alpha_mmd_most(normalize, sigma, alpha):
    feats = blobs(n=80, d=6, centres=5, seed=1)
    x = unit(feats.astype(np.float64)) if normalize else feats.astype(np.float64)
    options = {"bandwidth": sigma, "normalize": normalize, "alpha": alpha, "device": "cpu"}
    picked = select("herding", feats, 12, 0, **options)
    expected_alpha = 1 - 1 / math.sqrt(12) if alpha is None else alpha
    assert picked.tolist() == plain_herding(x, 12, sigma, expected_alpha)


def test_default_alpha_is_rdss():
    assert default_alpha(100) == pytest.approx(0.9)
    assert default_alpha(1) == 0.0


def test_points_estimate_the_mean_embedding_on_a_seeded_subset():
    feats = blobs(n=80, d=6, seed=2)
    points = np.sort(np.random.default_rng(4).choice(80, 30, replace=False))
    picked = select("herding", feats, 10, 4, bandwidth=5.0, points=30, alpha=0.7, device="cpu")
    assert picked.tolist() == plain_herding(feats.astype(np.float64), 10, 5.0, 0.7, points)


def test_small_alpha_spreads_the_picks_out():
    """α weighs representativeness against diversity: with α near 0 the picks only repel each
    other and reach more of the blobs' far tails than with α = 1 (plain kernel herding)."""
    feats = blobs(n=400, d=8, seed=5)
    centre = feats.mean(0)

    def spread(alpha):
        picked = select("herding", feats, 20, 0, alpha=alpha, device="cpu")
        return float(np.linalg.norm(feats[picked] - centre, axis=1).mean())

    assert spread(0.05) > spread(1.0)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"alpha": 1.5}, r"herding alpha must be a finite number in \[0, 1\]"),
        ({"bandwidth": -1.0}, "herding bandwidth must be a finite number > 0"),
    ],
)
def test_bad_options_rejected(options, match):
    with pytest.raises(SelectionError, match=match):
        select("herding", blobs(), 10, 0, **options)
