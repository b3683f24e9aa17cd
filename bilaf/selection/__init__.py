"""Selection methods behind one interface: ``select(method, features, budget, seed, **options)``.

Importing this package registers every method module below.
"""

from bilaf.selection import (
    activeft,  # noqa: F401  (registers "activeft")
    bilaf,  # noqa: F401  (registers "bilaf")
    fds,  # noqa: F401  (registers "fds")
    kmeans,  # noqa: F401  (registers "kmeans")
    probcover,  # noqa: F401  (registers "probcover")
    random_sampling,  # noqa: F401  (registers "random")
    typiclust,  # noqa: F401  (registers "typiclust")
)
from bilaf.selection.base import REGISTRY, SelectionError, load_features, select

__all__ = ["REGISTRY", "SelectionError", "load_features", "select"]
