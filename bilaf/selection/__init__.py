"""Selection methods behind one interface: ``select(method, features, budget, seed, **options)``.

Importing this package registers every method module below.
"""

from bilaf.selection import (
    activeft,  # noqa: F401  (registers "activeft")
    fds,  # noqa: F401  (registers "fds")
    random_sampling,  # noqa: F401  (registers "random")
)
from bilaf.selection.base import REGISTRY, SelectionError, load_features, select

__all__ = ["REGISTRY", "SelectionError", "load_features", "select"]
