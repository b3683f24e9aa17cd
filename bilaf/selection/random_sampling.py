"""Random sampling: the baseline every active-learning table starts from."""

from __future__ import annotations

from typing import Any

import numpy as np

from bilaf.selection.base import register


@register()
def random_sampling(features: Any, budget: int, seed: int) -> np.ndarray:
    """``budget`` distinct indices drawn uniformly with ``np.random.default_rng(seed)``, sorted."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(features.shape[0], size=budget, replace=False)).astype(np.int64)
