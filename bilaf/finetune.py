"""Finetune on the labeled subset. CPU default: a linear head on frozen cached features.

The linear probe follows SPEC §7's protocol: standardise with the labeled subset's mean and std,
then multinomial logistic regression with an L2 penalty (objective: mean cross-entropy +
||W||² / (2·C·m), the same optimum as scikit-learn's ``LogisticRegression(C)``), solved in float64
with full-batch L-BFGS so the result is deterministic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bilaf.io import atomic_path


class FinetuneError(ValueError):
    """The labeled subset cannot be trained on; the message says why."""


def labeled_subset(
    features: Any, labels: np.ndarray, selection: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of the selected rows only: the only labels training may see."""
    selection = np.asarray(selection, dtype=np.int64)
    if selection.size == 0:
        raise FinetuneError("the selection is empty: nothing to train on")
    n = labels.shape[0]
    if selection.min() < 0 or selection.max() >= n:
        bad = selection[(selection < 0) | (selection >= n)][0]
        raise FinetuneError(f"selection index {bad} is outside the pool [0, {n})")
    rows = np.asarray(features[selection], dtype=np.float32)  # zarr and numpy alike
    return rows, labels[selection]


def train_linear_probe(
    x: np.ndarray, y: np.ndarray, n_classes: int, c: float = 1.0, max_iter: int = 100
) -> dict[str, np.ndarray]:
    """Fit a standardised multinomial logistic regression; return its arrays (float32)."""
    import torch

    if c <= 0:
        raise FinetuneError(f"finetune.c must be > 0, got {c}")
    x64 = torch.from_numpy(np.asarray(x, dtype=np.float64))
    mean = x64.mean(0)
    scale = x64.std(0, unbiased=False)
    scale[scale == 0] = 1.0
    z = (x64 - mean) / scale
    target = torch.from_numpy(np.asarray(y, dtype=np.int64))
    weight = torch.zeros(n_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    penalty = 1.0 / (2.0 * c * x.shape[0])
    opt = torch.optim.LBFGS(
        [weight, bias], max_iter=max_iter, tolerance_grad=1e-6, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ weight.T + bias, target)
        loss = loss + penalty * (weight * weight).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return {
        "weight": weight.detach().numpy().astype(np.float32),
        "bias": bias.detach().numpy().astype(np.float32),
        "mean": mean.numpy().astype(np.float32),
        "scale": scale.numpy().astype(np.float32),
    }


def predict_logits(head: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Logits (n, classes) of the linear head on raw features."""
    z = (np.asarray(x, dtype=np.float32) - head["mean"]) / head["scale"]
    return z @ head["weight"].T + head["bias"]


def save_head(path: str | Path, head: dict[str, Any]) -> None:
    """Write the head's arrays (and metadata as 0-d arrays) to ``.npz`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **head)


def load_head(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}
