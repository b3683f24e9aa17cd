"""SPEC §3 step 0: pseudo-classes. Each sample joins its nearest core; its nearest other cores are
its opponents (the d_inter of step 2 and the classes Eq. 7 minimises over).

:func:`nearest_cores` finds each sample's ``depth`` nearest cores, exact, without a full n×K
matrix: a float32 (or, on a GPU, float64) Gram product per row block gives a shortlist with a
proven error margin, and only the shortlisted (sample, core) pairs are recomputed in float64 from
differences, like scipy's ``cdist``. The shortlist is a superset of every core that can rank in
the top ``depth``, so the result does not depend on the device or the BLAS: near-ties resolve on
the exact float64 distance and exact ties go to the lowest core position. :func:`pseudo_classes`
turns those lists into the classes and the opponent lists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from bilaf.devices import resolve_device
from bilaf.selection.base import SelectionError
from bilaf.selection.bilaf.distances import BLOCK_ELEMENTS

OPPONENTS = 3  # paper mode: nearest opponent cores listed per sample (exact)
ROWS_PER_BLOCK = 2048  # rows per nearest-core block (fewer if many cores)
EXACT_ROWS = 256  # rows per float64 recomputation: temporaries of ~1 MiB are reused (measured)
UNIT_ROUNDOFF = 2.0**-24  # float32
GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/kfd")  # present where a CUDA or ROCm driver is


def _torch_device(device: Any) -> Any:
    """The torch device for the nearest-core pass, or None for numpy on the CPU.

    ``None`` means CUDA when available. The result never depends on it (see ``nearest_cores``).
    """
    if device is not None and str(device) == "cpu":
        return None
    if device is None and not any(map(os.path.exists, GPU_DEVICE_FILES)):
        return None  # no GPU driver: skip importing torch (seconds per job)
    dev = resolve_device(device, SelectionError)
    return None if dev.type == "cpu" else dev


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
    exact_d = np.full((n, width), np.inf)
    core = np.zeros((n, width), dtype=np.int64)
    core[rows, slot] = cols
    for lo in range(0, n, EXACT_ROWS):
        x64 = xb[lo : lo + EXACT_ROWS].astype(np.float64)
        for j in range(depth):
            diff = cores[core[lo : lo + EXACT_ROWS, j]]
            np.subtract(x64, diff, out=diff)
            exact_d[lo : lo + EXACT_ROWS, j] = np.einsum("ij,ij->i", diff, diff)
    extra = np.flatnonzero(slot >= depth)
    if extra.size:
        diff = xb[rows[extra]].astype(np.float64) - cores[cols[extra]]
        exact_d[rows[extra], slot[extra]] = np.einsum("ij,ij->i", diff, diff)
    np.sqrt(exact_d, out=exact_d)
    order = np.argsort(exact_d, axis=1, kind="stable")[:, :depth]  # columns are in core order
    return np.take_along_axis(core, order, axis=1), np.take_along_axis(exact_d, order, axis=1)


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
    rows: np.ndarray,
    core_rows: np.ndarray,
    depth: int,
    torch_device: Any = None,
    *,
    block_elements: int = BLOCK_ELEMENTS,
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``depth`` nearest cores, exact: (ids n×depth int64, distances float64).

    Order within a row: exact float64 distance from differences, then core position. ``rows``
    and ``core_rows`` are float32; rows are processed in blocks of at most ``block_elements``
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
    near_d = np.empty((n, depth), dtype=np.float64)
    step = max(1, min(ROWS_PER_BLOCK, block_elements // n_cores))
    for s in range(0, n, step):
        xb = np.asarray(rows[s : s + step], dtype=np.float32)
        pair_rows, pair_cols = _shortlist(xb, right, depth, error, torch_device)
        ids[s : s + xb.shape[0]], near_d[s : s + xb.shape[0]] = _exact_top(
            xb, cores64, pair_rows, pair_cols, depth
        )
    return ids, near_d


@dataclass(frozen=True)
class Opponents:
    """Each sample's nearest cores other than its own, nearest first: ``ids`` (int64) and their
    float64 ``d``istances, one row per sample."""

    ids: np.ndarray
    d: np.ndarray

    def of(self, member_ids: np.ndarray) -> Opponents:
        """The rows of ``member_ids``."""
        return Opponents(self.ids[member_ids], self.d[member_ids])


@dataclass(frozen=True)
class PseudoClasses:
    """The classes of step 0: ``own[i]`` is sample i's class (a core position), ``by_class``
    the sample ids sorted by class (ascending ids within one), ``bounds`` where each class
    starts in it (K + 1 offsets), and every sample's :class:`Opponents`."""

    own: np.ndarray
    by_class: np.ndarray
    bounds: np.ndarray
    opponents: Opponents

    @property
    def sizes(self) -> np.ndarray:
        """Members per class."""
        return np.diff(self.bounds)

    def members(self, j: int) -> np.ndarray:
        """Class ``j``'s sample ids, ascending."""
        return self.by_class[self.bounds[j] : self.bounds[j + 1]]


def assign_classes(
    rows: np.ndarray,
    core_rows: np.ndarray,
    core_ids: np.ndarray,
    reference: bool,
    device: Any = None,
    *,
    opponents: int = OPPONENTS,
    block_elements: int = BLOCK_ELEMENTS,
) -> PseudoClasses:
    """Every sample in the class of its nearest core, ties to the lowest core position (SPEC §3
    step 0), and its nearest other cores: one in reference mode (the official score uses only
    that one), up to ``opponents`` in paper mode (Eq. 7 starts from them, see
    :class:`~.scores.PaperScores`).

    Paper mode pins every core to its own class (an identical core would otherwise take it);
    reference mode raises SelectionError there, as the official code misplaces it. ``device``
    only speeds up the nearest-core pass.
    """
    n_cls = core_ids.size
    depth = min(n_cls, 2 if reference else 1 + opponents)
    near_ids, near_d = nearest_cores(
        rows, core_rows, depth, _torch_device(device), block_elements=block_elements
    )
    own = near_ids[:, 0].copy()
    if reference:
        moved = np.flatnonzero(own[core_ids] != np.arange(n_cls))
        if moved.size:
            j = int(moved[0])
            raise SelectionError(
                f"core {core_ids[j]} has the same features as core {core_ids[own[core_ids[j]]]}: "
                "the official code puts it in the other's class; use mode='paper'"
            )
    else:
        own[core_ids] = np.arange(n_cls)  # a core always leads its own class
    # the own core leads each list unless a core was pinned to its class behind an identical
    # one; then the list is one shorter than near_ids anyway
    is_own = near_ids == own[:, None]
    order = np.argsort(is_own, axis=1, kind="stable")[:, : near_ids.shape[1] - 1]
    found = Opponents(
        np.take_along_axis(near_ids, order, axis=1), np.take_along_axis(near_d, order, axis=1)
    )
    del near_ids, near_d, is_own, order
    bounds = np.concatenate(([0], np.cumsum(np.bincount(own, minlength=n_cls))))
    return PseudoClasses(own, np.argsort(own, kind="stable"), bounds, found)
