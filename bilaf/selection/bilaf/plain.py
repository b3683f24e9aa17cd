"""BiLAF written out plainly: SPEC §3, both modes, for reading and for checking the fast code.

This is the definition; the rest of the package is the same selection made fast (see its
docstring for which function does each step there). Everything here is float64 distances from
differences (full matrices, like the official code's scipy ``cdist``), Python loops and stable
sorts for every "ties by position", so it is slow: a few thousand samples take a second or two.
The tests hold :func:`~bilaf.selection.bilaf.select_boundary` equal to :func:`plain_bilaf`
index for index.

Both modes follow the same steps. ``reference`` is the official code, quirks included (the
density bug, the nearest opponent only, repeated picks); ``paper`` is the paper's text: the true
k-NN density, Eq. 7 over every opponent class, no repeats, and a top-up when a class runs dry.
Options are not checked: the fast entry point refuses what the official code breaks on (fewer
than 2 cores or identical cores in reference mode, a class with no budget); here it fails or
misbehaves. ``normalize=True`` of the fast entry point is this on the normalised features
(:func:`~bilaf.selection.bilaf.distances.prepare`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

MIN_DENOISE = 10  # classes smaller than this are not denoised (SPEC §3 step 1)


def pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Every float64 distance from rows ``a`` to rows ``b``, from differences (like ``cdist``)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


def pseudo_classes(to_cores: np.ndarray, cores: np.ndarray, mode: str) -> np.ndarray:
    """Step 0: each sample's class, the position of its nearest core (ties: lowest position).
    Paper mode puts every core in its own class (an identical core would take it otherwise)."""
    own = np.argmin(to_cores, axis=1)
    if mode == "paper":
        own[cores] = np.arange(len(cores))
    return own


def density(row: np.ndarray, assigned: list[int], k: int, mode: str) -> float:
    """Step 1's density score of one unassigned member: the mean distance to its ``k`` nearest
    ``assigned`` members (``row``: its distances to all members). The official code takes the k
    nearest by a stable sort, but then reads the row at their *positions in the assigned list*
    (reference mode keeps that bug); the paper means the true k-NN mean."""
    if mode == "reference":
        nearest = np.argsort(row[assigned], kind="stable")[:k]
        return row[nearest].mean()
    return np.sort(row[assigned])[:k].mean()


def denoise(dist: np.ndarray, core: int, k: int, p_in: float, p_rm: float, mode: str) -> list[int]:
    """Step 1 (BiLAF §3.2): one class's denoised member positions, in join order.

    ``dist``: the class's distance matrix; ``core``: the core's member position. Level 1 is the
    ``step`` members nearest the core (paper mode: the core first); each later round the ``step``
    unassigned members of lowest :func:`density` join, ties by position; the last ``p_rm`` of the
    join order is dropped (paper mode keeps at least one: the core). Classes under
    :data:`MIN_DENOISE` members are kept whole, in member order.
    """
    m = len(dist)
    if m < MIN_DENOISE:
        return list(range(m))
    step = max(1, int(m * p_in))
    ranked = [int(u) for u in np.argsort(dist[core], kind="stable")]
    if mode == "paper":
        ranked = [core, *(u for u in ranked if u != core)]
    order = ranked[:step]
    for _ in range(2, m // step + 1):
        waiting = [u for u in range(m) if u not in order]
        scores = [density(dist[u], order, k, mode) for u in waiting]
        order += [waiting[i] for i in np.argsort(scores, kind="stable")[:step]]
    kept = int(len(order) * (1 - p_rm))
    return order[: kept if mode == "reference" else max(1, kept)]


def allocate(budget: int, sizes: Sequence[int], mode: str) -> np.ndarray:
    """Step 3: a_j = ⌊B·|U_j|/Σ|U|⌋, then the remainder one at a time to the smallest allocation
    (ties: larger class, then lower index). Paper mode first gives every class at least 1 (its
    core), taking it back one at a time from the largest allocation (ties: smaller class, then
    higher index)."""
    sizes = np.asarray(sizes)
    n_cls = len(sizes)
    alloc = budget * sizes // sizes.sum()
    if mode == "paper":
        alloc = np.maximum(alloc, 1)
        while alloc.sum() > budget:
            alloc[min(range(n_cls), key=lambda j: (-alloc[j], sizes[j], -j))] -= 1
    while alloc.sum() < budget:
        alloc[min(range(n_cls), key=lambda j: (alloc[j], -sizes[j], j))] += 1
    return alloc


def ratio(num: float, den: float) -> float:
    """num / den, with 0/0 = 0 (a sample on an opponent core of a one-point class)."""
    return num / den if den > 0 else 0.0


class BoundaryScore:
    """SPEC §3 step 2 (BiLAF Eq. 5-7): boundary scores of the members of class ``own``, under
    step 4's penalties.

    ``to_cores``: the members' distances to every core; ``intra``: their d_intra, the mean
    distance to the denoised class (Eq. 5). o(u), a member's nearest opponent, is the nearest core
    other than ``own`` (ties: lowest position). Reference mode scores against it alone:
    BS(u) = (D(u, c_o)·pen[o] − d_intra(u)) / max(D(u, c_o), d_intra(u)). Paper mode is Eq. 7,
    the minimum of that term over every opponent class l. Each class starts with penalties 1;
    :meth:`penalise` multiplies o(last pick)'s by δ.
    """

    def __init__(
        self, to_cores: np.ndarray, own: int, intra: np.ndarray, delta: float, mode: str
    ) -> None:
        self.to_cores, self.intra, self.delta, self.mode = to_cores, intra, delta, mode
        self.others = [o for o in range(to_cores.shape[1]) if o != own]
        self.nearest = [
            min(self.others, key=lambda o, r=r: (r[o], o), default=None) for r in to_cores
        ]
        self.pen = np.ones(to_cores.shape[1])

    def penalise(self, u: int) -> None:
        if self.nearest[u] is not None:
            self.pen[self.nearest[u]] *= self.delta

    def __call__(self, u: int) -> float:
        """BS(u): low means near a boundary."""
        a = self.intra[u]
        if self.mode == "reference":  # the official score: only the nearest opponent, numpy 0/0
            o = self.nearest[u]
            d = self.to_cores[u, o]
            with np.errstate(divide="ignore", invalid="ignore"):
                return (d * self.pen[o] - a) / np.maximum(d, a)
        # Eq. 7: the minimum over every opponent class (none at all: the ratio's limit 1)
        terms = [
            ratio(self.pen[o] * self.to_cores[u, o] - a, max(self.to_cores[u, o], a))
            for o in self.others
        ]
        return min(terms, default=1.0)


def pick(
    dist: np.ndarray, denoised: list[int], core: int, quota: int, score: BoundaryScore, mode: str
) -> tuple[list[int], list[float]]:
    """SPEC §3 step 4 (BiLAF §3.3): ``quota`` member positions picked in one class, core first,
    and the score each had when picked (NaN for the core).

    The candidates start as the ``denoised`` members in join order, the core included; r =
    ⌊|U|/a⌋. Each round: sort the candidates by (distance to the last pick, position) and drop the
    first r; if the last pick is not the core, penalise its nearest opponent; pick the lowest
    score (the first candidate on ties). Reference mode keeps the rest in that sorted order and
    may pick a sample again (r = 0); paper mode keeps them in their order, removes the picks and
    stops when no candidate is left.
    """
    picks, values, cand, drop = [core], [math.nan], list(denoised), len(denoised) // quota
    while len(picks) < quota:
        ranked = np.argsort(dist[picks[-1], cand], kind="stable")
        if mode == "reference":
            cand = [cand[i] for i in ranked[drop:]]
        else:
            gone = set(ranked[:drop].tolist())
            cand = [c for i, c in enumerate(cand) if i not in gone and c not in picks]
            if not cand:
                break
        if picks[-1] != core:
            score.penalise(picks[-1])
        scores = [score(u) for u in cand]
        picks.append(cand[int(np.argmin(scores))])
        values.append(min(scores))
    return picks, values


def plain_bilaf(
    x: np.ndarray,
    cores: Sequence[int],
    budget: int,
    *,
    k: int,
    p_in: float,
    p_rm: float,
    delta: float,
    mode: str,
    with_scores: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """BiLAF (SPEC §3) on features ``x`` (n × d) from ``cores`` (ids, in order) to ``budget``
    ids, int64: the classes in core order, each in pick order (step 5); ``with_scores``: and
    each pick's score when picked (NaN for a core).

    Paper mode ends with the top-up: if classes ran dry, the best members not picked over all
    classes fill the budget, denoised members first, then by score in the state the class's next
    pick would see, then by id. ``k``, ``p_in``, ``p_rm``, ``delta``: density neighbours, growth
    step, removal fraction and opponent penalty, as for :func:`~bilaf.selection.bilaf.bilaf`
    (whose defaults are SPEC §3's).
    """
    x, cores = np.asarray(x, dtype=np.float64), np.asarray(cores)
    to_cores = pairwise_distances(x, x[cores])
    own = pseudo_classes(to_cores, cores, mode)  # step 0
    classes = []
    for j in range(len(cores)):
        members = np.flatnonzero(own == j)  # ascending sample index
        core = int(np.searchsorted(members, cores[j]))
        dist = pairwise_distances(x[members], x[members])
        classes.append((members, core, dist, denoise(dist, core, k, p_in, p_rm, mode)))  # step 1
    alloc = allocate(budget, [len(c[3]) for c in classes], mode)  # step 3

    out, values, leftovers = [], [], []
    for j, (members, core, dist, denoised) in enumerate(classes):
        intra = dist[:, denoised].mean(axis=1)  # step 2: d_intra, Eq. 5
        score = BoundaryScore(to_cores[members], j, intra, delta, mode)
        picks, picked_scores = pick(dist, denoised, core, alloc[j], score, mode)  # step 4
        out.extend(members[picks])
        values.extend(picked_scores)
        if mode == "paper":
            if picks[-1] != core:
                score.penalise(picks[-1])  # the state the next pick would see
            for u in range(members.size):
                if u not in picks:
                    leftovers.append((u not in denoised, score(u), int(members[u])))
    top = sorted(leftovers)[: budget - len(out)]  # paper: the top-up
    out.extend(i for *_, i in top)
    values.extend(s for _, s, _ in top)
    ids = np.array(out, dtype=np.int64)
    return (ids, np.array(values, dtype=np.float64)) if with_scores else ids
