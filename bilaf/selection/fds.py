"""Farthest-distance sampling (FDS), i.e. k-center greedy (Sener & Savarese, ICLR 2018).

Each step picks the sample farthest (Euclidean) from everything picked so far. The official
BiLAF baseline recomputes all distances to the selected set every step (O(n·B²)); keeping each
sample's distance to its nearest pick and updating it with the newest pick alone gives the same
picks in O(n·B): one matrix-vector product per pick. Already labeled samples are where the
coverage starts (the k-center greedy of the active learning setting): the first pick is then the
sample farthest from all of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bilaf.selection.base import register
from bilaf.selection.neighbors import load_centred, sq_norms


@register()
def fds(
    features: Any,
    budget: int,
    seed: int,
    *,
    labeled: np.ndarray | None = None,
    device: str | None = None,
) -> np.ndarray:
    """K-center greedy: ``budget`` indices in pick order (ties: lowest index).

    The first pick is ``np.random.default_rng(seed).integers(n)``, or with ``labeled`` (ids, as
    :func:`~bilaf.selection.base.select` passes them) the sample farthest from every labeled
    one; each later pick maximises the distance to its nearest earlier pick or labeled sample.
    """
    x = load_centred(features, device)
    dev = x.device
    n = x.shape[0]
    x_sq = sq_norms(x)
    # min_d2[i]: squared distance from i to its nearest pick. Picks are set to -inf, so a
    # duplicate of a pick (distance ~0 after rounding) still outranks the picks themselves.
    min_d2 = torch.full((n,), float("inf"), device=dev)
    d2 = torch.empty(n, device=dev)

    def cover(centre: int) -> None:
        """Fold ``centre`` into every sample's nearest distance; it can never be picked."""
        min_d2[centre] = float("-inf")
        # ||x_i - c||² = ||x_i||² + ||c||² - 2 x_i·c
        torch.addmv(x_sq + x_sq[centre], x, x[centre], alpha=-2.0, out=d2)
        torch.minimum(min_d2, d2, out=min_d2)

    if labeled is not None and len(labeled):
        for done in labeled:
            cover(int(done))
        picks = [int(torch.argmax(min_d2))]
    else:
        picks = [int(np.random.default_rng(seed).integers(n))]
    for _ in range(budget - 1):
        cover(picks[-1])
        picks.append(int(torch.argmax(min_d2)))
    return np.asarray(picks, dtype=np.int64)
