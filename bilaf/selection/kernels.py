"""Gaussian kernels over the pool, block by block: the part MaxHerding and kernel herding share.

k(x, y) = exp(-||x - y||² / (2σ²)), σ the bandwidth (by default the median pairwise distance).
Both methods need each candidate's kernel sum over the pool ("how much of the data it stands for"),
an n x n computation done here in row blocks of at most ``BLOCK_ELEMENTS`` entries, never held
whole. ``points`` optionally estimates those sums (expectations over the data) on a seeded subset
of the rows, the stated way to go past a few hundred thousand rows on a CPU: every row stays a
candidate.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bilaf.selection.base import SelectionError, check_option
from bilaf.selection.neighbors import (
    load_centred,
    load_tensor,
    resolve_device,
    row_chunks,
    sq_distances,
    sq_norms,
)

MEDIAN_ROWS = 2048  # rows whose pairwise distances give the median bandwidth (2.1 M pairs)


def tie_ranks(seed: int, n: int) -> np.ndarray:
    """A seeded permutation of the ids that orders equal gains, from a stream of its own (so a
    given bandwidth and the median one break ties alike), never storage order."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0]).permutation(n)


class KernelPool:
    """A pool's rows ``x`` (n, d) and the rows ``points`` over which kernel sums are taken."""

    def __init__(self, x: torch.Tensor, bandwidth: float, points: np.ndarray | None) -> None:
        self.x, self.x_sq = x, sq_norms(x)
        self.gamma = 1.0 / (2.0 * bandwidth * bandwidth)
        if points is None:
            self.p, self.p_sq = x, self.x_sq
        else:
            self.p = x[torch.from_numpy(points).to(x.device)]
            self.p_sq = sq_norms(self.p)

    def kernel(
        self, a: torch.Tensor, a_sq: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor
    ) -> torch.Tensor:
        """The Gaussian kernel between the rows of ``a`` and of ``b``: (len(a), len(b))."""
        return sq_distances(a, b, a_sq, b_sq).mul_(-self.gamma).exp_()

    def block(self, rows: torch.Tensor, rows_sq: torch.Tensor) -> torch.Tensor:
        """k(point, row) for every point and the given rows: (len(points), len(rows))."""
        return self.kernel(self.p, self.p_sq, rows, rows_sq)

    def columns(self, ids: torch.Tensor) -> torch.Tensor:
        """k(point, x[id]) for the rows ``ids``: (len(points), len(ids))."""
        return self.block(self.x[ids], self.x_sq[ids])

    def row_kernel(self, i: int) -> torch.Tensor:
        """k(x_j, x_i) for every row j, float64: (n,)."""
        one = slice(i, i + 1)
        return self.kernel(self.x, self.x_sq, self.x[one], self.x_sq[one])[:, 0].double()

    def sums(self) -> torch.Tensor:
        """Σ_points k(point, x_i) for every row i, float64: (n,)."""
        n, m = self.x.shape[0], self.p.shape[0]
        out = torch.empty(n, dtype=torch.float64, device=self.x.device)
        for start, stop in row_chunks(n, m):
            out[start:stop] = self.block(self.x[start:stop], self.x_sq[start:stop]).sum(
                dim=0, dtype=torch.float64
            )
        return out


def load_pool(features: Any, normalize: bool, device: str | None) -> torch.Tensor:
    """The pool as float32 rows on the method's device: L2-normalised, or raw minus its mean
    (distances unchanged; the Gram identity loses less)."""
    if normalize:
        return torch.nn.functional.normalize(load_tensor(features, resolve_device(device)), dim=1)
    return load_centred(features, device)


def median_distance(x: torch.Tensor, rng: np.random.Generator, rows: int = MEDIAN_ROWS) -> float:
    """Median Euclidean distance over the distinct pairs of ``rows`` seeded rows (all if fewer).

    SelectionError when it is 0 (the rows are copies of one point): no bandwidth follows from it.
    """
    n = x.shape[0]
    if n < 2:
        return 1.0  # one row: every bandwidth gives the same (only) pick
    ids = np.sort(rng.choice(n, rows, replace=False)) if n > rows else np.arange(n)
    sub = x[torch.from_numpy(ids).to(x.device)].double()
    sq = sq_norms(sub)
    upper = torch.triu_indices(len(ids), len(ids), 1, device=x.device)
    d2 = sq_distances(sub, sub, sq, sq)[upper[0], upper[1]]
    median = float(np.median(d2.sqrt().cpu().numpy()))
    if median == 0.0:
        raise SelectionError("the features' median pairwise distance is 0: pass bandwidth=")
    return median


def kernel_pool(
    x: torch.Tensor,
    bandwidth: float | None,
    points: int | None,
    rng: np.random.Generator,
    method: str,
) -> KernelPool:
    """The checked :class:`KernelPool` of a kernel method: σ given or the median distance, the
    sums over all rows or over ``points`` seeded rows (sorted)."""
    check_option(bandwidth, f"{method} bandwidth", low=0, open_low=True, optional=True)
    check_option(points, f"{method} points", int, low=1, optional=True)
    n = x.shape[0]
    sigma = median_distance(x, rng) if bandwidth is None else float(bandwidth)
    subset = None if points is None or points >= n else np.sort(rng.choice(n, points, False))
    return KernelPool(x, sigma, subset)
