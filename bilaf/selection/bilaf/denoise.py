"""SPEC §3 step 1 (BiLAF §3.2): denoise each pseudo-class by growing it outward from its core.

Level 1 is the ``step`` members nearest the core; each later round the ``step`` unassigned
members of lowest density score (mean distance to their k nearest assigned members) join; the
last ``p_rm`` of the join order is dropped. :func:`denoise_class` does it with each pair's distance
computed once, keeping for each unassigned member only its k nearest assigned members (merged
block by block, :func:`_merge_block`), and returns d_intra (Eq. 5, step 2) with the denoised
members, from the same blocks. :func:`denoised_size` says beforehand how many members survive, so
the budget can be split (step 3) before any class is denoised.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bilaf.selection.bilaf.distances import ClusterDistances
from bilaf.selection.bilaf.plain import MIN_DENOISE  # the spec's: one declaration

DENOISE_BLOCK = 1 << 20  # entries read from a whole matrix at once: a few MiB, reused (measured)
DENSE_MERGE = 1 << 16  # below this many new entries a denoising block is merged whole


def growth_step(m: Any, p_in: float) -> np.ndarray:
    """Members joining per denoising round: ``max(1, int(m * p_in))``, a float product as in the
    official code."""
    return np.maximum(1, (np.asarray(m) * p_in).astype(np.int64))


def denoised_size(m: Any, p_in: float, p_rm: float, reference: bool) -> np.ndarray:
    """Members a class of ``m`` keeps after denoising: a function of ``m`` alone, so the budget
    can be split before any class is denoised: ``int(step * rounds * (1 - p_rm))`` as in the
    official code."""
    m = np.asarray(m, dtype=np.int64)
    step = growth_step(m, p_in)
    kept = (m // step * step * (1 - p_rm)).astype(np.int64)
    return np.where(m < MIN_DENOISE, m, kept if reference else np.maximum(kept, 1))


def _merge_nearest(
    best_d: np.ndarray,
    best_p: np.ndarray | None,
    new_d: np.ndarray,
    new_p: np.ndarray,
    width: int,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Merge new distances (join positions ``new_p``, broadcast to ``new_d``) into each row's
    ``width`` nearest assigned members.

    Without positions (paper mode) only the values count. With positions (reference mode) the
    nearest are the smallest (distance, join position), as a stable argsort of the assigned row
    gives, and their join positions are kept (what the official code then misuses).
    """
    cat_d = np.concatenate((best_d, new_d), axis=1)
    if cat_d.shape[1] > width:
        part = np.partition(cat_d, width - 1, axis=1)
        if best_p is None:
            return part[:, :width], None
    if best_p is None:
        return cat_d, None
    cat_p = np.concatenate((best_p, np.broadcast_to(new_p, new_d.shape)), axis=1)
    if cat_d.shape[1] <= width:
        return cat_d, cat_p
    keep = cat_d <= part[:, width - 1 : width]
    tied = np.flatnonzero(np.count_nonzero(keep, axis=1) > width)
    if tied.size:  # an exact tie straddles the cut: keep the earliest joined
        keep[tied] = False
        keep[tied[:, None], np.lexsort((cat_p[tied], cat_d[tied]), axis=1)[:, :width]] = True
    return cat_d[keep].reshape(-1, width), cat_p[keep].reshape(-1, width)


