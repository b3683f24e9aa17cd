"""Evaluate a finetuned model on the test split: top-1, top-5, per-class accuracy.

:func:`evaluate` is the stage (``bilaf evaluate``) for every finetune mode. A probe (``linear``,
``knn``) is applied here to the test store's cached features; a ``full`` model works on pixels, so
:func:`bilaf.finetune_full.train_full` computes its test logits on the test images once training
ends and the model file carries them; here they are checked against the test store and scored
like a probe's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def evaluate(model: str | Path, test_features: str | Path) -> dict[str, Any]:
    """:func:`classification_metrics` of the model file ``model`` on the test store
    ``test_features``, merged with the facts the model file records (its meta)."""
    from bilaf.features import open_features
    from bilaf.finetune import load_model, predict_logits

    arrays, meta = load_model(model)
    features, labels = open_features(test_features)
    logits = predict_logits(arrays, features[:], meta["n_classes"])
    return {**classification_metrics(logits, labels), **meta}


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
