from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from bilaf.selection import SelectionError, select
from bilaf.selection.kmeans import fit_kmeans, lloyd_step, nearest_distinct
from bilaf.selection.neighbors import load_centred, sq_norms
from tests.selection.contract import SelectionContract, blobs


class TestKMeans(SelectionContract):
    method = "kmeans"
    options: ClassVar[dict[str, Any]] = {"device": "cpu", "iters": 20}
    option_tests: ClassVar[dict[str, tuple[str, ...]]] = {
        "iters": ("test_iters_and_tol_bound_the_lloyd_steps", "test_bad_options_rejected"),
        "tol": ("test_iters_and_tol_bound_the_lloyd_steps", "test_bad_options_rejected"),
    }


def separated_blobs(centres: int = 6, per: int = 30, d: int = 5, seed: int = 0):
    """Blobs of unit spread whose means are 100 apart: k-means cannot mix them up."""
    rng = np.random.default_rng(seed)
    means = 100.0 * np.eye(centres, d) if centres <= d else rng.normal(0, 100, (centres, d))
    labels = np.repeat(np.arange(centres), per)
    feats = means[labels] + rng.normal(0, 1, (centres * per, d))
    return feats.astype(np.float32), labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_pick_per_well_separated_blob(seed):
    feats, labels = separated_blobs(centres=8, d=8, seed=seed)
    picked = select("kmeans", feats, 8, seed, device="cpu")
    assert sorted(labels[picked].tolist()) == list(range(8))
    # Each pick is the member nearest its blob's mean (the converged centre).
    for pick in picked:
        members = np.flatnonzero(labels == labels[pick])
        mean = feats[members].astype(np.float64).mean(0)
        assert pick == members[np.argmin(((feats[members] - mean) ** 2).sum(1))]


def test_lloyd_step_matches_brute_force_assignment():
    feats = blobs(n=500, d=12, centres=10, seed=3)
    x = torch.from_numpy(feats)
    centres = x[[5, 50, 100, 150, 200, 250, 300, 350, 400, 450]] + 0.1
    labels, new = lloyd_step(x, sq_norms(x), centres, rows=37)  # many ragged row chunks
    f64, c64 = feats.astype(np.float64), centres.numpy().astype(np.float64)
    expected = ((f64[:, None, :] - c64[None, :, :]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(labels.numpy(), expected)
    for j in range(10):
        np.testing.assert_allclose(new[j].numpy(), f64[expected == j].mean(0), rtol=1e-5, atol=1e-5)


def test_empty_cluster_keeps_its_centre():
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0]])
    centres = torch.tensor([[0.0, 0.5], [10.0, 0.0], [50.0, 50.0]])
    labels, new = lloyd_step(x, sq_norms(x), centres)
    assert labels.tolist() == [0, 0, 1]
    np.testing.assert_array_equal(new.numpy(), centres.numpy())


def test_kmeans_plus_plus_with_duplicate_rows_still_gives_distinct_picks():
    feats = np.repeat(blobs(n=5, d=3), 4, axis=0)  # 5 distinct rows, 20 samples
    picked = select("kmeans", feats, 12, 0, device="cpu")
    assert np.unique(picked).size == 12


def test_fit_converges_to_blob_means():
    feats, labels = separated_blobs(centres=4, d=4)
    centres, fitted = fit_kmeans(torch.from_numpy(feats), 4, np.random.default_rng(0), 100, 1e-4)
    order = [int(fitted[labels == b][0]) for b in range(4)]
    for b, c in enumerate(order):
        assert (fitted[labels == b] == c).all()
        np.testing.assert_allclose(centres[c].numpy(), feats[labels == b].mean(0), atol=1e-4)


@pytest.mark.parametrize(
    ("options", "match"),
    [({"iters": -1}, "iters"), ({"iters": 2.5}, "iters"), ({"tol": -1.0}, "tol")],
)
def test_bad_options_rejected(options, match):
    with pytest.raises(SelectionError, match=match):
        select("kmeans", blobs(), 10, 0, device="cpu", **options)


def test_features_load_centred_on_the_device_asked():
    feats = blobs(n=300)
    x = load_centred(feats, "cpu")
    assert x.device == torch.device("cpu") and x.dtype == torch.float32
    torch.testing.assert_close(x, torch.from_numpy(feats - feats.mean(0)), atol=1e-4, rtol=0)
    with pytest.raises(SelectionError, match="not a torch device"):
        load_centred(feats, "warp-drive")


def test_iters_and_tol_bound_the_lloyd_steps():
    feats = blobs(n=300)
    x = load_centred(feats, "cpu")
    for iters in (0, 3):  # the nearest untaken sample to the centres after `iters` Lloyd steps
        centres, _ = fit_kmeans(x, 12, np.random.default_rng(4), iters, 1e-4)
        expected = nearest_distinct(x, sq_norms(x), centres)
        np.testing.assert_array_equal(select("kmeans", feats, 12, 4, iters=iters), expected)
    # a tolerance above any centre shift stops after the first step
    np.testing.assert_array_equal(
        select("kmeans", feats, 12, 4, tol=1e9), select("kmeans", feats, 12, 4, iters=1)
    )