def _merge_block(
    best_d: np.ndarray,
    best_p: np.ndarray | None,
    block: np.ndarray,
    first_new: int,
    width: int,
    dense_merge: int = DENSE_MERGE,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Merge ``block`` (unassigned members × new members, joined from position ``first_new``
    on) into each unassigned member's ``width`` nearest.

    Once rows are full, only an entry below its row's current worst can enter (an equal one
    joined later and loses the tie), and few do: one comparison finds them, rows with a few are
    merged with their entries padded by +inf, rows with many with their whole block row. Blocks
    of at most ``dense_merge`` entries are merged whole.
    """
    new_p = np.arange(first_new, first_new + block.shape[1])
    if best_d.shape[1] < width or block.size <= dense_merge:
        return _merge_nearest(best_d, best_p, block, new_p, width)
    rows, new_i = _below(block, best_d.max(axis=1))
    first = np.flatnonzero(np.diff(rows, prepend=-1))
    touched, count = rows[first], np.diff(np.append(first, rows.size))
    group = np.repeat(np.arange(touched.size), count)
    few = count <= width
    if few.any():
        hit = few[group]
        slot = np.cumsum(few) - 1
        at = (slot[group[hit]], np.flatnonzero(hit) - first[group[hit]])
        pad_d = np.full((int(few.sum()), int(count[few].max())), np.inf, dtype=block.dtype)
        pad_d[at] = block[rows[hit], new_i[hit]]
        pad_p = np.full(pad_d.shape, np.iinfo(np.int64).max)
        pad_p[at] = new_p[new_i[hit]]
        _merge_rows(best_d, best_p, touched[few], pad_d, pad_p, width)
    many = touched[~few]
    if many.size:
        _merge_rows(best_d, best_p, many, block[many], new_p, width)
    return best_d, best_p


def _below(block: np.ndarray, threshold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.nonzero(block < threshold[:, None])`` (by row, then column), faster when few pass:
    the comparison is scanned 8 bytes at a time and only non-zero words are looked into."""
    size = block.size
    mask = np.empty(-(-size // 8) * 8, dtype=bool)
    mask[size:] = False
    np.less(block, threshold[:, None], out=mask[:size].reshape(block.shape))
    words = np.flatnonzero(mask.view(np.uint64))
    word, byte = np.nonzero(mask.reshape(-1, 8)[words])
    return np.divmod(words[word] * 8 + byte, block.shape[1])


def _merge_rows(
    best_d: np.ndarray,
    best_p: np.ndarray | None,
    rows: np.ndarray,
    new_d: np.ndarray,
    new_p: np.ndarray,
    width: int,
) -> None:
    """:func:`_merge_nearest` on some ``rows`` of full nearest lists, written back in place."""
    merged = _merge_nearest(
        best_d[rows], None if best_p is None else best_p[rows], new_d, new_p, width
    )
    best_d[rows] = merged[0]
    if best_p is not None:
        best_p[rows] = merged[1]


def denoise_class(
    distances: ClusterDistances,
    core_pos: int,
    k: int,
    p_in: float,
    p_rm: float,
    reference: bool,
    scratch: np.ndarray | None = None,
    *,
    dense_merge: int = DENSE_MERGE,
    denoise_block: int = DENOISE_BLOCK,
) -> tuple[np.ndarray, np.ndarray]:
    """Denoised member positions in join order (BiLAF §3.2, SPEC §3 step 1), and every member's
    mean distance to them (d_intra, Eq. 5).

    Level 1 is the ``step`` members nearest the core; each later round adds the ``step``
    unassigned members of lowest density score (mean distance to their k nearest assigned
    members); the last ``p_rm`` of the join order is dropped. Reference mode keeps the official
    density bug: it averages ``D[u, p]`` over the k nearest members' *join positions* ``p``, read
    as member positions. Paper mode uses the true k-NN mean and always keeps the core, first.

    Each round needs only the distances from the unassigned members to the last round's: about
    half the matrix, each pair once, read ``denoise_block`` entries at a time from a whole
    matrix, or computed ``distances.block_elements`` at a time. Blocks that fit in ``scratch``
    are kept for d_intra. ``dense_merge``: see :func:`_merge_block`.
    """
    m = distances.size
    if m < MIN_DENOISE:
        return _kept_with_intra(distances, np.arange(m), max(m, 1), m, [])  # one round: no blocks
    step = int(growth_step(m, p_in))
    rounds = m // step
    ranked = np.argsort(distances.to_centre(), kind="stable")
    if not reference:
        ranked = np.concatenate(([core_pos], ranked[ranked != core_pos]))
    order = np.empty(step * rounds, dtype=np.int64)
    order[:step] = ranked[:step]
    waiting = np.ones(m, dtype=bool)
    waiting[order[:step]] = False
    unassigned = np.flatnonzero(waiting)
    best_d = np.empty((unassigned.size, 0), dtype=distances.dtype)
    best_p = np.empty((unassigned.size, 0), dtype=np.int64) if reference else None
    blocks: list | None = [] if scratch is not None else None  # (rows, cols, block) kept
    stored = 0
    limit = distances.block_elements if distances.full is None else denoise_block
    for done in range(step, step * rounds, step):
        width = min(k, done)
        per_block = max(1, limit // unassigned.size)
        for s in range(done - step, done, per_block):
            new = order[s : min(s + per_block, done)]
            size = unassigned.size * new.size
            out = None
            if blocks is not None and stored + size <= scratch.size:
                out = scratch[stored : stored + size].reshape(unassigned.size, new.size)
                stored += size
                blocks.append((unassigned, new, out))
            elif blocks is not None:  # no room: d_intra takes one more pass instead
                blocks = None
            block = distances.block(unassigned, new, out=out, disjoint=True)
            best_d, best_p = _merge_block(best_d, best_p, block, s, width, dense_merge)
        if best_p is not None:
            scores = distances.gather(unassigned, best_p).mean(axis=1)
        else:
            scores = best_d.mean(axis=1)
        joined = np.argsort(scores, kind="stable")[:step]
        order[done : done + step] = unassigned[joined]
        stay = np.ones(unassigned.size, dtype=bool)
        stay[joined] = False
        unassigned, best_d = unassigned[stay], best_d[stay]
        if best_p is not None:
            best_p = best_p[stay]
    kept = int(denoised_size(m, p_in, p_rm, reference))
    return _kept_with_intra(distances, order, step, kept, blocks)


def _kept_with_intra(
    distances: ClusterDistances,
    order: np.ndarray,
    step: int,
    kept: int,
    blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The denoised members (the first ``kept`` of the join ``order``) and every member's mean
    distance to them (d_intra). The denoising ``blocks`` (unassigned × new) hold every pair from
    different rounds but the last round's with the members that never joined; those and the
    pairs within a round are computed here. Without blocks (a whole matrix, or no room to keep
    them) one pass over the matrix does it."""
    denoised = order[:kept]
    if blocks is None:
        return denoised, distances.mean_to(denoised)
    m = distances.size
    weight = np.zeros(m, dtype=distances.dtype)  # 1 for the denoised members
    weight[denoised] = 1
    sums = np.zeros(m)
    for rows, cols, block in blocks:
        sums[rows] += block @ weight[cols]
        sums[cols] += weight[rows] @ block
    never = np.ones(m, dtype=bool)
    never[order] = False
    for s in range(0, kept, step):
        group = order[s : s + step]
        rows = group if s + step < order.size else np.concatenate((group, np.flatnonzero(never)))
        sums[rows] += distances.block(rows, group[weight[group] > 0]).sum(axis=1)
    return denoised, sums / max(kept, 1)
