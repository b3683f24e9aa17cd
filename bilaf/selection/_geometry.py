"""Chunked Euclidean-distance building blocks for BiLAF (SPEC §3).

Two jobs, both without an n×n or a full n×K matrix:

* :func:`nearest_cores`: each sample's ``depth`` nearest cores, exact. A float32 (or, on a GPU,
  float64) Gram product per row block gives a shortlist with a proven error margin, and only the
  shortlisted (sample, core) pairs are recomputed in float64 from differences, like scipy's
  ``cdist``. The shortlist is a superset of every core that can rank in the top ``depth``, so the
  result does not depend on the device or the BLAS: near-ties resolve on the exact float64 distance
  and exact ties go to the lowest core position.
* :class:`ClusterDistances`: distances among one cluster's rows (float64, or float32 where only
  determinism matters). The rows are centred on the cluster's core (exact: both are float32)
  before the Gram identity, which keeps cancellation small, and identical rows share one
  representative, so exact ties (duplicates, self-distance 0) stay exact whatever the BLAS does
  with their positions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bilaf.selection.base import iter_row_chunks

BLOCK_ELEMENTS = 1 << 24  # entries of one row-block × columns distance matrix (64-128 MiB)
ROWS_PER_BLOCK = 2048  # rows per nearest-core block (fewer if many cores)
EXACT_ROWS = 256  # rows per float64 recomputation: temporaries of ~1 MiB are reused (measured)
STORE_LIMIT = 12_000  # a kept full matrix, or kept denoising blocks, has at most this² entries
UNIT_ROUNDOFF = 2.0**-24  # float32


def prepare(block: np.ndarray, normalize: bool) -> np.ndarray:
    """Rows as float32, L2-normalised (norm taken in float64; zero rows stay zero) if asked."""
    block = np.asarray(block, dtype=np.float32)
    if not normalize:
        return block
    norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
    return (block / np.maximum(norms, np.finfo(np.float64).tiny)[:, None]).astype(np.float32)


def load_rows(features: Any, normalize: bool) -> np.ndarray:
    """The whole pool as prepared float32 rows, read one row chunk at a time."""
    out = np.empty(tuple(features.shape), dtype=np.float32)
    for start, chunk in iter_row_chunks(features):
        out[start : start + chunk.shape[0]] = prepare(chunk, normalize)
    return out


def _exact_top(
    xb: np.ndarray, cores: np.ndarray, rows: np.ndarray, cols: np.ndarray, depth: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``depth`` nearest of each row's shortlisted cores by float64 distance from
    differences (like ``cdist``), ties to the lowest core: (ids, distances), each rows × depth.

    ``rows`` is sorted with ``cols`` ascending within a row (``np.flatnonzero`` order), and every
    row has at least ``depth`` entries. The j-th entries (j < depth) of all rows are done together
    so the rows need no gather; the few entries beyond go in one batch.
    """
    n = xb.shape[0]
    counts = np.bincount(rows, minlength=n)
    slot = np.arange(rows.size) - (np.cumsum(counts) - counts)[rows]
    width = int(counts.max())
    dist = np.full((n, width), np.inf)
    core = np.zeros((n, width), dtype=np.int64)
    core[rows, slot] = cols
    for lo in range(0, n, EXACT_ROWS):
        x64 = xb[lo : lo + EXACT_ROWS].astype(np.float64)
        for j in range(depth):
            diff = cores[core[lo : lo + EXACT_ROWS, j]]
            np.subtract(x64, diff, out=diff)
            dist[lo : lo + EXACT_ROWS, j] = np.einsum("ij,ij->i", diff, diff)
    extra = np.flatnonzero(slot >= depth)
    if extra.size:
        diff = xb[rows[extra]].astype(np.float64) - cores[cols[extra]]
        dist[rows[extra], slot[extra]] = np.einsum("ij,ij->i", diff, diff)
    np.sqrt(dist, out=dist)
    order = np.argsort(dist, axis=1, kind="stable")[:, :depth]  # columns are in core order
    return np.take_along_axis(core, order, axis=1), np.take_along_axis(dist, order, axis=1)


