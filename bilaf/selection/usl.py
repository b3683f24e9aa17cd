"""USL, training-free (Wang, Lian & Yu, "Unsupervised Selective Labeling for More Effective
Semi-Supervised Learning", ECCV 2022): representative samples from k-NN density, diverse ones from
B clusters and a regulariser that pushes each cluster's pick away from the other clusters' picks.

On L2-normalised features:
- density(x) = 1 / (mean cosine distance from x to its K nearest neighbours);
- k-means into B clusters; the first pick of each cluster is its densest member;
- then ``iters`` rounds: each cluster re-picks the member of largest utility
  density(x) - λ · Reg(x), Reg(x) = Σ_{picks s of the other clusters} 1 / ||x - s||^power,
  the regulariser smoothed over rounds by a moving average of weight ``momentum`` (started at
  the first round's value, so the first round is not damped).

Choices of ours where the paper is silent: a cluster k-means leaves empty gives its pick to the
unpicked sample of largest utility; ties go to the lower index. ``points`` estimates the density
on a seeded subset of reference rows (the stated way past a few hundred thousand rows on a CPU).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bilaf.selection.base import check_option, register
from bilaf.selection.kmeans import check_kmeans_options, fit_kmeans
from bilaf.selection.neighbors import (
    load_tensor,
    resolve_device,
    row_chunks,
    sq_distances,
    sq_norms,
)

TINY = 1e-12  # squared distances below this count as this (a pick's own copy in another cluster)


def knn_density(x: torch.Tensor, k: int, reference: np.ndarray | None = None) -> torch.Tensor:
    """1 / mean cosine distance of each unit row to its ``k`` nearest reference rows, itself
    left out (reference: seeded row ids, sorted; None = every row). Float64: (n,)."""
    n = x.shape[0]
    ref_ids = torch.arange(n, device=x.device) if reference is None else torch.from_numpy(reference)
    ref = x[ref_ids.to(x.device)]
    x_sq, ref_sq = sq_norms(x), sq_norms(ref)
    out = torch.empty(n, dtype=torch.float64, device=x.device)
    for start, stop in row_chunks(n, ref.shape[0]):
        d2 = sq_distances(x[start:stop], ref, x_sq[start:stop], ref_sq)
        own = ref_ids.to(x.device)[None, :] == torch.arange(start, stop, device=x.device)[:, None]
        d2[own] = float("inf")
        nearest = d2.topk(k, dim=1, largest=False).values.double()
        out[start:stop] = 1.0 / (nearest.mean(dim=1) / 2.0).clamp_(min=TINY)  # cos = ||.||²/2
    return out


def best_per_cluster(utility: np.ndarray, labels: np.ndarray, clusters: int) -> np.ndarray:
    """Per cluster its member of largest utility (ties: lower index); -1 for an empty cluster."""
    order = np.lexsort((np.arange(labels.size), -utility, labels))
    first = np.full(clusters, -1, dtype=np.int64)
    heads = np.r_[True, labels[order][1:] != labels[order][:-1]]
    first[labels[order][heads]] = order[heads]
    return first


def regulariser(
    x: torch.Tensor, labels: torch.Tensor, picks: np.ndarray, power: float
) -> np.ndarray:
    """Σ over the picks of the other clusters of 1 / ||x - pick||^power, for every row: (n,)."""
    live = np.flatnonzero(picks >= 0)
    centres = x[torch.from_numpy(picks[live]).to(x.device)]
    own_cluster = torch.from_numpy(live).to(x.device)
    c_sq, x_sq = sq_norms(centres), sq_norms(x)
    out = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)
    for start, stop in row_chunks(x.shape[0], len(live)):
        d2 = sq_distances(x[start:stop], centres, x_sq[start:stop], c_sq).double()
        term = d2.clamp_(min=TINY).pow_(-power / 2.0)
        term[labels[start:stop, None] == own_cluster[None, :]] = 0.0
        out[start:stop] = term.sum(dim=1)
    return out.cpu().numpy()


@register()
def usl(
    features: Any,
    budget: int,
    seed: int,
    *,
    k_neighbors: int = 20,
    reg_weight: float = 0.5,
    reg_power: float = 2.0,
    rounds: int = 10,
    momentum: float = 0.9,
    points: int | None = None,
    iters: int = 100,
    tol: float = 1e-4,
    device: str | None = None,
) -> np.ndarray:
    """USL picks: one per k-means cluster (clusters in id order), after ``rounds`` of the
    regularised re-pick (``rounds=0``: each cluster's densest member)."""
    check_option(k_neighbors, "usl k_neighbors", int, low=1)
    check_option(reg_weight, "usl reg_weight", low=0)
    check_option(reg_power, "usl reg_power", low=0, open_low=True)
    check_option(rounds, "usl rounds", int, low=0)
    check_option(momentum, "usl momentum", low=0, high=1, open_high=True)
    check_option(points, "usl points", int, low=2, optional=True)
    check_kmeans_options(iters, tol)
    x = torch.nn.functional.normalize(load_tensor(features, resolve_device(device)), dim=1)
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    reference = None if points is None or points >= n else np.sort(rng.choice(n, points, False))
    k = min(k_neighbors, (n if reference is None else reference.size) - 1)
    density = knn_density(x, k, reference).cpu().numpy() if k >= 1 else np.ones(n)
    _, labels_t = fit_kmeans(x, budget, rng, iters, tol)
    labels = labels_t.cpu().numpy()
    picks = best_per_cluster(density, labels, budget)
    utility, smoothed = density, None
    for _ in range(rounds):
        reg = regulariser(x, labels_t, picks, reg_power)
        smoothed = reg if smoothed is None else momentum * smoothed + (1.0 - momentum) * reg
        utility = density - reg_weight * smoothed
        picks = best_per_cluster(utility, labels, budget)
    picks = picks[picks >= 0]
    if picks.size < budget:  # empty clusters: the unpicked samples of largest utility
        rest = np.setdiff1d(np.arange(n), picks)
        fill = rest[np.lexsort((rest, -utility[rest]))][: budget - picks.size]
        picks = np.concatenate([picks, fill])
    return picks.astype(np.int64)
