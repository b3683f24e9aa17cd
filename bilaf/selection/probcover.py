"""ProbCover (Yehuda, Dekel, Hacohen & Weinshall, NeurIPS 2022): greedy max coverage of δ-balls.

Facts used from the paper: features are L2-normalised; the graph joins x to every x' with
||x - x'|| < δ (x covers the points of its δ-ball, itself included); each step picks the sample
whose ball holds the most still-uncovered points and marks them covered; δ is the largest value on
a grid whose ball purity (the share of samples whose δ-ball holds one k-means pseudo-label only) is
at least α = 0.95. The paper's k is the number of classes; with no labels here it defaults to the
budget. Once everything is covered, the rest of the budget is filled with seeded random samples.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from bilaf.selection.base import SelectionError, check_option, register
from bilaf.selection.kmeans import check_kmeans_options, fit_kmeans
from bilaf.selection.neighbors import load_tensor, resolve_device, row_chunks

# δ candidates when none is given: 0.05 to 1.00 in steps of 0.05 (L2 distance on the unit sphere).
DELTA_GRID = tuple(round(0.05 * i, 2) for i in range(1, 21))


def purity_radii(x: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Per unit row: distance to the nearest row with another label (inf if there is none).

    A δ-ball is pure exactly when this radius is >= δ, so purity(δ) = mean(radius >= δ).
    """
    n = x.shape[0]
    out = torch.empty(n, dtype=torch.float32, device=x.device)
    for start, stop in row_chunks(n, n):
        sims = x[start:stop] @ x.T
        sims[labels[start:stop, None] == labels[None, :]] = -math.inf
        out[start:stop] = (2.0 - 2.0 * sims.amax(dim=1)).clamp_(min=0.0).sqrt_()
    return out.cpu().numpy()


def choose_delta(radii: np.ndarray, alpha: float, grid: tuple[float, ...]) -> float:
    """The largest ``grid`` value whose ball purity is at least ``alpha``."""
    ok = [d for d in grid if float(np.mean(radii >= d)) >= alpha]
    if not ok:
        raise SelectionError(
            f"no δ in {list(grid)} reaches ball purity {alpha}: pass delta= explicitly, "
            "a finer delta_grid, or fewer clusters"
        )
    return max(ok)


def auto_delta(
    x: torch.Tensor,
    clusters: int,
    alpha: float,
    grid: tuple[float, ...],
    rng: np.random.Generator,
    iters: int,
    tol: float,
) -> float:
    """The paper's δ: the largest ``grid`` value with purity >= ``alpha`` on k-means labels."""
    _, labels = fit_kmeans(x, clusters, rng, iters, tol)
    return choose_delta(purity_radii(x, labels), alpha, grid)


