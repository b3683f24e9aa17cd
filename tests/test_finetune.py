import json

import numpy as np
import pytest

from bilaf.evaluate import classification_metrics, evaluate
from bilaf.finetune import (
    FinetuneError,
    finetune,
    fit_knn,
    fit_linear,
    labeled_facts,
    labeled_subset,
    load_model,
    predict_logits,
    save_model,
)
from bilaf.selection import SelectionError


def separable(n=600, d=20, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(0, 1, (n, d)) + 6.0 * np.eye(classes, d)[y]
    return x.astype(np.float32), y


def test_linear_probe_separates_separable_classes():
    x, y = separable()
    head = fit_linear(x[:200], y[:200], 4)
    acc = (predict_logits(head, x[200:], 4).argmax(1) == y[200:]).mean()
    assert acc > 0.97


def test_linear_probe_matches_the_l2_logistic_regression_optimum():
    """At the optimum the gradient of mean CE + ||W||²/(2Cm) vanishes (checked independently)."""
    x, y = separable(n=120, d=6, classes=3)
    c = 0.5
    head = fit_linear(x, y, 3, c=c, max_iter=500)
    z = (x - head["mean"]) / head["scale"]
    logits = z @ head["weight"].T + head["bias"]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    residual = p - np.eye(3)[y]
    grad_w = residual.T @ z / len(y) + head["weight"] / (c * len(y))
    assert np.abs(grad_w).max() < 1e-3
    assert np.abs(residual.mean(0)).max() < 1e-3


def test_only_selected_labels_reach_training():
    x, y = separable()
    sel = np.array([5, 1, 400, 77])
    xs, ys = labeled_subset(x, y, sel)
    flipped = y.copy()
    flipped[np.setdiff1d(np.arange(len(y)), sel)] = 0
    xs2, ys2 = labeled_subset(x, flipped, sel)
    np.testing.assert_array_equal(ys, ys2)
    np.testing.assert_array_equal(xs, x[sel])
    a = fit_linear(xs, ys, 4)
    b = fit_linear(xs2, ys2, 4)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize(
    ("sel", "match"),
    [
        ([], "empty"),
        ([3, 600], "index 600, outside"),
        ({"a": 1}, "flat list"),
        ([0.5, 2], "must be integers"),
        ("abc", "flat list"),
    ],
)
def test_bad_selection_is_rejected(sel, match):
    x, y = separable()
    with pytest.raises(SelectionError, match=match):
        labeled_subset(x, y, sel)


def test_a_selection_may_repeat_a_sample():  # the official code's picks can
    x, y = separable()
    np.testing.assert_array_equal(labeled_subset(x, y, [4, 4])[1], y[[4, 4]])


@pytest.mark.parametrize("fit", [lambda x, y: fit_linear(x, y, 4), fit_knn])
def test_model_round_trip(tmp_path, fit):
    x, y = separable(n=50)
    model = fit(x, y)
    save_model(tmp_path / "m.npz", model, {"n_classes": 4})
    loaded, meta = load_model(tmp_path / "m.npz")
    assert meta == {"n_classes": 4}
    np.testing.assert_array_equal(predict_logits(loaded, x, 4), predict_logits(model, x, 4))


def test_knn_separates_separable_classes():
    x, y = separable()
    acc = (predict_logits(fit_knn(x[:200], y[:200]), x[200:], 4).argmax(1) == y[200:]).mean()
    assert acc > 0.97


def test_knn_votes_match_a_brute_force_loop():
    rng = np.random.default_rng(1)
    bank, labels, queries = (
        rng.normal(size=(30, 5)),
        rng.integers(0, 3, 30),
        rng.normal(size=(7, 5)),
    )
    scores = predict_logits(fit_knn(bank, labels, k=4, temperature=0.1), queries, 3, chunk=3)
    unit = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    for q, row in zip(queries, scores, strict=True):
        sim = unit @ (q / np.linalg.norm(q))
        expected = np.zeros(3)
        for j in np.argsort(-sim)[:4]:
            expected[labels[j]] += np.exp(sim[j] / 0.1)
        np.testing.assert_allclose(row, expected, rtol=1e-4)


def test_metrics_against_hand_counts():
    logits = np.array([[9, 1, 0, 0, 0, 0, 0], [0, 9, 8, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7]], float)
    m = classification_metrics(logits, np.array([0, 2, 0]))
    assert m["top1"] == pytest.approx(100 / 3)
    assert m["top5"] == pytest.approx(200 / 3)  # sample 3's label 0 ranks last
    assert m["per_class_top1"] == {"0": 50.0, "2": 0.0}


def pool_store(path, x, y):
    import zarr

    group = zarr.open_group(str(path), mode="w")
    group.create_array("features", data=x)
    group.create_array("labels", data=np.asarray(y, dtype=np.int64))
    group.attrs["complete"] = True
    return path


def test_labeled_facts_count_the_labels_and_name_the_missing_classes():
    facts = labeled_facts("knn", 5, np.array([1, 1, 3, 0]))
    assert facts == {
        "finetune_mode": "knn",
        "n_classes": 5,
        "n_labeled": 4,
        "labeled_class_histogram": [1, 2, 0, 1, 0],
        "classes_missing_from_labeled": [2, 4],
    }


@pytest.mark.parametrize("mode", ["linear", "knn"])
def test_the_stage_trains_on_the_selection_file_and_evaluate_scores_it(tmp_path, capsys, mode):
    x, y = separable()
    pool = pool_store(tmp_path / "pool.zarr", x[:300], y[:300])
    test = pool_store(tmp_path / "test.zarr", x[300:], y[300:])
    sel = np.flatnonzero(y[:300] != 3)[:40]
    (tmp_path / "sel.json").write_text(json.dumps(sel.tolist()))
    model, meta = finetune(pool, tmp_path / "sel.json", 4, mode, threads=1)
    assert f"warning: classes [3] have no labeled sample in {tmp_path / 'sel.json'}" in (
        capsys.readouterr().err
    )
    expected = fit_linear(x[sel], y[sel], 4) if mode == "linear" else fit_knn(x[sel], y[sel])
    for key in expected:
        np.testing.assert_array_equal(model[key], expected[key])
    assert meta["finetune_mode"] == mode and meta["n_labeled"] == 40 and meta["device"] == "cpu"
    assert meta["classes_missing_from_labeled"] == [3] and meta["train_seconds"] >= 0
    linear = {"optimizer": "lbfgs", "effective_batch_size": 40, "c": 1.0, "max_iter": 100}
    knn = {"k": 20, "temperature": 0.07, "similarity": "cosine"}
    assert (linear if mode == "linear" else knn).items() <= meta.items()
    save_model(tmp_path / "m.npz", model, meta)
    scores = evaluate(tmp_path / "m.npz", test)
    logits = predict_logits(model, x[300:], 4)
    assert scores == {**classification_metrics(logits, y[300:]), **meta}


def test_an_unknown_probe_mode_is_named(tmp_path):
    with pytest.raises(FinetuneError, match="unknown probe mode 'svm'"):
        finetune(tmp_path / "pool.zarr", tmp_path / "sel.json", 4, "svm")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--mode", "knn", "--knn-k", 3, "--knn-temperature", 0.5], {"k": 3, "temperature": 0.5}),
        (["--c", 0.5, "--max-iter", 7], {"finetune_mode": "linear", "c": 0.5, "max_iter": 7}),
    ],
)
def test_the_cli_passes_every_probe_flag(tmp_path, flags, expected):
    from bilaf.cli import main

    x, y = separable(n=100)
    pool = pool_store(tmp_path / "pool.zarr", x, y)
    (tmp_path / "sel.json").write_text(json.dumps(list(range(30))))
    argv = ["finetune", "--features", pool, "--selection", tmp_path / "sel.json", "--n-classes"]
    argv += [4, "--out", tmp_path / "m.npz", "--threads", 1, *flags]
    assert main([str(a) for a in argv]) == 0
    assert expected.items() <= load_model(tmp_path / "m.npz")[1].items()
