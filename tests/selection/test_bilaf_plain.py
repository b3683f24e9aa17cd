"""The fast BiLAF equals its plain transcription (bilaf.selection.bilaf.plain) index for index, in
both modes, on small pools built to reach every path the fast code takes on large ones."""

from __future__ import annotations

import numpy as np
import pytest

from bilaf.selection import select
from bilaf.selection.bilaf import Limits, select_boundary
from bilaf.selection.bilaf.denoise import DENSE_MERGE
from bilaf.selection.bilaf.plain import plain_bilaf
from tests.selection.test_bilaf import CASE_IDS, CASES, case_params, load_case, run_case


def fast(x, cores, budget, mode, params, **limits):
    """The fast code's picks and scores: through ``select`` with the default limits, else
    ``select_boundary``."""
    if not limits:
        return select("bilaf", x, budget, 0, cores=cores, mode=mode, with_scores=True, **params)
    cores = np.asarray(cores, dtype=np.int64)
    return select_boundary(x, cores, budget, mode=mode, limits=Limits(**limits), **params)


def assert_same_picks_and_scores(got, want):
    """Index for index; the boundary score each pick had, to float32 rounding (NaN: cores)."""
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6, equal_nan=True)
    assert np.isnan(got[1]).sum() == np.isnan(want[1]).sum() > 0


@pytest.mark.parametrize("path", CASES, ids=CASE_IDS)
def test_plain_reference_mode_is_the_official_code(path):
    """The transcription of SPEC §3 alone, on the official fixtures: index for index."""
    feats, case = load_case(path)
    got = plain_bilaf(feats, case["cores"], case["budget"], mode="reference", **case_params(case))
    np.testing.assert_array_equal(got, case["selected"])


@pytest.mark.parametrize("name", ["blobs4k/boundary_B100", "tinyclusters/boundary_B150"])
def test_paper_mode_equals_the_plain_transcription_on_fixtures(name):
    feats, case = load_case(CASES[CASE_IDS.index(name)])
    want = plain_bilaf(feats, case["cores"], case["budget"], mode="paper", **case_params(case))
    np.testing.assert_array_equal(run_case(feats, case, "paper"), want)


@pytest.mark.parametrize("dense_merge", [DENSE_MERGE, 0])
@pytest.mark.parametrize("seed", range(6))
def test_reference_mode_equals_the_plain_transcription(seed, dense_merge):
    """Small pools with exact ties (integer features), duplicate rows and (seed 5) repeated picks:
    the fixtures have no ties. ``dense_merge=0`` sends every denoising merge of full rows through
    the below-the-worst filter that large classes use."""
    rng = np.random.default_rng(seed)
    n, d, n_cls = 150 + 40 * seed, 3 + seed, 3 + seed
    centres = rng.normal(0, 3, size=(n_cls + 2, d))
    x = centres[rng.integers(0, n_cls + 2, n)] + rng.normal(0, 1, size=(n, d))
    x = np.round(x if seed % 2 else 2 * x).astype(np.float32)
    x[rng.choice(n, 15)] = x[rng.choice(n, 15)]
    cores = rng.choice(n, n_cls, replace=False)
    assert np.unique(x[cores], axis=0).shape[0] == n_cls  # identical cores break the original
    params = {"k": 3 + seed, "p_in": (0.1, 0.2, 0.05)[seed % 3], "p_rm": 0.1 * (seed % 3)}
    params["delta"] = (1.0, 1.1, 1.5)[seed % 3]
    budget = int(rng.integers(2 * n_cls, n // 2))
    want = plain_bilaf(x, cores, budget, mode="reference", with_scores=True, **params)
    limits = {} if dense_merge == DENSE_MERGE else {"dense_merge": dense_merge}
    assert_same_picks_and_scores(fast(x, cores, budget, "reference", params, **limits), want)


# Fast paths paper mode takes on large pools, forced on small ones: Limits changed.
PAPER_PATHS = {
    "default": {},
    "blocks": {"whole_matrix": 0, "dense_merge": 0},
    "no room": {"whole_matrix": 0, "store_limit": 0},
    "short lists": {"opponents": 1, "refill": 1},
}


@pytest.mark.parametrize("path", PAPER_PATHS)
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5, 10, 11])
def test_paper_mode_equals_the_plain_transcription(seed, path):
    """Random pools (continuous features: no exact ties) of a few classes. With so few classes
    every opponent gets penalised (seed 2). From seed 3 on a far class of two runs dry (seeds 3,
    5, 10, 11), so the top-up is checked too: denoised members first (seed 5 fails without it),
    scores whose opponent was penalised since brought up to date (seeds 10, 11). Each seed runs
    on every path: distance blocks instead of whole matrices (kept or not for d_intra), and
    opponent lists of one, refilled one at a time."""
    rng = np.random.default_rng(seed)
    size = seed % 6
    n, d, n_cls, k = 120 + 30 * size, 2 + size, 2 + size, 2 + size
    centres = rng.normal(0, 3, size=(n_cls + 2, d))
    x = (centres[rng.integers(0, n_cls + 2, n)] + rng.normal(0, 1, size=(n, d))).astype(np.float32)
    cores = rng.choice(np.arange(2, n), n_cls, replace=False)
    if seed >= 3:  # a class of two far away: the remainder of the split runs it dry
        x[:2] = 100 + rng.normal(0, 1, size=(2, d))
        cores[0] = 0
    params = {"k": k, "p_in": (0.1, 0.2, 0.05)[seed % 3], "delta": (1.0, 1.1, 1.5)[seed % 3]}
    params["p_rm"] = 0.1 * (seed % 3)
    budget = int(rng.integers(2 * n_cls, n // 3))
    want = plain_bilaf(x, cores, budget, mode="paper", with_scores=True, **params)
    assert_same_picks_and_scores(fast(x, cores, budget, "paper", params, **PAPER_PATHS[path]), want)
