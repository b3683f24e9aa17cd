import json

import numpy as np
import pandas as pd
import pytest

from bilaf.errors import InputError
from bilaf.finetune import fit_linear, predict_logits
from bilaf.labels import fold_ids, predict_pool, read_labels, write_predictions

NAMES = ["a/b/img 1.png", "a/c.png", "d.png", "e f/g.png"]
URL = "/data/local-files/?d="


@pytest.fixture
def root(tmp_path):
    return tmp_path / "pool"


def labels_file(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def read(path, root, **kwargs):
    rows, labels = read_labels(path, NAMES, root, **kwargs)
    assert rows.dtype == np.int64
    return rows.tolist(), labels.tolist()


def test_a_plain_csv_gives_rows_and_labels_in_file_order(tmp_path, root):
    path = labels_file(tmp_path, "l.csv", "path,label\nd.png,Dog\na/c.png, Cat\n")
    assert read(path, root) == ([2, 1], ["Dog", "Cat"])


def test_columns_are_found_case_insensitively_in_their_order_of_preference(tmp_path, root):
    path = labels_file(tmp_path, "l.csv", "Name,Filename,Class,Category\nx,d.png,Dog,pet\n")
    assert read(path, root) == ([2], ["Dog"])  # filename before name, class before category
    assert read(path, root, label_column="category") == ([2], ["pet"])


def test_a_label_studio_csv_export_with_its_extra_columns(tmp_path, root):
    text = (
        "annotation_id,annotator,choice,created_at,id,image,lead_time,updated_at\n"
        f"7,1,Cat,2024-01-01,11,{URL}a/b/img%201.png,3.2,2024-01-01\n"
        f"8,1,Dog,2024-01-01,12,{URL}e%20f/g.png,1.0,2024-01-01\n"
    )
    path = labels_file(tmp_path, "project-1.csv", text)
    assert read(path, root) == ([0, 3], ["Cat", "Dog"])


def annotation(choice, cancelled=False, from_name="choice"):
    value = {"choices": [choice]}
    result = [{"type": "choices", "from_name": from_name, "to_name": "image", "value": value}]
    return {"result": result, "was_cancelled": cancelled}


def test_a_label_studio_json_export_takes_the_last_kept_annotation(tmp_path, root, capsys):
    tasks = [
        {"id": 1, "data": {"image": URL + "d.png"}, "annotations": [annotation("Dog")]},
        {  # the later annotation was cancelled: the earlier one counts
            "id": 2,
            "data": {"image": URL + "a/b/img%201.png"},
            "annotations": [annotation("Cat"), annotation("Dog", cancelled=True)],
        },
        {  # two kept annotations: the last one counts
            "id": 3,
            "data": {"image": URL + "a/c.png"},
            "annotations": [annotation("Cat"), annotation("Eel")],
        },
        {"id": 4, "data": {"image": URL + "e%20f/g.png"}, "annotations": []},
        {"id": 5, "data": {"image": URL + "d.png"}, "annotations": [annotation("X", True)]},
    ]
    path = labels_file(tmp_path, "export.json", tasks)
    assert read(path, root) == ([2, 0, 1], ["Dog", "Cat", "Eel"])
    assert f"warning: {path}: 2 tasks have no annotation; skipped" in capsys.readouterr().err


def test_a_json_export_label_column_picks_the_result_by_from_name(tmp_path, root):
    result = [
        {"type": "choices", "from_name": "quality", "value": {"choices": ["sharp"]}},
        {"type": "choices", "from_name": "species", "value": {"choices": ["Dog"]}},
    ]
    task = {"id": 1, "data": {"image": URL + "d.png"}, "annotations": [{"result": result}]}
    path = labels_file(tmp_path, "export.json", [task])
    assert read(path, root) == ([2], ["sharp"])
    assert read(path, root, label_column="species") == ([2], ["Dog"])


def test_a_json_min_export_skips_tasks_without_a_label(tmp_path, root, capsys):
    tasks = [
        {"image": URL + "e%20f/g.png", "choice": "Cat", "id": 1, "annotator": 1},
        {"image": URL + "d.png", "id": 2},
        {"image": URL + "a/c.png", "choice": "Dog", "id": 3},
    ]
    path = labels_file(tmp_path, "min.json", tasks)
    assert read(path, root) == ([3, 1], ["Cat", "Dog"])
    assert "1 tasks have no annotation" in capsys.readouterr().err


def test_json_is_recognised_by_content_whatever_the_suffix(tmp_path, root):
    path = labels_file(tmp_path, "labels.txt", [{"path": "d.png", "label": "Dog"}])
    assert read(path, root) == ([2], ["Dog"])


def test_a_custom_url_prefix_is_stripped(tmp_path, root):
    path = labels_file(tmp_path, "l.csv", "image,choice\nhttp://h/img/e%20f/g.png,Cat\n")
    assert read(path, root, url_prefix="http://h/img/") == ([3], ["Cat"])


def test_absolute_and_cwd_relative_paths_resolve_to_pool_rows(tmp_path, root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = f"path,label\n{root / 'a/c.png'},Cat\npool/d.png,Dog\n./pool/x/../e f/g.png,Eel\n"
    path = labels_file(tmp_path, "l.csv", text)
    assert read(path, root) == ([1, 2, 3], ["Cat", "Dog", "Eel"])
    assert read(path, "pool") == ([1, 2, 3], ["Cat", "Dog", "Eel"])  # a relative root too


def test_paths_through_a_symlinked_root_match(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    path = labels_file(tmp_path, "l.csv", f"path,label\n{real / 'd.png'},Dog\n")
    assert read(path, tmp_path / "link") == ([2], ["Dog"])


def test_the_same_image_twice_with_the_same_label_counts_once(tmp_path, root):
    text = f"path,label\nd.png,Dog\na/c.png,Cat\n{root / 'd.png'},Dog\n"
    assert read(labels_file(tmp_path, "l.csv", text), root) == ([2, 1], ["Dog", "Cat"])


TASK = {"id": 9, "data": {"image": URL + "d.png"}}


@pytest.mark.parametrize(
    ("name", "content", "kwargs", "match"),
    [
        (
            "l.csv",
            "path,label\nd.png,Dog\n/elsewhere/x.png,Cat\nnope.png,Cat\n",
            {},
            r"2 entries name no image of the pool, e.g. '/elsewhere/x.png': label images of "
            r"this pool \(paths relative to .*pool or absolute\)",
        ),
        ("l.csv", "path,label\nd.png,Dog\n", {"label_column": "species"}, "no column 'species'"),
        ("l.csv", "path,notes\nd.png,Dog\n", {}, "its columns: .*set dataset.label_column"),
        ("l.csv", "label\nDog\n", {}, "no image path column"),
        ("l.csv", "path,label\nd.png,Dog\na/c.png,\n", {}, "line 3 .*'a/c.png'.*empty"),
        ("l.csv", "path,label\nd.png,Dog\nd.png,Cat\n", {}, "line 3: 'd.png' is labeled 'Cat'"),
        ("l.csv", "", {}, "is empty"),
        ("l.csv", "path,label\n", {}, "no labeled entries"),
        ("l.csv", bytes(range(128, 256)), {}, "not a readable text file"),
        ("l.csv", "lorem ipsum dolor\nsit amet\n", {}, "no image path column"),
        ("l.json", "[{", {}, "not valid JSON"),
        ("l.json", {"image": "d.png"}, {}, "expected a JSON list of tasks"),
        ("l.json", [{"image": "d.png", "choice": ""}], {}, "entry 1 .*empty"),
        ("l.json", [{**TASK, "annotations": []}], {}, "no labeled entries"),
        ("l.json", [{**TASK, "annotations": [{"result": []}]}], {}, "task 9.*no choices result"),
        (
            "l.json",
            [{**TASK, "annotations": [annotation("Dog")]}],
            {"label_column": "species"},
            r"task 9.*no from_name 'species' result.*\['choice'\]",
        ),
        ("l.json", [{"id": 9, "data": {"text": "hi"}}], {}, "task 9: no image path"),
    ],
)
def test_bad_labels_file_is_an_input_error_naming_it(tmp_path, root, name, content, kwargs, match):
    path = labels_file(tmp_path, name, content)
    with pytest.raises(InputError, match=match) as err:
        read_labels(path, NAMES, root, **kwargs)
    assert str(path) in str(err.value)


def test_a_missing_labels_file_is_named(tmp_path, root):
    with pytest.raises(InputError, match=f"labels file {tmp_path / 'no.csv'} does not exist"):
        read_labels(tmp_path / "no.csv", NAMES, root)


CLASSES = np.array(["cat", "dog", "eel", "fox"])


def blobs(n=400, d=16, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.normal(0, 1, (n, d)) + 6.0 * np.eye(4, d)[y]
    return x.astype(np.float32), CLASSES[y]


def picks_of(truth, per_class=10, seed=1):
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [rng.choice(np.flatnonzero(truth == c), per_class, replace=False) for c in CLASSES]
    )


@pytest.mark.parametrize("mode", ["linear", "knn"])
def test_predictions_cover_the_rows_not_trained_on_and_are_right(mode):
    x, truth = blobs()
    sel = picks_of(truth)
    labeled = np.concatenate([sel, [0, 1, 2]])  # extra rows labeled outside the selection
    labeled = np.unique(labeled)
    pred, metrics = predict_pool(x, sel, labeled, truth[labeled], mode=mode, chunk_rows=64)
    rest = np.setdiff1d(np.arange(400), sel)
    assert pred["row"].tolist() == rest.tolist()  # each once, in row order, labeled extras too
    assert list(pred.columns) == ["row", "label", "confidence"]
    assert (pred["label"].to_numpy() == truth[rest]).mean() > 0.95
    assert ((pred["confidence"] > 0) & (pred["confidence"] <= 1)).all()
    assert metrics["mode"] == mode and metrics["n_train"] == 40
    assert metrics["classes"] == CLASSES.tolist()
    assert metrics["class_counts"] == dict.fromkeys(CLASSES.tolist(), 10)
    assert metrics["crossval_folds"] == 5 and metrics["n_picks_unlabeled"] == 0
    assert metrics["crossval_top1"] > 95 and len(metrics["crossval_top1_per_fold"]) == 5
    assert metrics["note"] == "5-fold cross-validated top-1 on the labeled picks (no test split)"


def test_linear_confidence_is_the_softmax_maximum():
    x, truth = blobs()
    sel = np.sort(picks_of(truth))
    pred, _ = predict_pool(x, sel, sel, truth[sel])
    logits = predict_logits(fit_linear(x[sel], np.searchsorted(CLASSES, truth[sel]), 4), x, 4)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(pred["confidence"], p.max(1)[pred["row"]], rtol=1e-5)
    assert pred["confidence"].min() < 0.999  # not all saturated: the check has teeth


def test_knn_confidence_is_the_winners_share_of_the_votes():
    x, truth = blobs()
    sel = np.sort(picks_of(truth))
    mixed = truth[sel].copy()
    mixed[::2] = "cat"  # mixed neighbourhoods: shares well below 1
    pred, _ = predict_pool(x, sel, sel, mixed, mode="knn", knn_k=5, knn_temperature=0.5)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    for row, label, confidence in pred.head(30).itertuples(index=False):
        sim = unit[sel] @ unit[row]
        votes = {}
        for j in np.argsort(-sim)[:5]:
            votes[mixed[j]] = votes.get(mixed[j], 0.0) + np.exp(sim[j] / 0.5)
        winner = max(votes, key=votes.get)
        assert label == winner
        assert confidence == pytest.approx(votes[winner] / sum(votes.values()), rel=1e-5)
    assert (pred["confidence"] < 0.9).any()


def test_labels_outside_the_selection_do_not_change_the_model():
    x, truth = blobs()
    sel = picks_of(truth)
    labeled = np.arange(400)
    scrambled = np.random.default_rng(5).permutation(truth)
    scrambled[sel] = truth[sel]
    scrambled[np.setdiff1d(labeled, sel)[:3]] = "zebra"  # even a class the picks lack
    a = predict_pool(x, sel, labeled, truth)
    b = predict_pool(x, sel, labeled, scrambled)
    pd.testing.assert_frame_equal(a[0], b[0])
    assert a[1] == b[1]


def test_unlabeled_picks_are_warned_about_counted_and_predicted(capsys):
    x, truth = blobs()
    sel = picks_of(truth)
    labeled = sel[5:]
    pred, metrics = predict_pool(x, sel, labeled, truth[labeled])
    assert "warning: 5 of 40 picks have no label" in capsys.readouterr().err
    assert metrics["n_picks_unlabeled"] == 5 and metrics["n_train"] == 35
    assert set(sel[:5]) <= set(pred["row"]) and not set(labeled) & set(pred["row"])


def test_repeated_picks_train_once():
    x, truth = blobs()
    sel = picks_of(truth)
    once = predict_pool(x, sel, sel, truth[sel])
    twice = predict_pool(x, np.concatenate([sel, sel[:7]]), sel, truth[sel])
    pd.testing.assert_frame_equal(once[0], twice[0])
    assert once[1] == twice[1]


@pytest.mark.parametrize(
    ("labeled", "labels", "kwargs", "match"),
    [
        ([0, 1], ["cat", "dog"], {}, "the labels name none of this selection's 40 picks"),
        (None, "cat", {}, r"one class only \(\['cat'\]\)"),
        (None, None, {"mode": "svm"}, "unknown probe mode 'svm'"),
        (None, None, {"folds": 1}, "folds must be an integer >= 2"),
    ],
)
def test_untrainable_label_sets_are_input_errors(labeled, labels, kwargs, match):
    x, truth = blobs()
    sel = picks_of(truth)
    labeled = sel if labeled is None else np.array(labeled)
    labels = truth[labeled] if labels is None else np.broadcast_to(labels, labeled.shape)
    with pytest.raises(InputError, match=match):
        predict_pool(x, sel, labeled, labels, **kwargs)


def test_leave_one_out_matches_a_brute_force_loop():
    """folds >= n is leave-one-out whatever the split; the singleton class 'eel' scores 0."""
    x, _ = blobs(n=13, d=6, seed=3)
    names = np.array(["cat"] * 6 + ["dog"] * 6 + ["eel"])
    x[:6, 0] += 4.0
    x[12] = x[0]  # the eel sits among the cats
    sel = np.arange(13)
    _, metrics = predict_pool(x, sel, sel, names, folds=50)
    y = np.searchsorted(["cat", "dog", "eel"], names)
    hits = []
    for i in range(13):
        others = np.delete(np.arange(13), i)
        head = fit_linear(x[others], y[others], 3)
        hits.append(float(predict_logits(head, x[i : i + 1], 3).argmax() == y[i]) * 100)
    assert metrics["crossval_folds"] == 13
    assert sorted(metrics["crossval_top1_per_fold"]) == sorted(hits) and hits[12] == 0.0
    assert metrics["crossval_top1"] == pytest.approx(np.mean(hits))
    assert metrics["crossval_top1_std"] == pytest.approx(np.std(hits))


def test_folds_partition_the_picks_stratified_and_seeded():
    y = np.repeat([0, 1, 2], [12, 7, 3])
    fold = fold_ids(y, 5, seed=0)
    assert sorted(np.bincount(fold, minlength=5)) in ([4, 4, 4, 5, 5], [4, 4, 4, 4, 6])
    assert np.ptp(np.bincount(fold)) <= 1
    for c, size in enumerate([12, 7, 3]):
        per_fold = np.bincount(fold[y == c], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1 and per_fold.sum() == size
    np.testing.assert_array_equal(fold, fold_ids(y, 5, seed=0))
    assert not np.array_equal(fold, fold_ids(y, 5, seed=1))


class CountingRows:
    """A feature array that records how many rows each read asks for."""

    def __init__(self, x):
        self.x, self.shape, self.reads = x, x.shape, []

    def __getitem__(self, index):
        rows = self.x[index]
        self.reads.append(rows.shape[0])
        return rows


@pytest.mark.parametrize("mode", ["linear", "knn"])
def test_zarr_features_read_in_chunks_equal_numpy(mode):
    import zarr

    x, truth = blobs()
    sel = picks_of(truth)
    store = zarr.create_array(store=zarr.storage.MemoryStore(), data=x, chunks=(64, x.shape[1]))
    expected = predict_pool(x, sel, sel, truth[sel], mode=mode)
    got = predict_pool(store, sel, sel, truth[sel], mode=mode, chunk_rows=50)
    pd.testing.assert_frame_equal(expected[0], got[0], rtol=1e-5)
    assert expected[1] == got[1]
    spy = CountingRows(x)
    predict_pool(spy, sel, sel, truth[sel], mode=mode, chunk_rows=50)
    assert spy.reads == [40] + [50] * 8  # the picks once, then one chunk at a time


def test_write_predictions_gives_absolute_paths_in_row_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pred = pd.DataFrame(
        {"row": [3, 0, 2], "label": ["dog", "cat", "eel"], "confidence": [0.5, 1 / 3, 0.98765]}
    )
    out = tmp_path / "out" / "predictions.csv"
    write_predictions(out, pred, NAMES, "pool")
    assert out.read_text().splitlines() == [
        "path,label,confidence",
        f"{tmp_path}/pool/a/b/img 1.png,cat,0.3333",
        f"{tmp_path}/pool/d.png,eel,0.9877",
        f"{tmp_path}/pool/e f/g.png,dog,0.5000",
    ]
    write_predictions(out, pred.iloc[:1], NAMES, tmp_path / "pool")  # a rerun replaces it
    table = pd.read_csv(out)
    assert table.to_dict("list") == {
        "path": [f"{tmp_path}/pool/e f/g.png"],
        "label": ["dog"],
        "confidence": [0.5],
    }
    assert sorted(p.name for p in out.parent.iterdir()) == ["predictions.csv"]


def test_the_labels_stage_refuses_in_one_line_and_writes_nothing(tmp_path, capsys):
    from bilaf.cli import main

    samples = tmp_path / "pool.samples.csv"
    pd.DataFrame({"row": range(len(NAMES)), "name": NAMES}).to_csv(samples, index=False)
    labels = tmp_path / "labels.csv"
    labels.write_text("path,kind\nd.png,cat\n")
    out = tmp_path / "out" / "labels.csv"
    args = ["labels", "--labels", str(labels), "--samples", str(samples), "--root", "pool"]
    assert main([*args, "--label-column", "species", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "species" in err[0] and str(labels) in err[0]
    assert not out.parent.exists()
    labels.write_text("path,label\nd.png,cat\na/c.png,dog\n")
    assert main([*args, "--out", str(out)]) == 0
    assert out.read_text().splitlines() == ["row,name,label", "1,a/c.png,dog", "2,d.png,cat"]


def test_a_label_studio_csv_row_not_annotated_is_skipped(tmp_path, root, capsys):
    path = labels_file(
        tmp_path,
        "export.csv",
        f"image,id,choice,annotation_id\n{URL}d.png,1,cat,7\n{URL}a/c.png,2,,\n",
    )
    assert read(path, root) == ([2], ["cat"])
    assert "1 tasks have no annotation" in capsys.readouterr().err
    plain = labels_file(tmp_path, "plain.csv", "path,label\nd.png,cat\na/c.png,\n")
    with pytest.raises(InputError, match="empty or non-text label"):
        read(plain, root)  # a plain CSV's empty label is a mistake, not a skipped task
