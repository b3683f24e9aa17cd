"""Selection methods behind one interface: ``select(method, features, budget, seed, **options)``.

Each method lives in its own module, imported on first use (``METHOD_MODULES``).
"""

from bilaf.selection.base import (
    METHOD_MODULES,
    SelectionError,
    get_method,
    load_features,
    select,
)

__all__ = ["METHOD_MODULES", "SelectionError", "get_method", "load_features", "select"]
