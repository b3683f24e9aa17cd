"""Probes on frozen cached features, trained on the labeled subset only (the CPU default).

``linear``: SPEC §7's protocol: standardise with the labeled subset's mean and std,
then multinomial logistic regression with an L2 penalty (objective: mean cross-entropy +
||W||² / (2·C·m), the same optimum as scikit-learn's ``LogisticRegression(C)``), solved in float64
with full-batch L-BFGS so the result is deterministic.
``knn``: weighted k-NN as DINO evaluates (cosine similarity, k=20 neighbours, votes weighted by
exp(sim/T) with T=0.07); the "model" is the L2-normalised labeled features and their labels.

A model is a dict of arrays with a ``mode`` entry, saved as ``.npz``. :func:`finetune` is the
stage (``bilaf finetune``): a pool store and a selection file in, the model and its facts out.
"""

from __future__ import annotations

import inspect
import json
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from bilaf.devices import set_threads
from bilaf.errors import BilafError, check_option
from bilaf.io import atomic_path, read_json
from bilaf.selection.base import check_ids

PROBE_MODES = ("linear", "knn")
PROBE_OPTIONS = ("c", "max_iter", "knn_k", "knn_temperature")  # defaults: those of finetune()


class FinetuneError(BilafError):
    """The labeled subset cannot be trained on; the message says why."""


def read_selection(path: str | Path, n: int) -> np.ndarray:
    """A selection file's pool indices (int64; repeats allowed), checked against a pool of n."""
    return check_ids(read_json(path), n, f"selection {path}", unique=False)


def labeled_facts(mode: str, n_classes: int, labels: np.ndarray) -> dict[str, Any]:
    """What every model file records about its training labels, whatever the mode: the mode,
    n_classes, n_labeled, the labeled-class histogram and the classes the selection misses."""
    histogram = np.bincount(labels, minlength=n_classes)
    return {
        "finetune_mode": mode,
        "n_classes": n_classes,
        "n_labeled": int(labels.size),
        "labeled_class_histogram": histogram.tolist(),
        "classes_missing_from_labeled": np.flatnonzero(histogram == 0).tolist(),
    }


