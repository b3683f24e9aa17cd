"""Chunked Euclidean-distance helpers shared by the baseline selection methods.

Features are held once as a float32 torch matrix (n x d, filled row chunk by row chunk); every
helper then computes at most ``rows x cols`` distances at a time, so no method ever holds an n x n
matrix over the pool. Squared distances use the Gram identity ||a||² + ||b||² - 2 a·b (one matrix
product per chunk), clamped at 0 against rounding.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from bilaf import devices
from bilaf.selection.base import SelectionError, iter_row_chunks

# Elements of one distance block (float32: 64 MiB); a chunk has this many / columns rows.
BLOCK_ELEMENTS = 1 << 24


def resolve_device(device: str | torch.device | None) -> torch.device:
    """A selection method's device (:func:`bilaf.devices.resolve_device`; SelectionError)."""
    return devices.resolve_device(device, SelectionError)


def load_tensor(features: Any, device: torch.device) -> torch.Tensor:
    """All rows of ``features`` as one float32 (n, d) tensor on ``device``, read by row chunks."""
    n, d = features.shape
    out = torch.empty((n, d), dtype=torch.float32, device=device)
    host = out.numpy() if out.device.type == "cpu" else None
    for start, block in iter_row_chunks(features):
        if host is not None:
            host[start : start + len(block)] = block
        else:
            out[start : start + len(block)] = torch.tensor(block, device=device)
    return out


def load_centred(features: Any, device: str | torch.device | None) -> torch.Tensor:
    """:func:`load_tensor` on the method's ``device``, minus the column means.

    Euclidean distances are unchanged; the Gram identity loses less to cancellation.
    """
    x = load_tensor(features, resolve_device(device))
    x -= x.mean(dim=0)
    return x


def row_chunks(n: int, cols: int, rows: int | None = None) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` row ranges whose ``rows x cols`` distance block stays near 64 MiB."""
    step = rows if rows is not None else max(1, BLOCK_ELEMENTS // max(cols, 1))
    for start in range(0, n, step):
        yield start, min(start + step, n)


def sq_norms(x: torch.Tensor) -> torch.Tensor:
    """Squared L2 norm of every row: (n,)."""
    return torch.einsum("ij,ij->i", x, x)


def sq_distances(
    a: torch.Tensor, b: torch.Tensor, a_sq: torch.Tensor, b_sq: torch.Tensor
) -> torch.Tensor:
    """(len(a), len(b)) squared Euclidean distances from the Gram identity, clamped at 0."""
    dist = a @ b.T
    dist.mul_(-2).add_(a_sq[:, None]).add_(b_sq[None, :])
    return dist.clamp_(min=0)


def nearest_centre(
    x: torch.Tensor, x_sq: torch.Tensor, centres: torch.Tensor, rows: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's nearest centre (int64, lowest index on ties) and its squared distance."""
    c_sq = sq_norms(centres)
    labels = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    best = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for start, stop in row_chunks(x.shape[0], centres.shape[0], rows):
        dist = sq_distances(x[start:stop], centres, x_sq[start:stop], c_sq)
        best[start:stop], labels[start:stop] = dist.min(dim=1)
    return labels, best


def knn_mean_distance(x: torch.Tensor, k: int, rows: int | None = None) -> torch.Tensor:
    """Mean Euclidean distance of each row of ``x`` to its ``k`` nearest other rows: (m,).

    The row itself is left out, so ``k`` must be below ``len(x)``.
    """
    m = x.shape[0]
    x = x - x.mean(dim=0)  # centring makes the Gram identity lose less to cancellation
    x_sq = sq_norms(x)
    out = torch.empty(m, dtype=x.dtype, device=x.device)
    for start, stop in row_chunks(m, m, rows):
        dist = sq_distances(x[start:stop], x, x_sq[start:stop], x_sq)
        own = torch.arange(start, stop, device=x.device)
        dist[own - start, own] = float("inf")
        out[start:stop] = dist.topk(k, dim=1, largest=False).values.sqrt_().mean(dim=1)
    return out
