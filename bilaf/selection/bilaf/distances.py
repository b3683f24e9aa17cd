"""Euclidean distances inside one pseudo-class, exact where an order depends on them (SPEC §3).

BiLAF denoises, scores and picks inside pseudo-classes (steps 1-4), so every distance it needs
but the nearest-core ones (:mod:`.pseudo_classes`) is between members of one class, or from
them to a core. :class:`ClusterDistances` holds one class's rows and answers those requests
without an n×n matrix: float64 (or float32 where only determinism matters), rows centred on the
class's core before the Gram identity (which keeps cancellation small), and identical rows sharing
one representative, so exact ties (duplicates, self-distance 0) stay exact whatever the BLAS
does with their positions. :class:`MatrixBuffer` is the memory one class's whole matrix lives
in, reused class after class. :func:`prepare` and :func:`load_rows` turn the features into the
float32 rows all of it works on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bilaf.selection.base import iter_row_chunks

BLOCK_ELEMENTS = 1 << 24  # entries of one row-block × columns distance matrix (64-128 MiB)
STORE_LIMIT = 12_000  # a kept full matrix, or kept denoising blocks, has at most this² entries


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
    are allocated and touched once instead of once per cluster. It starts at the largest
    cluster's matrix, or ``store_limit``² entries if that is less."""

    def __init__(self, dtype: type, largest: int = 0, *, store_limit: int = STORE_LIMIT) -> None:
        side = min(largest, store_limit)
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
    ``store_limit`` distinct rows) the full matrix is computed once and kept there, valid
    until the buffer's next use; otherwise each request computes its block, so only the pairs
    asked for are ever computed and memory stays bounded for huge clusters. Computed blocks have
    at most ``block_elements`` entries.
    """

    def __init__(
        self,
        rows: np.ndarray,
        centre: np.ndarray,
        dtype: type = np.float64,
        buffer: MatrixBuffer | None = None,
        *,
        store_limit: int = STORE_LIMIT,
        block_elements: int = BLOCK_ELEMENTS,
    ) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        reps, self.inverse = _unique_rows(rows)
        self.has_duplicates = reps.size < rows.shape[0]
        self.dtype = dtype
        self.block_elements = block_elements
        self.centre = centre.astype(np.float64)
        self.reps = rows[reps].astype(np.float64) - self.centre
        self.sq = np.einsum("ij,ij->i", self.reps, self.reps)
        self.work, self.work_sq = self.reps.astype(dtype), self.sq.astype(dtype)
        self.full: np.ndarray | None = None
        self._sides: tuple[np.ndarray, np.ndarray] | None = None
        if buffer is not None and reps.size <= store_limit:
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
        per_row = max(c.size // max(r.size, 1) * self.work.shape[1], 1)
        step = max(1, self.block_elements // per_row)
        for s in range(0, r.size, step):
            rs, cs = r[s : s + step], c[s : s + step]
            dots = np.einsum("ik,ijk->ij", self.work[rs], self.work[cs])
            sq[s : s + step] = self.work_sq[rs][:, None] + self.work_sq[cs] - 2 * dots
        sq[c == r[:, None]] = 0
        return np.sqrt(np.maximum(sq, 0, out=sq), out=sq)

    def mean_to(self, subset: np.ndarray) -> np.ndarray:
        """Every member's mean distance to the members ``subset`` (duplicates counted)."""
        counts = np.bincount(self.inverse[subset], minlength=self.reps.shape[0])
        weights = (counts / max(subset.size, 1)).astype(self.dtype)  # empty subset: all 0
        if self.full is not None:
            return self._expand(self.full @ weights)
        every = np.arange(self.reps.shape[0])
        out = np.empty(every.size, dtype=self.dtype)
        step = max(1, self.block_elements // every.size)
        for s in range(0, every.size, step):
            out[s : s + step] = self._rep_block(every[s : s + step], every, None, False) @ weights
        return self._expand(out)