def finetune(
    features: str | Path,
    selection: str | Path,
    n_classes: int,
    mode: str = "linear",
    *,
    c: float = 1.0,
    max_iter: int = 100,
    knn_k: int = 20,
    knn_temperature: float = 0.07,
    threads: int | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(model, meta) of a ``linear`` or ``knn`` probe on the pool store ``features``, trained on
    the rows of the ``selection`` file only (the module docstring gives the protocols).

    ``meta``: the recipe, :func:`labeled_facts`, the device and the training seconds. A class
    without a labeled sample is warned about on stderr. ``threads``: torch CPU threads of the
    linear probe (k-NN is numpy).
    """
    from bilaf.features import open_features

    if mode not in PROBE_MODES:
        raise FinetuneError(f"unknown probe mode {mode!r}: use one of {list(PROBE_MODES)}")
    start = time.perf_counter()
    feats, labels = open_features(features)
    x, y = labeled_subset(feats, labels, read_selection(selection, labels.size))
    facts = labeled_facts(mode, n_classes, y)
    missing = facts["classes_missing_from_labeled"]
    if missing:
        print(f"warning: classes {missing} have no labeled sample in {selection}", file=sys.stderr)
    set_threads(threads)
    probe = {"c": c, "max_iter": max_iter, "knn_k": knn_k, "knn_temperature": knn_temperature}
    model = fit_probe(mode, x, y, n_classes, **probe)
    if mode == "linear":
        recipe = {
            "optimizer": "lbfgs",
            "effective_batch_size": int(y.size),
            "lr": None,
            "c": c,
            "max_iter": max_iter,
        }
    else:
        recipe = {"k": knn_k, "temperature": knn_temperature, "similarity": "cosine"}
    meta = {**facts, **recipe, "device": "cpu"}
    return model, {**meta, "train_seconds": round(time.perf_counter() - start, 3)}


def probe_options(**given: Any) -> dict[str, Any]:
    """The probes' options: ``given`` over the defaults of :func:`finetune`, declared there."""
    unknown = sorted(set(given) - set(PROBE_OPTIONS))
    if unknown:
        raise TypeError(f"unknown probe options {unknown}; known: {list(PROBE_OPTIONS)}")
    params = inspect.signature(finetune).parameters
    return {key: given.get(key, params[key].default) for key in PROBE_OPTIONS}


def fit_probe(
    mode: str,
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    c: float,
    max_iter: int,
    knn_k: int,
    knn_temperature: float,
) -> dict[str, np.ndarray]:
    """The ``linear`` (:func:`fit_linear`) or ``knn`` (:func:`fit_knn`) probe on (x, y)."""
    if mode == "linear":
        return fit_linear(x, y, n_classes, c, max_iter)
    return fit_knn(x, y, knn_k, knn_temperature)


def labeled_subset(
    features: Any, labels: np.ndarray, selection: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of the selected rows only: the only labels training may see.

    ``selection``: pool indices; repeats are allowed (the official code's picks can repeat).
    """
    selection = check_ids(selection, labels.shape[0], "the selection", unique=False)
    rows = np.asarray(features[selection], dtype=np.float32)  # zarr and numpy alike
    return rows, labels[selection]


def fit_linear(
    x: np.ndarray, y: np.ndarray, n_classes: int, c: float = 1.0, max_iter: int = 100
) -> dict[str, np.ndarray]:
    """Fit a standardised multinomial logistic regression; return its arrays (float32)."""
    import torch

    check_option(c, "finetune.c", low=0, open_low=True, error=FinetuneError)
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
        "mode": np.array("linear"),
        "weight": weight.detach().numpy().astype(np.float32),
        "bias": bias.detach().numpy().astype(np.float32),
        "mean": mean.numpy().astype(np.float32),
        "scale": scale.numpy().astype(np.float32),
    }


def fit_knn(x: np.ndarray, y: np.ndarray, k: int = 20, temperature: float = 0.07) -> dict:
    """The k-NN 'model': unit-norm labeled features, their labels and the vote settings."""
    if k < 1 or temperature <= 0:
        raise FinetuneError(f"knn needs k >= 1 and temperature > 0, got {k}, {temperature}")
    return {
        "mode": np.array("knn"),
        "bank": _unit_rows(np.asarray(x, dtype=np.float32)),
        "bank_labels": np.asarray(y, dtype=np.int64),
        "k": np.array(k),
        "temperature": np.array(temperature, dtype=np.float32),
    }


def predict_logits(
    model: dict[str, np.ndarray], x: np.ndarray, n_classes: int, chunk: int = 4096
) -> np.ndarray:
    """Class scores (n, n_classes) of a linear or k-NN model on raw features.

    A ``full`` model (see bilaf.finetune_full) carries its test logits, computed on the images.
    """
    if str(model["mode"]) == "full":
        if model["test_logits"].shape[0] != x.shape[0]:
            raise FinetuneError("the full model's test logits do not match this test split")
        return model["test_logits"]
    x = np.asarray(x, dtype=np.float32)
    if str(model["mode"]) == "linear":
        z = (x - model["mean"]) / model["scale"]
        return z @ model["weight"].T + model["bias"]
    bank, bank_labels = model["bank"], model["bank_labels"]
    k = min(int(model["k"]), bank.shape[0])
    scores = np.zeros((x.shape[0], n_classes), dtype=np.float32)
    for lo in range(0, x.shape[0], chunk):
        sim = _unit_rows(x[lo : lo + chunk]) @ bank.T
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        weights = np.exp(np.take_along_axis(sim, top, axis=1) / model["temperature"])
        rows = np.repeat(np.arange(top.shape[0]), k)
        np.add.at(scores[lo : lo + chunk], (rows, bank_labels[top].ravel()), weights.ravel())
    return scores


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def save_model(path: str | Path, model: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write the model's arrays plus ``meta`` (training facts, as JSON) to ``.npz`` atomically."""
    with atomic_path(path, ours=is_model_file) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **model, meta_json=np.array(json.dumps(meta)))


def is_model_file(path: Path) -> bool:
    """Whether ``path`` is a model :func:`save_model` wrote (what a rerun may replace)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return "meta_json.npy" in archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def load_model(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(model arrays, meta) saved by :func:`save_model`."""
    with np.load(path) as data:
        model = {key: data[key] for key in data.files if key != "meta_json"}
        return model, json.loads(str(data["meta_json"]))
