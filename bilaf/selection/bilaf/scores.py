"""SPEC §3 step 2 (BiLAF §3.3, Eq. 5-7): boundary scores, with the opponent penalty of step 4.

BS(i) compares a member's distance to an opponent core, times that class's penalty, with its
mean distance to its own denoised class (d_intra, from :func:`~.denoise.denoise_class`); low
means near a boundary. A scorer is per class and stateful: ``penalise`` multiplies by δ the
penalty of the class a pick's nearest opponent belongs to, ``score`` scores candidates under the
penalties so far.

* :class:`ReferenceScores`: the official score, against each member's one nearest opponent.
* :class:`PaperScores`: Eq. 7, the minimum over every opponent class, exact but without a
  members × K matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bilaf.selection.bilaf.distances import BLOCK_ELEMENTS, ClusterDistances
from bilaf.selection.bilaf.pseudo_classes import Opponents

REFILL = 8  # paper mode: nearest unpenalised opponents listed again once a list is used up


class ReferenceScores:
    """The official boundary score: (D_o·pen[o] − d_intra) / max(D_o, d_intra) with o the nearest
    opponent only, and pen[o] *= δ each time a pick's nearest opponent is o (per class).

    ``opponents`` and ``intra`` are the class's members', in member order."""

    def __init__(self, opponents: Opponents, intra: np.ndarray, delta: float):
        _, self.opp = np.unique(opponents.ids[:, 0], return_inverse=True)
        self.d_inter, self.intra, self.delta = opponents.d[:, 0], intra, delta
        self.pen = np.ones(int(self.opp.max()) + 1)

    def penalise(self, i: int) -> None:
        self.pen[self.opp[i]] *= self.delta

    def score(self, pos: np.ndarray) -> np.ndarray:
        d_inter, intra = self.d_inter[pos], self.intra[pos]
        with np.errstate(divide="ignore", invalid="ignore"):  # numpy semantics, like the original
            return (d_inter * self.pen[self.opp[pos]] - intra) / np.maximum(d_inter, intra)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0/0 = 0 (a sample on an opponent core of a one-point class)."""
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


@dataclass(frozen=True)
class CoreRows:
    """The cores' rows in float64 and their squared norms, computed once for all classes (per
    class it would cost K² d)."""

    rows: np.ndarray
    sq: np.ndarray

    @classmethod
    def of(cls, core_rows: np.ndarray) -> CoreRows:
        rows = core_rows.astype(np.float64)
        return cls(rows, np.einsum("ij,ij->i", rows, rows))


