from typing import Any, ClassVar

import numpy as np
import pytest

from bilaf.selection import SelectionError, select
from tests.selection.contract import SelectionContract, blobs


class TestFds(SelectionContract):
    method = "fds"
    options: ClassVar[dict[str, Any]] = {"device": "cpu"}
    option_tests: ClassVar[dict[str, tuple[str, ...]]] = {
        "labeled": ("test_labeled_samples_are_never_picked", "test_fds_covers_from_the_labeled"),
    }


def brute_force_k_center(feats: np.ndarray, budget: int, first: int) -> list[int]:
    """Sener & Savarese's O(n·B²) k-center greedy: all distances to the picks, every step."""
    x = feats.astype(np.float64)
    picks = [first]
    while len(picks) < budget:
        dist = np.sqrt(((x[:, None, :] - x[None, picks, :]) ** 2).sum(-1)).min(1)
        dist[picks] = -1.0
        picks.append(int(np.argmax(dist)))
    return picks


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fds_matches_brute_force_k_center(seed):
    feats = blobs(n=300, d=8, centres=6, seed=seed)
    picked = select("fds", feats, 30, seed, device="cpu")
    first = int(np.random.default_rng(seed).integers(feats.shape[0]))
    assert picked.tolist() == brute_force_k_center(feats, 30, first)


def test_fds_covers_duplicate_rows_without_repeats():
    feats = np.repeat(blobs(n=10, d=4), 3, axis=0)
    assert np.unique(select("fds", feats, 30, 0, device="cpu")).size == 30


def test_fds_rejects_unknown_device():
    with pytest.raises(SelectionError, match="not a torch device"):
        select("fds", blobs(), 5, 0, device="warp-drive")


def test_fds_covers_from_the_labeled():
    """With labeled samples, k-center greedy starts from them: brute force with them as picks."""
    feats = blobs(n=300, d=8, centres=6, seed=4)
    labeled = np.array([7, 100, 233])
    x = feats.astype(np.float64)
    chosen, picks = list(labeled), []
    while len(picks) < 25:
        dist = np.sqrt(((x[:, None, :] - x[None, chosen, :]) ** 2).sum(-1)).min(1)
        dist[chosen] = -1.0
        picks.append(int(np.argmax(dist)))
        chosen.append(picks[-1])
    picked = select("fds", feats, 25, 0, labeled=labeled, device="cpu")
    np.testing.assert_array_equal(picked, picks)
