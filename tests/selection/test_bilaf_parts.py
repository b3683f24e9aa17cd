"""BiLAF's fast steps one at a time: denoising (sizes, d_intra, the merge filter), the budget split
and the removal mask, against brute force or hand-worked values."""

from __future__ import annotations

import numpy as np
import pytest

from bilaf.selection.bilaf import plain
from bilaf.selection.bilaf.denoise import _below, denoise_class, denoised_size
from bilaf.selection.bilaf.distances import ClusterDistances, MatrixBuffer
from bilaf.selection.bilaf.picks import allocate, first_smallest


@pytest.mark.parametrize("reference", [True, False])
def test_denoised_size_is_what_denoising_keeps(reference):
    """The budget is split from sizes computed before denoising: they must be the real ones."""
    rng = np.random.default_rng(3)
    for m in (1, 9, 10, 11, 37, 100, 257):
        rows = rng.normal(size=(m, 4)).astype(np.float32)
        distances = ClusterDistances(rows, rows[0])
        for p_in, p_rm in ((0.1, 0.1), (0.07, 0.0), (0.3, 0.45), (1.0, 0.2)):
            kept, _ = denoise_class(distances, 0, 3, p_in, p_rm, reference)
            assert kept.size == denoised_size(m, p_in, p_rm, reference), (m, p_in, p_rm)


@pytest.mark.parametrize("storage", ["matrix", "blocks", "no room"])
def test_denoising_returns_mean_distances_to_the_denoised_members(storage):
    """d_intra is assembled from the denoising blocks plus the pairs they miss (within a round,
    last round × never joined); it must equal the brute-force mean over the denoised members."""
    rng = np.random.default_rng(5)
    for m, p_in, p_rm in ((9, 0.1, 0.1), (10, 0.1, 0.1), (57, 0.1, 0.1), (103, 0.07, 0.3)):
        rows = rng.normal(size=(m, 6)).astype(np.float32)
        rows[[3, 7]] = rows[5]  # duplicates: exactly 0 apart
        r64 = rows.astype(np.float64)
        want_all = plain.pairwise_distances(r64, r64)
        buffer = MatrixBuffer(np.float64, m) if storage == "matrix" else None
        distances = ClusterDistances(rows, rows[0], buffer=buffer)
        scratch = np.empty(m * m if storage == "blocks" else 0)
        denoised, intra = denoise_class(distances, 0, 4, p_in, p_rm, False, scratch)
        assert np.unique(denoised).size == denoised.size == denoised_size(m, p_in, p_rm, False)
        np.testing.assert_allclose(intra, want_all[:, denoised].mean(1), rtol=1e-12, atol=1e-12)


def test_below_equals_nonzero_of_the_comparison():
    rng = np.random.default_rng(10)
    for shape in ((1, 1), (3, 5), (7, 9), (40, 33)):
        block = rng.random(shape)
        threshold = rng.random(shape[0]) * 0.3
        threshold[0] = 2.0  # a row where everything passes
        want = np.nonzero(block < threshold[:, None])
        for got, expected in zip(_below(block, threshold), want, strict=True):
            np.testing.assert_array_equal(got, expected)


def test_first_smallest_is_a_stable_argsort_prefix():
    rng = np.random.default_rng(4)
    for size in (1, 5, 40):
        values = rng.integers(0, 4, size).astype(np.float64)  # many ties
        for r in range(size + 2):
            want = np.zeros(size, dtype=bool)
            want[np.argsort(values, kind="stable")[:r]] = True
            np.testing.assert_array_equal(first_smallest(values, r), want)


@pytest.mark.parametrize(
    "split",
    [
        lambda budget, sizes, reference: allocate(budget, sizes, reference),
        lambda budget, sizes, reference: plain.allocate(
            budget, sizes, "reference" if reference else "paper"
        ),
    ],
    ids=["fast", "plain"],
)
def test_allocation_hands_the_remainder_to_the_smallest_share(split):
    sizes = np.array([50, 30, 20, 0])
    np.testing.assert_array_equal(split(10, sizes, reference=True), [5, 3, 2, 0])
    # 7·[4, 3, 3]/10 = [2.8, 2.1, 2.1] -> [2, 2, 2]; one left: smallest allocation, larger class
    np.testing.assert_array_equal(split(7, np.array([4, 3, 3]), True), [3, 2, 2])
    # paper mode: every class keeps at least its core, the largest allocation pays for it
    np.testing.assert_array_equal(split(4, np.array([97, 1, 1, 1]), False), [1, 1, 1, 1])
    np.testing.assert_array_equal(split(6, np.array([97, 1, 1, 1]), False), [3, 1, 1, 1])
