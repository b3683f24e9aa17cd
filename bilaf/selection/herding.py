"""Kernel herding on α-MMD, "GKHR" (RDSS: Shao et al., "Enhancing Semi-Supervised Learning via
Representative and Diverse Sample Selection", NeurIPS 2024).

α-MMD(S)² = ||(1/|S|) Σ_{s in S} φ(s) - α (1/n) Σ_x φ(x)||² in the Gaussian kernel's feature
space, σ the median pairwise distance, α = 1 - 1/sqrt(B) (B the budget): α < 1 trades
representativeness (matching the pool's mean embedding) against diversity (the picks' own
similarity). Herding without replacement adds, at each step t (t picks so far), the unpicked
sample that lowers α-MMD most; since k(x, x) = 1 for every x, that is

    argmax_x  α μ(x) - Σ_{s in S} k(x, s) / (t + 1),   μ(x) = (1/n) Σ_y k(x, y).

μ is one n x n pass of kernel sums (block by block); each pick then adds one kernel column.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from bilaf.selection.base import check_option, register
from bilaf.selection.kernels import kernel_pool, load_pool, tie_ranks


def default_alpha(budget: int) -> float:
    """RDSS's α for a budget of B samples: 1 - 1/sqrt(B)."""
    return 1.0 - 1.0 / math.sqrt(budget)


@register()
def herding(
    features: Any,
    budget: int,
    seed: int,
    *,
    alpha: float | None = None,
    bandwidth: float | None = None,
    points: int | None = None,
    normalize: bool = False,
    device: str | None = None,
) -> np.ndarray:
    """GKHR picks in herding order (equal scores: the lower seeded random rank).

    ``alpha``: None is 1 - 1/sqrt(budget). ``bandwidth``, ``points``: as MaxHerding's (the
    median distance; μ on that many seeded rows). ``normalize``: L2-normalise the features first.
    """
    check_option(alpha, "herding alpha", low=0, high=1, optional=True)
    alpha = default_alpha(budget) if alpha is None else float(alpha)
    x = load_pool(features, normalize, device)
    rng = np.random.default_rng(seed)
    pool = kernel_pool(x, bandwidth, points, rng, "herding")
    n = x.shape[0]
    mean_embedding = pool.sums() / pool.p.shape[0]
    similarity = torch.zeros(n, dtype=torch.float64, device=x.device)  # Σ_{s in S} k(x, s)
    # Equal scores go to the lower tie rank: the rank, scaled below any score gap, breaks them.
    order = torch.from_numpy(tie_ranks(seed, n)).to(x.device)
    picked = torch.zeros(n, dtype=torch.bool, device=x.device)
    picks: list[int] = []
    for t in range(budget):
        score = alpha * mean_embedding - similarity / (t + 1)
        score[picked] = -math.inf
        best = score.max()
        pick = int(torch.where(score == best, order, n).argmin())
        picks.append(pick)
        picked[pick] = True
        similarity += pool.row_kernel(pick)
    return np.asarray(picks, dtype=np.int64)
