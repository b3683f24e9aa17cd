"""K-Means baseline: B clusters, then the sample nearest each centre (BiLAF paper, Table 1).

Clustering is seeded k-means++ (Arthur & Vassilvitskii, SODA 2007) followed by Lloyd iterations,
all on Euclidean distance with row-chunked distance blocks (n x B only chunk by chunk). TypiClust
and ProbCover reuse :func:`fit_kmeans`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bilaf.selection.base import check_option, register
from bilaf.selection.neighbors import (
    load_centred,
    nearest_centre,
    row_chunks,
    sq_distances,
    sq_norms,
)

# Candidates kept per centre for the readout; a centre whose all are taken falls back to a scan.
READOUT_CANDIDATES = 8


def check_kmeans_options(iters: int, tol: float) -> None:
    """Raise SelectionError unless ``iters`` >= 0 is an integer and ``tol`` >= 0 is finite."""
    check_option(iters, "k-means iters", int, low=0)
    check_option(tol, "k-means tol", low=0)


def kmeans_plus_plus(
    x: torch.Tensor, x_sq: torch.Tensor, k: int, rng: np.random.Generator
) -> torch.Tensor:
    """k-means++ seeding: sample ids of ``k`` initial centres, each drawn with probability ∝ D².

    D² is the squared distance to the nearest centre chosen so far; when every unchosen sample
    duplicates a chosen one (all D² = 0), the next is drawn uniformly from the unchosen.
    """
    n = x.shape[0]
    chosen = np.zeros(n, dtype=bool)
    ids = [int(rng.integers(n))]
    min_d2 = torch.full((n,), float("inf"), device=x.device)
    d2 = torch.empty(n, device=x.device)
    for _ in range(k - 1):
        last = ids[-1]
        chosen[last] = True
        torch.addmv(x_sq + x_sq[last], x, x[last], alpha=-2.0, out=d2)
        torch.minimum(min_d2, d2.clamp_(min=0), out=min_d2)
        min_d2[last] = 0.0
        cum = torch.cumsum(min_d2, dim=0, dtype=torch.float64)
        total = float(cum[-1])
        if total > 0:
            target = torch.tensor([rng.random() * total], dtype=torch.float64, device=x.device)
            ids.append(min(int(torch.searchsorted(cum, target, right=True)), n - 1))
        else:
            ids.append(int(rng.choice(np.flatnonzero(~chosen))))
    return torch.tensor(ids, dtype=torch.int64, device=x.device)


def lloyd_step(
    x: torch.Tensor, x_sq: torch.Tensor, centres: torch.Tensor, rows: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Lloyd iteration: (labels of ``x`` under ``centres``, the new centres).

    A new centre is the mean of its members (summed in float64); an empty cluster keeps its centre.
    """
    k, d = centres.shape
    labels, _ = nearest_centre(x, x_sq, centres, rows)
    sums = torch.zeros((k, d), dtype=torch.float64, device=x.device)
    for start, stop in row_chunks(x.shape[0], d, rows):
        sums.index_add_(0, labels[start:stop], x[start:stop].double())
    counts = torch.bincount(labels, minlength=k)
    new = torch.where(
        (counts > 0)[:, None], sums / counts.clamp(min=1)[:, None], centres.double()
    ).float()
    return labels, new


def fit_kmeans(
    x: torch.Tensor, k: int, rng: np.random.Generator, iters: int, tol: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means++ then up to ``iters`` Lloyd iterations: (centres (k, d), labels (n,)).

    Stops early once the summed squared centre shift is at most ``tol`` times the mean feature
    variance (scikit-learn's convention). The labels are recomputed for the final centres.
    """
    x_sq = sq_norms(x)
    centres = x[kmeans_plus_plus(x, x_sq, k, rng)]
    threshold = tol * float(x.var(dim=0, correction=0).mean())
    for _ in range(iters):
        _, new = lloyd_step(x, x_sq, centres)
        shift = float(((new - centres) ** 2).sum())
        centres = new
        if shift <= threshold:
            break
    labels, _ = nearest_centre(x, x_sq, centres)
    return centres, labels


def nearest_distinct(x: torch.Tensor, x_sq: torch.Tensor, centres: torch.Tensor) -> np.ndarray:
    """For centres in order, the nearest sample not already taken by an earlier centre."""
    n, k = x.shape[0], centres.shape[0]
    m = min(n, READOUT_CANDIDATES)
    c_sq = sq_norms(centres)
    best_d = torch.full((k, m), float("inf"), device=x.device)
    best_i = torch.zeros((k, m), dtype=torch.int64, device=x.device)
    for start, stop in row_chunks(n, k):
        dist = sq_distances(centres, x[start:stop], c_sq, x_sq[start:stop])
        ids = torch.arange(start, stop, device=x.device).expand(k, -1)
        merged_d, pos = torch.cat([best_d, dist], dim=1).topk(m, dim=1, largest=False)
        best_i = torch.cat([best_i, ids], dim=1).gather(1, pos)
        best_d = merged_d
    candidates = best_i.cpu().numpy()
    taken = np.zeros(n, dtype=bool)
    picks = np.empty(k, dtype=np.int64)
    for j in range(k):
        free = candidates[j][~taken[candidates[j]]]
        if free.size:
            pick = int(free[0])
        else:
            dist = sq_distances(centres[j : j + 1], x, c_sq[j : j + 1], x_sq)[0]
            dist[torch.from_numpy(taken).to(x.device)] = float("inf")
            pick = int(torch.argmin(dist))
        taken[pick] = True
        picks[j] = pick
    return picks


@register()
def kmeans(
    features: Any,
    budget: int,
    seed: int,
    *,
    iters: int = 100,
    tol: float = 1e-4,
    device: str | None = None,
) -> np.ndarray:
    """K-Means with ``budget`` clusters; per centre (k-means++ order) its nearest untaken sample."""
    check_kmeans_options(iters, tol)
    x = load_centred(features, device)
    centres, _ = fit_kmeans(x, budget, np.random.default_rng(seed), iters, tol)
    return nearest_distinct(x, sq_norms(x), centres)
