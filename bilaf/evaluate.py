"""Evaluate a finetuned head on the test split: top-1, top-5, per-class accuracy."""

from __future__ import annotations

from typing import Any

import numpy as np


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Top-1 (and top-5 when there are more than 5 classes) in %, plus per-class top-1."""
    labels = np.asarray(labels)
    order = np.argsort(-logits, axis=1, kind="stable")
    hit1 = order[:, 0] == labels
    metrics: dict[str, Any] = {"top1": 100.0 * float(hit1.mean()), "n_test": int(labels.size)}
    if logits.shape[1] > 5:
        metrics["top5"] = 100.0 * float((order[:, :5] == labels[:, None]).any(1).mean())
    metrics["per_class_top1"] = {
        str(c): 100.0 * float(hit1[labels == c].mean()) for c in np.unique(labels)
    }
    return metrics
