"""MaxHerding (Bae, Noh & Sutherland, "Generalized Coverage for More Robust Low-Budget Active
Learning", ECCV 2024): greedy maximisation of the generalised coverage
C(S) = Σ_x max_{s in S} k(x, s) with a Gaussian kernel (ProbCover's δ-balls are the top-hat case).

Each step adds the sample of largest gain Σ_x max(0, k(x, c) - cov(x)), cov(x) = max_{s in S}
k(x, s) (0 before the first pick). C is monotone submodular, so a gain never grows as S does: the
lazy greedy (Minoux 1978) keeps every candidate's last gain as an upper bound in a heap and
recomputes only the top ones, a block at a time, until the top is fresh. That is exactly the
plain greedy's pick (equal gains: the lower seeded random rank, never storage order), at the cost
of one n x n pass of kernel sums (the first gains) plus a few kernel columns per pick.
"""

from __future__ import annotations

import heapq
from typing import Any

import numpy as np
import torch

from bilaf.selection.base import register
from bilaf.selection.kernels import kernel_pool, load_pool, tie_ranks

RECOMPUTE = 32  # stale gains recomputed per round of the lazy greedy


@register()
def maxherding(
    features: Any,
    budget: int,
    seed: int,
    *,
    bandwidth: float | None = None,
    points: int | None = None,
    normalize: bool = True,
    device: str | None = None,
) -> np.ndarray:
    """MaxHerding picks in greedy order.

    ``bandwidth``: the kernel's σ; None takes the median pairwise distance (of 2,048 seeded
    rows). ``points``: estimate the coverage on that many seeded rows (all rows stay
    candidates); None uses every row. ``normalize``: L2-normalise the features first.
    """
    x = load_pool(features, normalize, device)
    rng = np.random.default_rng(seed)
    pool = kernel_pool(x, bandwidth, points, rng, "maxherding")
    n = x.shape[0]
    rank = tie_ranks(seed, n)
    cover = torch.zeros(pool.p.shape[0], dtype=torch.float32, device=x.device)
    gains = pool.sums().cpu().numpy()
    # (-gain bound, tie rank, id, picks made when the bound was computed): the best on top.
    heap = [(-float(g), int(r), i, 0) for i, (g, r) in enumerate(zip(gains, rank, strict=True))]
    heapq.heapify(heap)
    picks: list[int] = []
    while len(picks) < budget:
        if heap[0][3] == len(picks):  # a fresh gain beats every bound: the greedy's pick
            pick = heapq.heappop(heap)[2]
            picks.append(pick)
            col = pool.columns(torch.tensor([pick], device=x.device))[:, 0]
            torch.maximum(cover, col, out=cover)
            continue
        stale = [heapq.heappop(heap) for _ in range(min(RECOMPUTE, len(heap)))]
        ids = torch.tensor([entry[2] for entry in stale], device=x.device)
        fresh = (pool.columns(ids) - cover[:, None]).clamp_(min=0).sum(0, dtype=torch.float64)
        for (_, r, i, _), g in zip(stale, fresh.tolist(), strict=True):
            heapq.heappush(heap, (-g, r, i, len(picks)))
    return np.asarray(picks, dtype=np.int64)
