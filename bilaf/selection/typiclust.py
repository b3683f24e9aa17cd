"""TypiClust (Hacohen, Dekel & Weinshall, "Active Learning on a Budget", ICML 2022).

Facts taken from the paper:
- cluster the embedding with k-means into |L| + B clusters (|L| = already labeled; none here, so B);
- query, from each of the B largest uncovered clusters (no labeled or selected sample yet), its most
  typical sample;
- typicality(x) = 1 / mean Euclidean distance from x to its K = 20 nearest neighbours, computed
  among the members of x's cluster;
- clusters smaller than 5 are ignored, to avoid picking outliers.

Choices of ours where the paper is silent: "ignored unless needed" means a small cluster is used
only once every larger cluster is exhausted (the next pick from a covered cluster is its most
typical sample not yet taken); a cluster of m <= K members uses K = m - 1 neighbours; ties go to the
lower cluster id and the lower sample index. The features are used as given (raw).
"""

from __future__ import annotations

import heapq
from typing import Any

import numpy as np
import torch

from bilaf.selection.base import check_option, register
from bilaf.selection.kmeans import check_kmeans_options, fit_kmeans
from bilaf.selection.neighbors import knn_mean_distance, load_centred


def typicality_order(x: torch.Tensor, k: int) -> np.ndarray:
    """Row positions of ``x`` from most to least typical (ties: lower position first)."""
    if x.shape[0] == 1:
        return np.zeros(1, dtype=np.int64)
    spread = knn_mean_distance(x, min(k, x.shape[0] - 1)).cpu().numpy()
    return np.argsort(spread, kind="stable")


@register()
def typiclust(
    features: Any,
    budget: int,
    seed: int,
    *,
    k_neighbors: int = 20,
    min_cluster_size: int = 5,
    iters: int = 100,
    tol: float = 1e-4,
    device: str | None = None,
) -> np.ndarray:
    """TypiClust on ``budget`` k-means clusters; picks in order (largest cluster first)."""
    check_option(k_neighbors, "typiclust k_neighbors", int, low=1)
    check_option(min_cluster_size, "typiclust min_cluster_size", int, low=1)
    check_kmeans_options(iters, tol)
    x = load_centred(features, device)
    _, labels = fit_kmeans(x, budget, np.random.default_rng(seed), iters, tol)
    labels_np = labels.cpu().numpy()
    sizes = np.bincount(labels_np, minlength=budget)
    members = np.split(np.argsort(labels_np, kind="stable"), np.cumsum(sizes)[:-1])
    # Priority: large clusters before small ones, then fewest picks so far, then size, then id.
    heap = [
        (bool(sizes[c] < min_cluster_size), 0, -int(sizes[c]), c)
        for c in np.flatnonzero(sizes).tolist()
    ]
    heapq.heapify(heap)
    ranked: dict[int, np.ndarray] = {}
    picks: list[int] = []
    while len(picks) < budget:
        small, taken, neg_size, c = heapq.heappop(heap)
        if c not in ranked:
            ids = members[c]
            ranked[c] = ids[typicality_order(x[torch.from_numpy(ids).to(x.device)], k_neighbors)]
        picks.append(int(ranked[c][taken]))
        if taken + 1 < -neg_size:
            heapq.heappush(heap, (small, taken + 1, neg_size, c))
    return np.asarray(picks, dtype=np.int64)