def delta_graph(x: torch.Tensor, delta: float, max_edges: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR ``(indptr, indices)`` of the δ-ball graph: row i lists every j with ||x_i - x_j|| < δ.

    Rows are unit vectors, so ||x_i - x_j||² = 2 - 2 x_i·x_j; each row lists itself. Built in row
    blocks; never a dense n x n matrix.
    """
    n = x.shape[0]
    threshold = 1.0 - delta * delta / 2.0
    counts = np.zeros(n, dtype=np.int64)
    parts: list[np.ndarray] = []
    total = 0
    for start, stop in row_chunks(n, n):
        inside = (x[start:stop] @ x.T) > threshold
        own = torch.arange(start, stop, device=x.device)
        inside[own - start, own] = True
        rows, cols = (t.cpu().numpy() for t in inside.nonzero(as_tuple=True))
        total += cols.size
        if total > max_edges:
            raise SelectionError(
                f"the δ={delta:g} graph has over {max_edges} edges: lower delta or raise max_edges"
            )
        counts[start:stop] = np.bincount(rows, minlength=stop - start)
        parts.append(cols.astype(np.int32 if n < 2**31 else np.int64))
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr, np.concatenate(parts)


def gather_rows(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The CSR rows ``rows`` of a graph, concatenated."""
    starts, lengths = indptr[rows], indptr[rows + 1] - indptr[rows]
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    return indices[offsets + np.arange(lengths.sum())]


def greedy_cover(
    indptr: np.ndarray, indices: np.ndarray, budget: int, tie_rank: np.ndarray
) -> list[int]:
    """Up to ``budget`` picks in order, each covering the most uncovered points; among equal
    gains the lowest ``tie_rank`` (a permutation of the ids: seeded, so never storage order,
    which walks a class-ordered pool row by row once the balls are small).

    Stops once every point is covered. A point is covered once, and then every ball holding it
    loses one from its gain (found through the reversed graph), so the loop costs O(edges + n·B).
    """
    n = indptr.size - 1
    tie_break = (n - 1 - np.asarray(tie_rank, dtype=np.int64)).astype(np.int64)
    holders = np.repeat(np.arange(n, dtype=indices.dtype), np.diff(indptr))
    rev_indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(indices, minlength=n), out=rev_indptr[1:])
    rev_indices = holders[np.argsort(indices, kind="stable")]
    gain = np.diff(indptr)
    covered = np.zeros(n, dtype=bool)
    picks: list[int] = []
    while len(picks) < budget:
        best = int(np.argmax(gain.astype(np.int64) * n + tie_break))
        if gain[best] == 0:
            break
        ball = indices[indptr[best] : indptr[best + 1]]
        new = ball[~covered[ball]]
        covered[new] = True
        gain -= np.bincount(gather_rows(rev_indptr, rev_indices, new), minlength=n)
        picks.append(best)
    return picks


def check_options(
    delta: float | None, alpha: float, clusters: int, grid: tuple[float, ...], n: int
) -> None:
    """Raise SelectionError naming the first bad ProbCover option."""
    check_option(delta, "probcover delta", low=0, open_low=True, optional=True)
    check_option(alpha, "probcover alpha (purity threshold)", low=0, high=1, open_low=True)
    check_option(clusters, "probcover clusters", int, low=1, high=n)  # n: the pool size
    if not grid or not all(isinstance(d, (int, float)) and 0 < d < math.inf for d in grid):
        raise SelectionError(f"probcover delta_grid must list positive numbers, got {grid!r}")


@register()
def probcover(
    features: Any,
    budget: int,
    seed: int,
    *,
    delta: float | None = None,
    alpha: float = 0.95,
    clusters: int | None = None,
    delta_grid: tuple[float, ...] = DELTA_GRID,
    iters: int = 100,
    tol: float = 1e-4,
    max_edges: int = 100_000_000,
    device: str | None = None,
) -> np.ndarray:
    """ProbCover picks in greedy order (equal gains in a seeded random order), then seeded random
    unpicked samples once all are covered.

    ``delta`` (on L2-normalised features) is used as given; ``None`` takes the largest
    ``delta_grid`` value with purity >= ``alpha`` w.r.t. k-means pseudo-labels with ``clusters``
    centres: the paper's k is the number of classes, which the pipeline passes (an unlabeled
    pool: its BiLAF core count); the default here, the budget, makes δ small at large budgets.
    """
    n = features.shape[0]
    clusters = budget if clusters is None else clusters
    check_options(delta, alpha, clusters, tuple(delta_grid), n)
    check_kmeans_options(iters, tol)
    x = torch.nn.functional.normalize(load_tensor(features, resolve_device(device)), dim=1)
    rng = np.random.default_rng(seed)
    if delta is None:
        delta = auto_delta(x, int(clusters), alpha, tuple(delta_grid), rng, iters, tol)
    # Tie ranks from a stream of their own: a given δ and the automatic one break ties alike.
    ties = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0]).permutation(n)
    picks = greedy_cover(*delta_graph(x, float(delta), max_edges), budget, ties)
    if len(picks) < budget:
        rest = np.setdiff1d(np.arange(n), picks)
        picks.extend(rng.choice(rest, size=budget - len(picks), replace=False).tolist())
    return np.asarray(picks, dtype=np.int64)
