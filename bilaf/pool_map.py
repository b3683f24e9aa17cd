"""A 2-D map of the pool (PCA) with each selection method's picks, one panel per method.

PCA is fitted on a seeded subsample of at most ``MAX_FIT_ROWS`` rows and the whole pool is then
projected chunk by chunk, so a pool of any size (a lazy zarr array) fits in memory: at most one
row chunk, the fit sample and the (n, 2) projection are held at once. BiLAF panels tell the
ActiveFT cores apart from the boundary picks, which is what the method adds.

The background is the fit sample, coloured by true class (a labeled pool) or, for an unlabeled
pool, by pseudo-class (each point's nearest core): dots sized for the number shown and opaque
enough that the groups read at a glance behind the picks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bilaf.errors import InputError
from bilaf.report import plot_paths, pyplot, save_figure
from bilaf.selection.base import check_ids, iter_row_chunks

MAX_FIT_ROWS = 20_000
CHUNK_ROWS = 16_384


def fit_pca(
    features: Any, max_rows: int = MAX_FIT_ROWS, seed: int = 0, chunk_rows: int = CHUNK_ROWS
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mean (d,), components (2, d), explained variance ratios (2,), fit row ids).

    Fitted on a seeded sample of at most ``max_rows`` rows (all when the pool is smaller), read
    chunk by chunk. Each component's sign is fixed (largest loading positive) so maps are stable.
    """
    n, d = features.shape
    if n < 2 or d < 2:
        raise InputError(f"a 2-D map needs at least 2 pool rows and 2 dimensions, got {n}x{d}")
    rows = np.sort(np.random.default_rng(seed).choice(n, min(n, max_rows), replace=False))
    blocks = []
    for start, block in iter_row_chunks(features, chunk_rows):
        lo, hi = np.searchsorted(rows, [start, start + len(block)])
        blocks.append(block[rows[lo:hi] - start])
    sample = np.concatenate(blocks)
    mean = sample.mean(axis=0, dtype=np.float64)
    centred = sample - mean.astype(np.float32)
    # Eigenvectors of the d x d scatter matrix: the right singular vectors of the centred sample.
    variances, vectors = np.linalg.eigh((centred.T @ centred).astype(np.float64))
    components = vectors[:, ::-1][:, :2].T
    components *= np.sign(components[[0, 1], np.abs(components).argmax(axis=1)])[:, None]
    ratio = variances[::-1][:2] / max(float(variances.sum()), np.finfo(float).tiny)
    return mean, components, ratio, rows


def project(
    features: Any, mean: np.ndarray, components: np.ndarray, chunk_rows: int = CHUNK_ROWS
) -> np.ndarray:
    """The (n, 2) PCA coordinates of every pool row, computed one row chunk at a time."""
    mean, axes = mean.astype(np.float32), components.T.astype(np.float32)
    out = np.empty((features.shape[0], axes.shape[1]), dtype=np.float32)
    for start, block in iter_row_chunks(features, chunk_rows):
        out[start : start + len(block)] = (block - mean) @ axes
    return out


def background_groups(
    features: Any, rows: np.ndarray, labels: np.ndarray | None, core_ids: np.ndarray | None
) -> tuple[np.ndarray | None, str]:
    """The group of each background row and what it is: the true label where every row has one
    (an unlabeled pool's are -1), else the pseudo-class (nearest core, by position in
    ``core_ids``), else none."""
    if labels is not None and (np.asarray(labels) >= 0).all():
        return np.asarray(labels)[rows], "coloured by true class"
    if core_ids is None or core_ids.size == 0:
        return None, "grey"
    from bilaf.selection.bilaf.pseudo_classes import nearest_cores

    core_rows = np.asarray(features[core_ids], dtype=np.float32)
    nearest, _ = nearest_cores(np.asarray(features[rows], dtype=np.float32), core_rows, 1)
    return nearest[:, 0], f"coloured by pseudo-class (nearest of {core_ids.size} cores)"


def plot_pool_map(
    features: Any,
    labels: np.ndarray | None,
    selections: Mapping[str, Any],
    cores: np.ndarray | None,
    outs: Iterable[str | Path],
    title: str,
) -> list[Path]:
    """Write the pool map to every path in ``outs`` (png or svg by suffix); return the paths.

    Background: the PCA fit sample (at most ``MAX_FIT_ROWS`` pool points), coloured by
    :func:`background_groups`. Methods named ``bilaf*`` mark the given cores that they picked
    apart from their other (boundary) picks.
    """
    outs = plot_paths(outs)  # a bad suffix fails before the pool is read
    n = features.shape[0]
    picks = {
        name: check_ids(ids, n, f"selection {name!r}", unique=False, allow_empty=True)
        for name, ids in selections.items()
    }
    if not picks:
        raise InputError("no selections to map")
    core_ids = (
        None if cores is None else check_ids(cores, n, "cores", unique=False, allow_empty=True)
    )
    mean, components, ratio, background = fit_pca(features)
    xy = project(features, mean, components)

    plt = pyplot()
    n_cols = min(3, len(picks))
    n_rows = -(-len(picks) // n_cols)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(4.6 * n_cols, 4.4 * n_rows), dpi=120, squeeze=False
    )
    groups, shown = background_groups(features, background, labels, core_ids)
    colours = "darkgrey" if groups is None else groups % 20
    size = float(np.clip(80_000 / background.size, 4, 16))  # 20,000 points: 4; 10,000: 8
    for ax, (name, ids) in zip(axes.flat, picks.items(), strict=False):
        ax.scatter(
            *xy[background].T,
            s=size,
            c=colours,
            cmap="tab20",
            vmin=0,
            vmax=19,
            alpha=0.7,
            linewidths=0,
            rasterized=True,  # tens of thousands of points stay small in the SVG
        )
        if name.startswith("bilaf") and core_ids is not None:
            is_core = np.isin(ids, core_ids)
            _mark(ax, xy[ids[is_core]], f"cores ({is_core.sum()})", "*", "crimson", 90)
            _mark(ax, xy[ids[~is_core]], f"boundary picks ({(~is_core).sum()})", "o", "navy", 12)
        else:
            _mark(ax, xy[ids], f"picks ({ids.size})", "o", "black", 12)
        ax.legend(loc="best", fontsize="small")
        ax.set_title(f"{name}: {ids.size} picks")
        ax.set_xlabel(f"PC 1 ({100 * ratio[0]:.1f} % of variance)")
        ax.set_ylabel(f"PC 2 ({100 * ratio[1]:.1f} % of variance)")
    for ax in axes.flat[len(picks) :]:
        ax.set_axis_off()
    fig.suptitle(
        f"{title}\nPCA of {n} pool points ({background.size} shown, {shown}); picks on top"
    )
    fig.tight_layout()
    return save_figure(fig, outs)


def _mark(ax: Any, xy: np.ndarray, label: str, marker: str, colour: str, size: float) -> None:
    """Picked points, edged in white so they stand out from the background."""
    ax.scatter(
        *xy.T, s=size, marker=marker, c=colour, edgecolors="white", linewidths=0.8, label=label
    )
