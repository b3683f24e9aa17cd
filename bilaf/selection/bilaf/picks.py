"""SPEC §3 steps 3-5 (BiLAF §3.3): split the budget across the classes, then pick in each.

:func:`allocate` gives each class a share of the budget by denoised size (step 3). :func:`pick`
is the iterative selection and removal in one class (step 4): from the core, each round drops the
candidates nearest the last pick, penalises its opponent and takes the lowest boundary score
(:mod:`.scores`). Paper mode never lets a class pick a sample twice; a class that runs dry leaves
its shortfall to :func:`top_up`, the best remaining scores over all classes.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from bilaf.selection.base import SelectionError
from bilaf.selection.bilaf.distances import ClusterDistances
from bilaf.selection.bilaf.scores import PaperScores


def allocate(budget: int, sizes: np.ndarray, reference: bool) -> np.ndarray:
    """Per-class budgets a_j = ⌊B·|U_j|/Σ|U|⌋ (BiLAF §3.3), the remainder one at a time to the
    smallest allocation (ties: larger class, then lower index). Paper mode gives every class at
    least its core, taking the extra back from the largest allocations."""
    total = int(sizes.sum())
    if total == 0:
        raise SelectionError("reference mode: denoising emptied every class (p_rm too high)")
    alloc = budget * sizes // total
    if not reference:
        alloc = np.maximum(alloc, 1)
        largest = [(-int(a), int(s), -j) for j, (a, s) in enumerate(zip(alloc, sizes, strict=True))]
        heapq.heapify(largest)
        for _ in range(int(alloc.sum()) - budget):
            neg_a, size, neg_j = heapq.heappop(largest)
            alloc[-neg_j] -= 1
            heapq.heappush(largest, (neg_a + 1, size, neg_j))
    smallest = [(int(a), -int(s), j) for j, (a, s) in enumerate(zip(alloc, sizes, strict=True))]
    heapq.heapify(smallest)
    for _ in range(budget - int(alloc.sum())):
        a, neg_s, j = heapq.heappop(smallest)
        alloc[j] += 1
        heapq.heappush(smallest, (a + 1, neg_s, j))
    return alloc


def check_reference_budget(
    core_ids: np.ndarray, sizes: np.ndarray, kept: np.ndarray, alloc: np.ndarray, p_rm: float
) -> None:
    """Raise SelectionError, before any class is scored, where the official code would break:
    a class with no budget (it divides by zero) or one that must pick beyond its core after
    denoising kept none of its members (its argmin over no candidates fails)."""
    if (alloc == 0).any():
        j = int(np.flatnonzero(alloc == 0)[0])
        raise SelectionError(
            f"reference mode: the class of core {core_ids[j]} gets no budget, where the official "
            "code divides by zero; raise the budget or use mode='paper'"
        )
    emptied = np.flatnonzero((kept == 0) & (alloc > 1))
    if emptied.size:
        j = int(emptied[0])
        raise SelectionError(
            f"reference mode: denoising with p_rm={p_rm} keeps none of the {sizes[j]} members of "
            f"the class of core {core_ids[j]}, which must still pick {alloc[j] - 1} more, where "
            "the official code fails on an empty argmin; lower p_rm or use mode='paper'"
        )


def first_smallest(values: np.ndarray, r: int) -> np.ndarray:
    """Mask of the ``r`` smallest values, ties to the earlier position: the first ``r`` of a
    stable argsort, in linear time."""
    if r >= values.size:
        return np.ones(values.size, dtype=bool)
    if r == 0:
        return np.zeros(values.size, dtype=bool)
    kth = np.partition(values, r - 1)[r - 1]
    mask = values < kth
    mask[np.flatnonzero(values == kth)[: r - np.count_nonzero(mask)]] = True
    return mask


def pick(
    distances: ClusterDistances,
    denoised: np.ndarray,
    core_pos: int,
    quota: int,
    scores: Any,
    reference: bool,
) -> tuple[list[int], list[float]]:
    """Iterative selection and removal in one class (BiLAF §3.3, SPEC §3 step 4): ``quota``
    member positions, the core's first, and the boundary score each had when picked (NaN for
    the core, which is not scored).

    Start from the core, with the ``denoised`` members (join order) as candidates; each round
    drops the r = ⌊|U|/a⌋ candidates nearest the last pick (ties to the earlier candidate),
    penalises the last pick's opponent and takes the lowest score (ties to the earlier
    candidate). Reference mode re-sorts the candidates by that distance each round, as the
    official code does, and lets a pick come back when r = 0 (its duplicates); paper mode keeps
    them in join order (the same r leave), never offers a pick again and stops early if the class
    runs dry. ``scores``: a :class:`~.scores.ReferenceScores` or :class:`~.scores.PaperScores`.
    """
    picks, values = [core_pos], [math.nan]
    taken = np.zeros(distances.size, dtype=bool)
    taken[core_pos] = True
    cand = denoised
    drop = denoised.size // quota
    while len(picks) < quota:
        last = picks[-1]
        near = distances.from_member(last)[cand]
        if reference:
            cand = cand[np.argsort(near, kind="stable")[drop:]]
        else:
            cand = cand[~(first_smallest(near, drop) | taken[cand])]
            if not cand.size:
                break
        if last != core_pos:
            scores.penalise(last)
        score = scores.score(cand)
        best = int(np.argmin(score))
        last = int(cand[best])
        picks.append(last)
        values.append(float(score[best]))
        taken[last] = True
    return picks, values


@dataclass(frozen=True)
class PickedClass:
    """One class after its picks (paper mode), kept in case some class ran dry: its
    ``scores`` (finished: in the state its next pick would see), sample ``member_ids``, the
    member positions it ``picks``ed and its ``denoised`` member positions."""

    scores: PaperScores
    member_ids: np.ndarray
    picks: list[int]
    denoised: np.ndarray


def top_up(classes: list[PickedClass], need: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``need`` best members not picked, over all ``classes`` (paper mode, some class ran
    dry), and their scores: denoised members first, then by score in the state the class's next
    pick would see, then by id. Stale scores are lower bounds, so only those that can still rank
    are computed.
    """
    ids, keys, stale, owner, where = [], [], [], [], []
    for c, done in enumerate(classes):
        left = np.ones(done.member_ids.size, dtype=bool)
        left[done.picks] = False
        rest = np.flatnonzero(left)
        outside = np.ones(done.member_ids.size, dtype=bool)
        outside[done.denoised] = False
        bound, is_stale = done.scores.bound(rest)
        ids.append(done.member_ids[rest])
        keys.append(np.stack([outside[rest], bound]))
        stale.append(is_stale)
        owner.append(np.full(rest.size, c))
        where.append(rest)
    ids, keys, stale = np.concatenate(ids), np.concatenate(keys, axis=1), np.concatenate(stale)
    owner, where = np.concatenate(owner), np.concatenate(where)
    # In order of the bounds, every stale score up to the need-th exact one could still rank.
    ranked = np.lexsort((ids, keys[1], keys[0]))
    reach = np.searchsorted(np.cumsum(~stale[ranked]), need) + 1
    todo = ranked[:reach][stale[ranked[:reach]]]
    for c in np.unique(owner[todo]):
        mine = todo[owner[todo] == c]
        keys[1, mine] = classes[c].scores.score(where[mine])
    best = np.lexsort((ids, keys[1], keys[0]))[:need]
    return ids[best], keys[1, best]
