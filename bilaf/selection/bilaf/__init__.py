"""BiLAF boundary selection (Boundary Matters: A Bi-Level Active Finetuning Method, NeurIPS 2024).

Given core samples (ActiveFT's, SPEC §2), BiLAF (§3.2-3.3 of the paper, SPEC §3) spends the rest of
the budget on samples near the boundaries between the cores' pseudo-classes. ``mode="reference"``
reproduces the official code index for index, quirks included (SPEC §3 lists them);
``mode="paper"`` (default) follows the paper's text and fixes them.

Read :mod:`.plain` first: it is SPEC §3 written out plainly, both modes, slow. The rest of the
package is the same selection made fast, and the tests hold the two equal index for index. Each
step, in the plain module and in the fast code:

===================================  ===========================  ===============================
SPEC §3 step                         plain (:mod:`.plain`)        fast
===================================  ===========================  ===============================
0. pseudo-classes                    ``pseudo_classes``           ``pseudo_classes.assign_classes``
                                                                  (``nearest_cores``)
0. opponents o(i)                    ``BoundaryScore.nearest``    ``assign_classes``
                                                                  (``Opponents``)
1. denoise (density, join order)     ``denoise``, ``density``     ``denoise.denoise_class``
                                                                  (``denoised_size`` beforehand)
2. d_intra (Eq. 5)                   in ``plain_bilaf``           ``denoise.denoise_class``
2. BS, reference (nearest opponent)  ``BoundaryScore``            ``scores.ReferenceScores``
2. BS, paper (Eq. 7, all opponents)  ``BoundaryScore``            ``scores.PaperScores``
3. budget split                      ``allocate``                 ``picks.allocate``
                                                                  (``check_reference_budget``)
4. iterative pick                    ``pick``                     ``picks.pick``
4. penalty ``pen[o(last)] *= δ``     ``BoundaryScore.penalise``   ``*Scores.penalise``
4. paper: top-up of dry classes      in ``plain_bilaf``           ``picks.top_up``
5. output: core order, pick order    ``plain_bilaf``              ``select_boundary``
===================================  ===========================  ===============================

:mod:`.distances` holds the within-class distances every fast step reads: float64 where an order
depends on them, without n×n or n×K matrices. :func:`bilaf` is the registered method (option and
core checks, then :func:`select_boundary`). :class:`Limits` are the sizes at which the fast code
changes how it computes, never what it picks. The nearest-core pass's device is resolved in one
place, ``pseudo_classes._torch_device``.

Reference-mode details the SPEC leaves open. Settled by the six official fixtures (all match):
the penalty vector starts at 1 in every pseudo-class (one vector shared by all classes fails every
fixture with δ > 1), and the density bug as SPEC §3 words it (the true k-NN mean fails all six).
Not pinned by the fixtures (they have no exact ties, and float and exact rounding agree on them),
so chosen as the plain reading and checked against :mod:`.plain` on data with ties: sorts are
stable (candidates tie by current order, density scores by member position, the k nearest
assigned members by join position), the opponent o(i) is the second core in (distance, core
position) order, and ``step``, ``r`` and the kept count use ``int(m * p_in)``, ``|U| // a`` and
``int(len * (1 - p_rm))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bilaf.selection.base import SelectionError, check_ids, check_option, register, select
from bilaf.selection.bilaf.denoise import DENSE_MERGE, denoise_class, denoised_size
from bilaf.selection.bilaf.distances import (
    BLOCK_ELEMENTS,
    STORE_LIMIT,
    ClusterDistances,
    MatrixBuffer,
    load_rows,
)
from bilaf.selection.bilaf.picks import PickedClass, allocate, check_reference_budget, pick, top_up
from bilaf.selection.bilaf.pseudo_classes import OPPONENTS, assign_classes
from bilaf.selection.bilaf.scores import REFILL, CoreRows, PaperScores, ReferenceScores

MODES = ("paper", "reference")
CORE_METHODS = ("activeft", "kmeans", "fds", "random")  # the paper's Table 6 core selectors
WHOLE_MATRIX = 2048  # paper mode: classes up to this size get their whole matrix (measured)


@dataclass(frozen=True)
class Limits:
    """Where the fast code switches how it computes; the picks never depend on them. The
    defaults are measured; tests set them small to send small pools down large pools' paths.

    ``whole_matrix``: paper-mode classes up to this size get their whole distance matrix, larger
    ones denoising blocks only; ``store_limit``: a kept matrix, or kept denoising blocks, has at
    most this² entries; ``block_elements``: entries of one computed distance block;
    ``dense_merge``: denoising blocks up to this many entries are merged whole; ``opponents``:
    nearest opponents listed per sample (paper mode); ``refill``: opponents listed again once a
    list is all penalised.
    """

    whole_matrix: int = WHOLE_MATRIX
    store_limit: int = STORE_LIMIT
    block_elements: int = BLOCK_ELEMENTS
    dense_merge: int = DENSE_MERGE
    opponents: int = OPPONENTS
    refill: int = REFILL


def _check_options(mode: str, k: int, p_in: float, p_rm: float, delta: float) -> None:
    """Raise SelectionError for an option outside its valid range."""
    if mode not in MODES:
        raise SelectionError(f"unknown bilaf mode {mode!r}; use one of {list(MODES)}")
    check_option(k, "k (density neighbours)", int, low=1)
    check_option(p_in, "p_in", low=0, high=1, open_low=True)
    check_option(p_rm, "p_rm", low=0, high=1, open_high=True)
    check_option(delta, "delta", low=1)


def _resolve_cores(
    features: Any,
    budget: int,
    seed: int,
    cores: Any,
    n_cores: Any,
    device: Any,
    labeled: np.ndarray | None = None,
    core_method: str = "activeft",
) -> np.ndarray:
    """The core ids in the given order: ``cores`` checked, or ``n_cores`` picked by
    ``core_method`` (which uses the ``labeled`` samples as it does)."""
    n = features.shape[0]
    if cores is not None:
        ids = check_ids(cores, n, "cores")
        if n_cores is not None and n_cores != ids.size:
            raise SelectionError(
                f"n_cores {n_cores} disagrees with the {ids.size} cores given: pass only one"
            )
    elif n_cores is None:
        raise SelectionError(
            "bilaf needs core samples: pass cores=[...] or n_cores=K to pick them with ActiveFT"
        )
    else:
        check_option(n_cores, "n_cores", int, low=1)
        if budget < n_cores:
            raise SelectionError(
                f"budget {budget} < {n_cores} cores: raise the budget or lower the core count"
            )
        if core_method not in CORE_METHODS:
            raise SelectionError(
                f"core_method {core_method!r}: use one of {', '.join(CORE_METHODS)}"
            )
        on = {"device": device} if core_method != "random" else {}
        ids = select(core_method, features, int(n_cores), seed, labeled=labeled, **on)
    if budget < ids.size:
        raise SelectionError(
            f"budget {budget} < {ids.size} cores: raise the budget or lower the core count"
        )
    return ids


@register(allows_duplicates=lambda o: o.get("mode") == "reference")
def bilaf(
    features: Any,
    budget: int,
    seed: int,
    *,
    cores: Any = None,
    n_cores: int | None = None,
    mode: str = "paper",
    k: int = 10,
    p_in: float = 0.1,
    p_rm: float = 0.1,
    delta: float = 1.1,
    normalize: bool = False,
    labeled: np.ndarray | None = None,
    return_scores: bool = False,
    core_method: str = "activeft",
    device: Any = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """BiLAF: the cores plus ``budget`` − K boundary samples, clusters in core order (SPEC §3);
    with ``return_scores`` also each pick's boundary score when it was picked (NaN for a core).

    ``cores`` (ids, in their order) or ``n_cores`` (picked with ``seed`` by ``core_method``:
    ActiveFT, the paper's, or K-Means, FDS, random as in its Table 6) give the cores.
    ``k``, ``p_in``, ``p_rm``, ``delta``: density neighbours, growth step, removal fraction and
    opponent penalty (BiLAF §3.2-3.3). ``normalize`` L2-normalises the features first (the paper's
    text; the official code uses raw features). ``device`` only speeds up the nearest-core pass.

    Paper mode: every core leads its own class and gets at least one pick, a pick never repeats,
    and classes that run dry are topped up with the best remaining scores over the pool (denoised
    members first), appended after the classes. Reference mode raises SelectionError where the
    official code breaks (identical cores, a class with no budget).

    ``labeled`` samples (ids; paper mode) are cores already: each leads a pseudo-class of its own
    that gets its share of boundary picks, and is left out of the output, so the ``budget`` is
    the K new cores and the boundary picks of every class.
    """
    _check_options(mode, k, p_in, p_rm, delta)
    core_ids = _resolve_cores(features, budget, seed, cores, n_cores, device, labeled, core_method)
    done = np.zeros(0, dtype=np.int64) if labeled is None else np.asarray(labeled, np.int64)
    if done.size and mode == "reference":
        raise SelectionError(
            "labeled samples need mode='paper': the official code (reference) has no labeled set"
        )
    if np.isin(core_ids, done).any():
        raise SelectionError("the cores include labeled samples: they are cores already")
    if mode == "reference" and core_ids.size < 2:
        raise SelectionError(
            "reference mode needs at least 2 cores (it scores by the nearest other)"
        )
    in_memory = isinstance(features, np.ndarray) and features.dtype == np.float32 and not normalize
    rows = features if in_memory else load_rows(features, normalize)
    # The labeled samples lead classes of their own, first; they are left out of the output.
    picks, scores = select_boundary(
        rows,
        np.concatenate([done, core_ids]),
        budget + done.size,
        mode=mode,
        k=k,
        p_in=p_in,
        p_rm=p_rm,
        delta=delta,
        device=device,
    )
    new = ~np.isin(picks, done)
    return (picks[new], scores[new]) if return_scores else picks[new]


def select_boundary(
    rows: np.ndarray,
    core_ids: np.ndarray,
    budget: int,
    *,
    mode: str,
    k: int,
    p_in: float,
    p_rm: float,
    delta: float,
    device: Any = None,
    limits: Limits = Limits(),
) -> tuple[np.ndarray, np.ndarray]:
    """SPEC §3 steps 0-5 on float32 ``rows`` (n × d, already normalised if asked) from the
    cores ``core_ids`` (int64, in order) to ``budget`` int64 ids, and each pick's boundary score
    when it was picked (float64; NaN for a core): what :func:`bilaf` runs once it has checked
    the options, the cores and the budget (see there for the options, their defaults and what
    each mode guarantees). ``limits`` change how it computes, never the result.
    """
    reference = mode == "reference"
    core_rows = np.asarray(rows[core_ids], dtype=np.float32)
    classes = assign_classes(
        rows,
        core_rows,
        core_ids,
        reference,
        device,
        opponents=limits.opponents,
        block_elements=limits.block_elements,
    )
    sizes = classes.sizes
    kept = denoised_size(sizes, p_in, p_rm, reference)
    alloc = allocate(budget, kept, reference)
    if reference:
        check_reference_budget(core_ids, sizes, kept, alloc, p_rm)

    # reference: float64 so near-ties order like the official cdist; paper: float32 is enough
    dtype = np.float64 if reference else np.float32
    buffer = MatrixBuffer(dtype, int(sizes.max()), store_limit=limits.store_limit)
    cores = CoreRows.of(core_rows)
    out, values, picked = [], [], []
    for j in range(core_ids.size):  # one class at a time: its distance matrix lives in the buffer
        member_ids = classes.members(j)
        core = int(np.searchsorted(member_ids, core_ids[j]))
        # The density bug reads arbitrary pairs: the whole matrix. So do small classes, where
        # one product costs less than the calls of a block per round (measured).
        whole = reference or member_ids.size <= limits.whole_matrix
        distances = ClusterDistances(
            rows[member_ids],
            core_rows[j],
            dtype=dtype,
            buffer=buffer if whole else None,
            store_limit=limits.store_limit,
            block_elements=limits.block_elements,
        )
        scratch = None if whole else buffer.flat(min(member_ids.size**2, limits.store_limit**2))
        denoised, intra = denoise_class(
            distances, core, k, p_in, p_rm, reference, scratch, dense_merge=limits.dense_merge
        )
        opponents = classes.opponents.of(member_ids)
        if reference:
            scores = ReferenceScores(opponents, intra, delta)
        else:
            scores = PaperScores(
                distances,
                own=j,
                opponents=opponents,
                intra=intra,
                delta=delta,
                pool_rows=rows,
                member_ids=member_ids,
                cores=cores,
                refill=limits.refill,
                block_elements=limits.block_elements,
            )
        picks, picked_scores = pick(distances, denoised, core, int(alloc[j]), scores, reference)
        out.append(member_ids[picks])
        values += picked_scores
        if not reference:  # kept in case a class runs dry: what its next pick would see
            scores.finish(picks[-1] if picks[-1] != core else None)
            picked.append(PickedClass(scores, member_ids, picks, denoised))
    out, values = np.concatenate(out).astype(np.int64), np.asarray(values, dtype=np.float64)
    if out.size == budget:
        return out, values

    # Paper mode, some class ran dry: the best remaining scores over the pool fill the budget.
    more, more_values = top_up(picked, budget - out.size)
    return np.concatenate((out, more)).astype(np.int64), np.concatenate((values, more_values))