class PaperScores:
    """Eq. 7: BS(x) = min over every opponent class l of (δ^{t_l}·D(x,c_l) − d_intra)/max(·,·).

    t_l counts the picks whose nearest opponent was l (the official penalty, per class). As δ ≥ 1
    and the ratio grows with D, the minimum over unpenalised classes sits at the nearest
    unpenalised opponent: the first unpenalised one in the sample's list of nearest opponents
    (exact, from the nearest-core pass). Once a list is all penalised it is refilled with the
    next ``refill`` nearest unpenalised cores from a row of distances to all cores (computed
    ``block_elements`` at a time). Each penalised class adds one distance column, and each sample
    keeps its minimum over those.

    ``distances``: the class's; ``own``: its position among the cores; ``opponents`` and
    ``intra``: its members', in member order; ``pool_rows``: the whole pool's float32 rows and
    ``member_ids`` the class's sample ids in it (for refills); ``cores``: shared by all classes.
    """

    def __init__(
        self,
        distances: ClusterDistances,
        *,
        own: int,
        opponents: Opponents,
        intra: np.ndarray,
        delta: float,
        pool_rows: np.ndarray,
        member_ids: np.ndarray,
        cores: CoreRows,
        refill: int = REFILL,
        block_elements: int = BLOCK_ELEMENTS,
    ):
        self.distances: ClusterDistances | None = distances
        self.pool_rows, self.member_ids, self.cores = pool_rows, member_ids, cores
        self.own, self.intra, self.delta = own, intra, delta
        self.block_elements = block_elements
        m, n_cores, listed = distances.size, cores.rows.shape[0], opponents.ids.shape[1]
        self.complete = n_cores - 1 <= listed  # the lists hold every opponent
        self.pen_column: dict[int, int] = {}  # penalised class -> column of pen_d / pen_factor
        self.blocked = np.zeros(n_cores, dtype=bool)  # own class and penalised ones
        self.blocked[own] = True
        self.pen_d = np.empty((m, 4), dtype=distances.dtype)  # grown by doubling
        self.pen_factor = np.empty(4)
        # each sample's minimum over the penalised classes' terms, and the column it sits in
        self.pen_min = np.full(m, np.inf)
        self.pen_arg = np.full(m, -1)
        # the opponent lists, widened for refills; padding names the own class (always blocked)
        width = listed if self.complete else min(n_cores - 1, refill)
        self.opp_ids = np.full((m, width), own)
        self.opp_ids[:, :listed] = opponents.ids
        self.opp_d = np.full((m, width), np.inf)
        self.opp_d[:, :listed] = opponents.d
        # each sample's nearest unpenalised opponent (-1: none) and its term of the minimum;
        # nothing is penalised yet, so that is the nearest opponent. ``stale`` marks samples
        # whose one was penalised since: only those still scored pay for finding the next.
        self.stale = np.zeros(m, dtype=bool)
        if width:
            first_d = opponents.d[:, 0]
            self.nearest = opponents.ids[:, 0].copy()  # the class a pick's penalty goes to
            self.free_cls = self.nearest.copy()
            self.free_term = _ratio(first_d - intra, np.maximum(first_d, intra))
        else:  # a single class: no opponent, the ratio's limit 1
            self.free_cls = np.full(m, -1)
            self.free_term = np.ones(m)

    def penalise(self, i: int) -> None:
        if not self.opp_ids.shape[1]:
            return
        cls = int(self.nearest[i])
        if cls in self.pen_column:  # its terms grow: rows whose minimum it was look again
            col = self.pen_column[cls]
            self.pen_factor[col] *= self.delta
            rows = np.flatnonzero(self.pen_arg == col)
            used = len(self.pen_column)
            terms = self._terms(
                self.pen_d[rows, :used], self.pen_factor[:used], self.intra[rows, None]
            )
            self.pen_arg[rows] = terms.argmin(axis=1)
            self.pen_min[rows] = terms[np.arange(rows.size), self.pen_arg[rows]]
            return
        col = self.pen_column[cls] = len(self.pen_column)
        self.blocked[cls] = True
        if col == self.pen_d.shape[1]:
            self.pen_d = np.hstack([self.pen_d, np.empty_like(self.pen_d)])
            self.pen_factor = np.append(self.pen_factor, np.empty_like(self.pen_factor))
        centred = self.distances.centred(self.cores.rows[cls : cls + 1])
        column = self.pen_d[:, col] = self.distances.to_points(centred)[:, 0]
        self.pen_factor[col] = self.delta
        term = self._terms(column, self.delta, self.intra)
        lower = term < self.pen_min
        self.pen_min[lower], self.pen_arg[lower] = term[lower], col
        self.stale |= self.free_cls == cls  # found again when next scored

    @staticmethod
    def _terms(pen_d: np.ndarray, factor: Any, intra: np.ndarray) -> np.ndarray:
        """Eq. 7 terms of penalised classes: (factor·D − d_intra) / max(D, d_intra)."""
        return _ratio(pen_d * factor - intra, np.maximum(pen_d, intra))

    def _refill(self, rows: np.ndarray) -> None:
        """Replace the lists of ``rows`` with their nearest unpenalised cores, nearest first
        (ties to the lower core position)."""
        width = self.opp_ids.shape[1]
        step = max(1, self.block_elements // self.cores.rows.shape[0])
        for s in range(0, rows.size, step):
            part = rows[s : s + step]
            # float64 Gram, uncentred: centring every core for every class costs K² d
            x = self.pool_rows[self.member_ids[part]].astype(np.float64)
            sq = np.einsum("ij,ij->i", x, x)[:, None] - 2.0 * x @ self.cores.rows.T + self.cores.sq
            sq[:, self.blocked] = np.inf
            ids = np.argpartition(sq, width - 1, axis=1)[:, :width]
            sq = np.take_along_axis(sq, ids, axis=1)
            order = np.lexsort((ids, sq), axis=1)
            ids, sq = np.take_along_axis(ids, order, 1), np.take_along_axis(sq, order, 1)
            self.opp_ids[part] = np.where(np.isinf(sq), self.own, ids)  # padding: the own class
            self.opp_d[part] = np.sqrt(np.maximum(sq, 0.0))

    def finish(self, last: int | None) -> None:
        """Penalise for the ``last`` pick (None: the core) and let go of the class's distances:
        what is left is the state the class's next pick would see, kept for a top-up."""
        if last is not None:
            self.penalise(last)
        self.distances = None

    def _move_on(self, rows: np.ndarray) -> None:
        """Set the nearest unpenalised opponent of ``rows`` and its term."""
        if not self.opp_ids.shape[1]:  # a single class: no opponent, the ratio's limit 1
            return
        free = ~self.blocked[self.opp_ids[rows]]
        listed = free.any(axis=1)
        if not self.complete and not listed.all():
            self._refill(rows[~listed])
            free[~listed] = ~self.blocked[self.opp_ids[rows[~listed]]]
            listed = free.any(axis=1)
        first = free.argmax(axis=1)
        self.free_cls[rows] = np.where(listed, self.opp_ids[rows, first], -1)
        intra = self.intra[rows]
        near = np.where(listed, self.opp_d[rows, first], intra)
        term = _ratio(near - intra, np.maximum(near, intra))
        self.free_term[rows] = np.where(listed, term, np.inf)  # all penalised: no free term

    def score(self, pos: np.ndarray) -> np.ndarray:
        stale = pos[self.stale[pos]]
        if stale.size:
            self._move_on(stale)
            self.stale[stale] = False
        return self.bound(pos)[0]

    def bound(self, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores of ``pos`` without moving on, and which are stale. A stale score is a lower
        bound: the next unpenalised opponent is no nearer, and the term grows with D."""
        return np.minimum(self.free_term[pos], self.pen_min[pos]), self.stale[pos]