def _shortlist(
    xb: np.ndarray, right: Any, depth: int, error: float, torch_device: Any
) -> tuple[np.ndarray, np.ndarray]:
    """(row, core) pairs whose Gram value ||c||² − 2x·c lies within twice the error bound of the
    row's ``depth``-th smallest: a superset of every core that can rank in the top ``depth``.

    ``right`` is [−2c, ||c||²] per core (transposed), so one product gives the values: float32
    numpy on the CPU, float64 torch on ``torch_device``. With many cores the ``depth``-th
    smallest of 64 group minima stands in for the ``depth``-th smallest value (an upper bound).
    """
    x_norm = np.sqrt(np.einsum("ij,ij->i", xb, xb, dtype=np.float64))
    slack = 2.0 * error * (2.0 * x_norm + 1.0)
    if torch_device is not None:
        import torch

        xt = torch.from_numpy(xb).to(torch_device, dtype=torch.float64)
        approx = torch.addmm(right[-1], xt, right[:-1])
        kth = approx.topk(depth, dim=1, largest=False).values[:, -1]
        hits = approx <= (kth + torch.from_numpy(slack).to(approx))[:, None]
        return tuple(t.cpu().numpy() for t in torch.nonzero(hits, as_tuple=True))
    approx = np.hstack([xb, np.ones((xb.shape[0], 1), dtype=xb.dtype)]) @ right  # one pass
    n_cores = approx.shape[1]
    if n_cores >= 2048:  # the depth-th smallest of 64 group minima bounds it, far cheaper
        groups = np.arange(0, n_cores, n_cores // 64)
        kth = np.partition(np.minimum.reduceat(approx, groups, axis=1), depth - 1, axis=1)
    else:
        kth = np.partition(approx, depth - 1, axis=1)
    bound = (kth[:, depth - 1] + slack).astype(np.float32)  # rounds to >= the kth value
    return np.divmod(np.flatnonzero(approx <= bound[:, None]), n_cores)


def nearest_cores(
    rows: np.ndarray, core_rows: np.ndarray, depth: int, torch_device: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``depth`` nearest cores, exact: (ids n×depth int64, distances float64).

    Order within a row: exact float64 distance from differences, then core position. ``rows``
    and ``core_rows`` are float32; rows are processed in blocks of at most BLOCK_ELEMENTS
    distances.
    """
    n, d = rows.shape
    n_cores = core_rows.shape[0]
    cores64 = core_rows.astype(np.float64)
    core_sq = np.einsum("ij,ij->i", cores64, cores64)
    right = np.vstack([-2.0 * cores64.T, core_sq[None, :]])
    if torch_device is None:
        right = right.astype(np.float32)
    else:
        import torch

        right = torch.from_numpy(right).to(torch_device)
    # A float32 sum of d+1 products is off by at most gamma_{d+1}·Σ|terms| in any order, with
    # Σ|terms| <= 2|x||c| + |c|²; error·(2|x| + 1) is twice that bound for any core, and a core
    # can beat the depth-th smallest value only if within two such bounds of it.
    core_max = float(np.sqrt(core_sq.max()))
    error = 2.0 * (d + 2) * UNIT_ROUNDOFF * max(core_max, core_max**2)
    ids = np.empty((n, depth), dtype=np.int64)
    dists = np.empty((n, depth), dtype=np.float64)
    step = max(1, min(ROWS_PER_BLOCK, BLOCK_ELEMENTS // n_cores))
    for s in range(0, n, step):
        xb = np.asarray(rows[s : s + step], dtype=np.float32)
        pair_rows, pair_cols = _shortlist(xb, right, depth, error, torch_device)
        ids[s : s + xb.shape[0]], dists[s : s + xb.shape[0]] = _exact_top(
            xb, cores64, pair_rows, pair_cols, depth
        )
    return ids, dists


def _unique_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(representatives, inverse): first occurrence of each distinct row, and each row's one.

    An exact integer key (the sum of the float32 bit patterns, sign bits cleared so -0.0 keys
    like 0.0) rules duplicates out in one pass; only a cluster with a repeated key pays for the
    exact ``np.unique`` over rows.
    """
    every = np.arange(x.shape[0])
    key = (x.view(np.uint32) & np.uint32(0x7FFFFFFF)).sum(axis=1, dtype=np.uint64)
    if np.unique(key).size == x.shape[0]:
        return every, every
    _, reps, inverse = np.unique(x, axis=0, return_index=True, return_inverse=True)
    if reps.size == x.shape[0]:
        return every, every
    return reps, inverse.reshape(-1)


def _augmented(x: np.ndarray, sq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows [−2x, ||x||², 1] and [x, 1, ||x||²]: their product is the squared distance."""
    ones = np.ones((x.shape[0], 1), dtype=x.dtype)
    return np.hstack([-2 * x, sq[:, None], ones]), np.hstack([x, ones, sq[:, None]])


def _symmetric_distances(
    x: np.ndarray, sq: np.ndarray, out: np.ndarray, block: int = 512
) -> np.ndarray:
    """Full distance matrix among rows ``x`` with squared norms ``sq`` (in x's dtype), in ``out``.

    Only the upper block triangle is computed, then mirrored, so the matrix is exactly symmetric
    with a zero diagonal (like ``cdist``) at about half the cost. A diagonal block is one
    symmetric product (numpy calls BLAS syrk for ``a @ a.T``: half the work, exactly symmetric)
    plus the norms, added in an order that keeps it so; the blocks right of it are one product
    with the norms folded in (:func:`_augmented`).
    """
    m = x.shape[0]
    left, right = _augmented(x, sq) if m > block else (None, None)
    for s in range(0, m, block):
        e = min(s + block, m)
        diag = out[s:e, s:e]
        np.matmul(x[s:e], x[s:e].T, out=diag)
        diag *= -2
        diag += sq[s:e, None] + sq[s:e]
        if e < m:
            np.matmul(left[s:e], right[e:].T, out=out[s:e, e:])
        part = out[s:e, s:]
        np.maximum(part, 0, out=part)
        np.sqrt(part, out=part)
        out[e:, s:e] = out[s:e, e:].T
    np.fill_diagonal(out, 0.0)
    return out


class MatrixBuffer:
    """Memory for one cluster's distances at a time, reused by cluster after cluster: the pages
    are allocated and touched once instead of once per cluster."""

    def __init__(self, dtype: type, largest: int = 0) -> None:
        side = min(largest, STORE_LIMIT)
        self.data = np.empty(side * side, dtype=dtype)

    def flat(self, count: int) -> np.ndarray:
        """``count`` elements of the buffer (grown if needed); earlier views are invalid."""
        if self.data.size < count:
            self.data = np.empty(count, dtype=self.data.dtype)
        return self.data[:count]

    def square(self, size: int) -> np.ndarray:
        """A size × size view of the buffer (grown if needed); earlier views are invalid."""
        return self.flat(size * size).reshape(size, size)


class ClusterDistances:
    """Distances among the rows of one cluster (BiLAF §3.2 works inside pseudo-classes).

    Rows are centred on the cluster's core (exact for float32 inputs), so ``to_centre`` is a
    float64 from-differences distance and the Gram identity loses little to cancellation. The
    other distances are computed in ``dtype``: float64 where they must order like ``cdist``
    (reference mode), float32 where determinism is enough (paper mode, twice as fast). Identical
    rows share one representative, so self- and duplicate distances are exactly 0 and exact ties
    stay exact whatever the BLAS does with row positions. Given a ``buffer`` (and at most
    :data:`STORE_LIMIT` distinct rows) the full matrix is computed once and kept there, valid
    until the buffer's next use; otherwise each request computes its block, so only the pairs
    asked for are ever computed and memory stays bounded for huge clusters.
    """

    def __init__(
        self,
        rows: np.ndarray,
        centre: np.ndarray,
        dtype: type = np.float64,
        buffer: MatrixBuffer | None = None,
    ) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        reps, self.inverse = _unique_rows(rows)
        self.has_duplicates = reps.size < rows.shape[0]
        self.dtype = dtype
        self.centre = centre.astype(np.float64)
        self.reps = rows[reps].astype(np.float64) - self.centre
        self.sq = np.einsum("ij,ij->i", self.reps, self.reps)
        self.work, self.work_sq = self.reps.astype(dtype), self.sq.astype(dtype)
        self.full: np.ndarray | None = None
        self._sides: tuple[np.ndarray, np.ndarray] | None = None
        if buffer is not None and reps.size <= STORE_LIMIT:
            self.full = _symmetric_distances(self.work, self.work_sq, buffer.square(reps.size))

    @property
    def size(self) -> int:
        """Number of members."""
        return self.inverse.size

    def _expand(self, values: np.ndarray) -> np.ndarray:
        """Per-representative values (last axis) to per-member values."""
        return values[..., self.inverse] if self.has_duplicates else values

    def to_centre(self) -> np.ndarray:
        """Every member's float64 distance to the core, from differences (like ``cdist``)."""
        return self._expand(np.sqrt(self.sq))

    def block(
        self,
        rows: np.ndarray,
        cols: np.ndarray,
        out: np.ndarray | None = None,
        disjoint: bool = False,
    ) -> np.ndarray:
        """Distances from members ``rows`` to members ``cols`` (each without repeats), in ``out``
        if given. ``disjoint`` promises that no member is in both, so no self-distance needs
        zeroing (duplicates of one another are still exactly 0)."""
        r, c = self.inverse[rows], self.inverse[cols]
        if self.full is not None:  # symmetric: the columns read as whole rows
            values = self.full[c].T[r]
        elif self.has_duplicates:  # one product per distinct pair of rows: exact ties stay exact
            r, r_back = np.unique(r, return_inverse=True)
            c, c_back = np.unique(c, return_inverse=True)
            values = self._rep_block(r, c, None, False)[r_back[:, None], c_back]
        else:
            return self._rep_block(r, c, out, disjoint)
        if out is None:
            return values
        np.copyto(out, values)
        return out

    def _rep_block(
        self, r: np.ndarray, c: np.ndarray, out: np.ndarray | None, disjoint: bool
    ) -> np.ndarray:
        """Distances between distinct representatives ``r`` and ``c``: one product."""
        if self._sides is None:
            self._sides = _augmented(self.work, self.work_sq)
        left, right = self._sides
        values = np.matmul(left[r], right[c].T, out=out)
        np.maximum(values, 0, out=values)
        np.sqrt(values, out=values)
        if not disjoint:
            _, at_r, at_c = np.intersect1d(r, c, assume_unique=True, return_indices=True)
            values[at_r, at_c] = 0
        return values

    def from_member(self, i: int) -> np.ndarray:
        """Distances from member ``i`` to every member (one matrix-vector product)."""
        rep = int(self.inverse[i])
        if self.full is not None:
            return self._expand(self.full[rep])
        sq = self.work_sq + self.work_sq[rep] - 2 * (self.work @ self.work[rep])
        sq[rep] = 0
        return self._expand(np.sqrt(np.maximum(sq, 0, out=sq), out=sq))

    def centred(self, points: np.ndarray) -> np.ndarray:
        """Uncentred float64 ``points`` in this cluster's coordinates, in ``dtype``, for
        :meth:`to_points`."""
        return (points - self.centre).astype(self.dtype)

    def to_points(self, centred: np.ndarray, members: np.ndarray | None = None) -> np.ndarray:
        """Distances from ``members`` (default: all) to each of the ``centred`` points (see
        :meth:`centred`), in ``dtype``: one product, (members, points)."""
        if members is None:
            work, work_sq = self.work, self.work_sq
        else:
            reps = self.inverse[members]
            work, work_sq = self.work[reps], self.work_sq[reps]
        sq = work @ (-2 * centred.T)
        sq += work_sq[:, None]
        sq += np.einsum("ij,ij->i", centred, centred)
        np.sqrt(np.maximum(sq, 0, out=sq), out=sq)
        return sq if members is not None or not self.has_duplicates else sq[self.inverse]

    def gather(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Distances ``D[rows[i], cols[i, j]]`` (``cols`` is len(rows) × w member positions)."""
        r, c = self.inverse[rows], self.inverse[cols]
        if self.full is not None:
            return self.full[r[:, None], c]
        sq = np.empty(c.shape, dtype=self.dtype)
        step = max(1, BLOCK_ELEMENTS // max(c.size // max(r.size, 1) * self.work.shape[1], 1))
        for s in range(0, r.size, step):
            rs, cs = r[s : s + step], c[s : s + step]
            dots = np.einsum("ik,ijk->ij", self.work[rs], self.work[cs])
            sq[s : s + step] = self.work_sq[rs][:, None] + self.work_sq[cs] - 2 * dots
        sq[c == r[:, None]] = 0
        return np.sqrt(np.maximum(sq, 0, out=sq), out=sq)

    def mean_to(self, pool: np.ndarray) -> np.ndarray:
        """Every member's mean distance to the members ``pool`` (duplicates counted)."""
        counts = np.bincount(self.inverse[pool], minlength=self.reps.shape[0])
        weights = (counts / max(pool.size, 1)).astype(self.dtype)  # empty pool: all 0
        if self.full is not None:
            return self._expand(self.full @ weights)
        every = np.arange(self.reps.shape[0])
        out = np.empty(every.size, dtype=self.dtype)
        step = max(1, BLOCK_ELEMENTS // every.size)
        for s in range(0, every.size, step):
            out[s : s + step] = self._rep_block(every[s : s + step], every, None, False) @ weights
        return self._expand(out)
