"""One interface for every selection method: features, budget, seed -> int64 pool indices.

A method is a plain function ``fn(features, budget, seed, **options) -> np.ndarray`` registered
with :func:`register` under its module's name in ``METHOD_MODULES``. :func:`select` is the only
entry point callers use: it checks the input once (shape, finiteness, budget) and the output once
(length, range, uniqueness), so every method is held to the same contract.

Already labeled samples (``select(..., labeled=ids)``) are never picked again and the budget
counts new picks only. A method whose signature takes ``labeled`` uses them as its paper would
(FDS starts its coverage from them; ActiveFT and BiLAF count them as cores); any other method
selects from the remaining rows, as if the labeled ones were not in the pool.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bilaf import errors
from bilaf.errors import BilafError
from bilaf.store import open_store

FeatureSource = Any  # np.ndarray, zarr.Array, or a path to a .npy file / zarr store
Method = Callable[..., np.ndarray]

# The one declaration of the methods' names: name -> the module that registers it, imported on
# first use (a light method, e.g. random or BiLAF given its cores, then starts without torch).
# The config's method list, the schema's enum, the CLI and the contract tests derive from it.
METHOD_MODULES = {
    "activeft": "bilaf.selection.activeft",
    "bilaf": "bilaf.selection.bilaf",
    "fds": "bilaf.selection.fds",
    "herding": "bilaf.selection.herding",
    "kmeans": "bilaf.selection.kmeans",
    "maxherding": "bilaf.selection.maxherding",
    "probcover": "bilaf.selection.probcover",
    "random": "bilaf.selection.random_sampling",
    "typiclust": "bilaf.selection.typiclust",
    "usl": "bilaf.selection.usl",
}
REGISTRY: dict[str, Method] = {}
# Per method: given the options, may it return a sample twice? (Only the official code's quirks do.)
ALLOWS_DUPLICATES: dict[str, Callable[[dict[str, Any]], bool]] = {}

ROW_CHUNK = 65_536


class SelectionError(BilafError):
    """Bad input to a selection method: the message names the value and the fix."""


def register(
    *, allows_duplicates: Callable[[dict[str, Any]], bool] | None = None
) -> Callable[[Method], Method]:
    """Register ``fn`` as the selection method of its module (its name is in ``METHOD_MODULES``).

    ``allows_duplicates(options)`` says when the method may return a sample twice (e.g. BiLAF's
    reference mode, which reproduces the official code's duplicate picks).
    """

    def wrap(fn: Method) -> Method:
        names = [name for name, module in METHOD_MODULES.items() if module == fn.__module__]
        if len(names) != 1 or names[0] in REGISTRY:
            raise RuntimeError(f"{fn.__module__} is not the module of one unregistered method")
        REGISTRY[names[0]] = fn
        if allows_duplicates is not None:
            ALLOWS_DUPLICATES[names[0]] = allows_duplicates
        return fn

    return wrap


def get_method(name: str) -> Method:
    """The selection function registered as ``name``, importing its module if needed."""
    if name not in METHOD_MODULES:
        raise SelectionError(f"unknown selection method {name!r}; known: {sorted(METHOD_MODULES)}")
    importlib.import_module(METHOD_MODULES[name])
    return REGISTRY[name]


def load_features(source: FeatureSource) -> Any:
    """Open features without copying them: an array stays, a .npy is memory-mapped, zarr is lazy."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise SelectionError(f"features file {path} does not exist")
        if path.suffix == ".npy":
            try:
                return np.load(path, mmap_mode="r")
            except (OSError, ValueError) as err:  # not an .npy, truncated, or pickled objects
                raise SelectionError(
                    f"features file {path} is not a readable .npy array ({err}): save the (n, d) "
                    "features with numpy.save"
                ) from None
        return open_store(path)["features"]
    return source


def iter_row_chunks(features: Any, chunk: int = ROW_CHUNK):
    """Yield ``(start, block)`` float32 row blocks, so no caller holds more than one chunk."""
    for start in range(0, features.shape[0], chunk):
        yield start, np.asarray(features[start : start + chunk], dtype=np.float32)


def check_option(value: Any, name: str, kind: type = float, **bounds: Any) -> None:
    """:func:`bilaf.errors.check_option` for a method's option: SelectionError naming it."""
    errors.check_option(value, name, kind, error=SelectionError, **bounds)


def check_features(features: Any) -> None:
    """Raise SelectionError unless ``features`` is a non-empty, finite 2-D array."""
    if len(features.shape) != 2:
        raise SelectionError(f"features must be 2-D (n, d), got shape {tuple(features.shape)}")
    n, d = features.shape
    if n == 0 or d == 0:
        raise SelectionError(f"features are empty (shape {n}x{d}): nothing to select from")
    for start, block in iter_row_chunks(features):
        bad = ~np.isfinite(block)
        if bad.any():
            row = start + int(np.argwhere(bad)[0][0])
            raise SelectionError(f"features row {row} is not finite (NaN or inf): fix extraction")


def check_budget(budget: int, n: int, labeled: int = 0) -> None:
    """Raise SelectionError unless 1 <= budget <= n - labeled (new picks of an n-row pool)."""
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise SelectionError(f"budget must be an integer, got {budget!r}")
    if budget < 1:
        raise SelectionError(f"budget {budget} must be at least 1")
    if budget > n - labeled:
        rest = f" less its {labeled} labeled samples" if labeled else ""
        raise SelectionError(f"budget {budget} exceeds the pool size {n}{rest}: lower the budget")


def check_ids(
    ids: Any, n: int, what: str, *, unique: bool = True, allow_empty: bool = False
) -> np.ndarray:
    """User-given sample ids (cores, init ids, a selection) as int64: a 1-D list of integers in
    [0, n), without repeats when ``unique``; SelectionError naming ``what`` otherwise."""
    try:
        arr = np.asarray(ids)
    except ValueError:  # ragged nesting
        arr = np.asarray(None)
    if arr.ndim != 1:
        raise SelectionError(f"{what} must be a flat list of sample indices")
    if arr.size == 0 and not allow_empty:
        raise SelectionError(f"{what} must be a non-empty list of sample indices")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise SelectionError(f"{what} must be integers, got dtype {arr.dtype}")
    outside = arr[(arr < 0) | (arr >= n)]
    if outside.size:
        raise SelectionError(f"{what} contains index {outside[0]}, outside the pool [0, {n})")
    if unique:
        uniq, counts = np.unique(arr, return_counts=True)
        if (counts > 1).any():
            raise SelectionError(f"{what} contains index {uniq[counts > 1][0]} more than once")
    return arr.astype(np.int64)


def check_options(method: str, fn: Method, options: dict[str, Any]) -> None:
    """Raise SelectionError naming an option ``fn`` does not take, with the ones it does."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    interface = ("features", "budget", "seed", "labeled", "return_scores")
    known = [name for name in params if name not in interface]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise SelectionError(
            f"{method} has no option {unknown[0]!r}; its options: {', '.join(known) or 'none'}"
        )


class RowSubset:
    """Rows ``rows`` (sorted ids) of a feature array, read lazily like the array itself: the pool
    a method without a use for labeled samples sees when they are left out."""

    def __init__(self, features: Any, rows: np.ndarray) -> None:
        self.features, self.rows = features, rows
        self.shape = (rows.size, features.shape[1])
        self.dtype = features.dtype

    def __len__(self) -> int:
        return self.rows.size

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self.features[self.rows[key]])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self[:], dtype=dtype)


def select(
    method: str,
    features: FeatureSource,
    budget: int,
    seed: int = 0,
    *,
    labeled: Any = None,
    with_scores: bool = False,
    **options: Any,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Select ``budget`` pool indices with ``method``; checks the contract on both sides.

    ``labeled``: ids of samples already labeled (module docstring), none of them picked.
    ``with_scores``: also return each pick's score (float64) where the method has one (its
    signature takes ``return_scores``: BiLAF's boundary score), else NaN.
    """
    fn = get_method(method)
    check_options(method, fn, options)
    feats = load_features(features)
    check_features(feats)
    n = feats.shape[0]
    done = np.zeros(0, np.int64) if labeled is None else check_ids(labeled, n, "labeled")
    check_budget(budget, n, done.size)
    params = inspect.signature(fn).parameters
    scored = with_scores and "return_scores" in params
    if scored:
        options = {**options, "return_scores": True}
    if done.size and "labeled" in params:
        result = fn(feats, int(budget), int(seed), labeled=done, **options)
    elif done.size:
        rest = np.setdiff1d(np.arange(n), done)
        result = fn(RowSubset(feats, rest), int(budget), int(seed), **options)
        result = (rest[result[0]], result[1]) if scored else rest[np.asarray(result)]
    else:
        result = fn(feats, int(budget), int(seed), **options)
    picked, scores = result if scored else (result, np.full(budget, np.nan))
    picked, scores = np.asarray(picked, dtype=np.int64), np.asarray(scores, dtype=np.float64)
    if picked.ndim != 1 or picked.size != budget:
        raise RuntimeError(f"{method} returned {picked.size} indices for budget {budget}")
    if picked.size and (picked.min() < 0 or picked.max() >= n):
        raise RuntimeError(f"{method} returned an index outside [0, {n})")
    may_repeat = ALLOWS_DUPLICATES.get(method, lambda _: False)(options)
    if not may_repeat and np.unique(picked).size != picked.size:
        raise RuntimeError(f"{method} returned a sample twice")
    if np.isin(picked, done).any():
        raise RuntimeError(f"{method} picked a sample already labeled")
    return (picked, scores) if with_scores else picked
