"""Labels a user brings back for an unlabeled pool, and the probe that spreads them to the rest.

:func:`read_labels` maps a labels file (a plain CSV, or a Label Studio CSV, JSON or JSON_MIN
export of the tasks the pipeline exported) to pool rows; :func:`predict_pool` trains a
``bilaf.finetune`` probe on exactly the labeled picks of one selection, cross-validates it on
them (there is no test split) and labels every other pool row; :func:`write_predictions` writes
the result. :func:`label_pool` and :func:`predict` are the stages (``bilaf labels``,
``bilaf predict``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bilaf.errors import InputError, check_option
from bilaf.export import LABEL_STUDIO_PREFIX
from bilaf.finetune import PROBE_MODES, fit_probe, predict_logits, probe_options
from bilaf.io import atomic_path, starts_with_line
from bilaf.scan import PATH_COLUMNS
from bilaf.selection.base import check_ids

if TYPE_CHECKING:
    import pandas as pd

LABEL_COLUMNS = ("label", "choice", "class", "category")

Entry = tuple[str, str, str]  # (path value, label, where in the file: "line 3", "task 7")


def read_labels(
    path: str | Path,
    names: Sequence[str],
    root: str | Path,
    *,
    url_prefix: str = LABEL_STUDIO_PREFIX,
    label_column: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(pool rows int64, label strings) of a labels file, in file order.

    ``names``: each pool row's path relative to ``root`` (POSIX). An entry's path may be such a
    name, ``url_prefix`` + its URL-quoted form (a Label Studio task), or a path (absolute or
    relative to the current folder) to ``root / name``. An image labeled twice alike counts once.
    """
    entries = _entries(Path(path), label_column)
    if not entries:
        raise InputError(f"{path} has no labeled entries: label some images and export again")
    lookup = _PoolLookup(names, root)
    rows: dict[int, str] = {}
    first_path: dict[int, str] = {}
    unmatched: list[str] = []
    for value, label, where in entries:
        row = lookup.row(_strip_url(value, url_prefix))
        if row is None:
            unmatched.append(value)
        elif row not in rows:
            rows[row], first_path[row] = label, value
        elif rows[row] != label:
            raise InputError(
                f"{path} {where}: {value!r} is labeled {label!r}, but {first_path[row]!r} "
                f"(the same image) is labeled {rows[row]!r}: keep one label per image"
            )
    if unmatched:
        count = "1 entry names" if len(unmatched) == 1 else f"{len(unmatched)} entries name"
        raise InputError(
            f"{path}: {count} no image of the pool, e.g. {unmatched[0]!r}: label images of this "
            f"pool (paths relative to {root} or absolute)"
        )
    return np.fromiter(rows, dtype=np.int64, count=len(rows)), np.array(list(rows.values()), str)


def _entries(path: Path, label_column: str | None) -> list[Entry]:
    """The (path value, label, where) entries of a CSV or Label Studio JSON / JSON_MIN file."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's CSV may start with a BOM
    except FileNotFoundError:
        raise InputError(f"labels file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(
            f"{path} is not a readable text file ({err}): give a CSV or a Label Studio JSON export"
        ) from None
    if not text.strip():
        raise InputError(f"{path} is empty: give a CSV or a Label Studio JSON export")
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{")):
        try:
            tasks = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"{path} is not valid JSON ({err})") from None
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise InputError(
                f"{path} is not a Label Studio export: expected a JSON list of tasks (export "
                "as JSON or JSON_MIN)"
            )
        if any(isinstance(t.get("data"), dict) for t in tasks):
            return _json_tasks(path, tasks, label_column)
        columns = list(dict.fromkeys(key for task in tasks for key in task))
        records = [(f"entry {i + 1}", task) for i, task in enumerate(tasks)]
        return _table(path, records, columns, label_column)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        records = [(f"line {reader.line_num}", record) for record in reader]
    except csv.Error as err:
        raise InputError(f"{path} is not a readable CSV file ({err})") from None
    return _table(path, records, list(reader.fieldnames or []), label_column, csv_rows=True)


def _table(
    path: Path,
    records: list[tuple[str, dict]],
    columns: list[str],
    label_column: str | None,
    *,
    csv_rows: bool = False,
) -> list[Entry]:
    """Entries of flat (where, record) pairs (CSV rows, JSON_MIN tasks) by their ``columns``: the
    path and label columns by name. A task not annotated is skipped: a JSON_MIN task without the
    label key, or a Label Studio CSV row (it has an ``annotation_id`` column) with no label."""
    path_key = _column(columns, PATH_COLUMNS)
    if path_key is None:
        raise InputError(
            f"{path} has no image path column (one of {', '.join(PATH_COLUMNS)}); its columns: "
            f"{columns}"
        )
    label_key = _label_column(path, columns, label_column)
    label_studio = _column(columns, ("annotation_id",)) is not None
    entries, skipped = [], 0
    for where, record in records:
        unannotated = label_studio and not (record.get(label_key) or "").strip()
        if unannotated or (label_key not in record and not csv_rows):
            skipped += 1
            continue
        value, label = record.get(path_key), record.get(label_key)
        if not isinstance(value, str) or not value:
            raise InputError(f"{path} {where}: no image path in column {path_key!r}")
        entries.append((value, _label_text(path, where, value, label), where))
    _warn_skipped(path, skipped)
    return entries


def _json_tasks(path: Path, tasks: list[dict], label_column: str | None) -> list[Entry]:
    """Entries of a Label Studio JSON export: each task's last non-cancelled annotation, its
    first ``choices`` result (or the result whose ``from_name`` is ``label_column``)."""
    entries, skipped = [], 0
    for i, task in enumerate(tasks):
        where = f"task {task.get('id', i + 1)}"
        data = task.get("data") if isinstance(task.get("data"), dict) else {}
        key = _column(list(data), PATH_COLUMNS)
        if key is None or not isinstance(data[key], str):
            raise InputError(
                f"{path} {where}: no image path in its data (one of {', '.join(PATH_COLUMNS)}); "
                f"its data keys: {list(data)}"
            )
        done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
        if not done:
            skipped += 1
            continue
        results = done[-1].get("result") or []
        if label_column is None:
            picked = [r for r in results if r.get("type") == "choices"]
            fix = "annotate with a Choices control or set dataset.label_column to its name"
        else:
            picked = [r for r in results if r.get("from_name") == label_column]
            fix = f"the results' from_name: {sorted({str(r.get('from_name')) for r in results})}"
        if not picked:
            wanted = "choices" if label_column is None else f"from_name {label_column!r}"
            raise InputError(f"{path} {where}: its annotation has no {wanted} result; {fix}")
        choices = (picked[0].get("value") or {}).get("choices") or [None]
        entries.append((data[key], _label_text(path, where, data[key], choices[0]), where))
    _warn_skipped(path, skipped)
    return entries


def _column(columns: list[str], wanted: Sequence[str]) -> str | None:
    """The first of ``wanted`` among ``columns``, compared case-insensitively; None if absent."""
    lower = {c.strip().lower(): c for c in reversed(columns)}
    return next((lower[w] for w in wanted if w in lower), None)


def _label_column(path: Path, columns: list[str], label_column: str | None) -> str:
    """The label column: ``label_column`` (exact, else case-insensitive) or the first known one."""
    if label_column is not None:
        found = label_column if label_column in columns else _column(columns, [label_column])
        if found is None:
            raise InputError(
                f"{path} has no column {label_column!r} (dataset.label_column); its columns: "
                f"{columns}"
            )
        return found
    found = _column(columns, LABEL_COLUMNS)
    if found is None:
        raise InputError(
            f"{path} has no label column (one of {', '.join(LABEL_COLUMNS)}); its columns: "
            f"{columns}: set dataset.label_column to the column holding the labels"
        )
    return found


def _label_text(path: Path, where: str, value: str, label: Any) -> str:
    """A label as a stripped, non-empty string; InputError naming the entry otherwise."""
    if isinstance(label, int | float) and not isinstance(label, bool):
        label = str(label)
    if not isinstance(label, str) or not label.strip():
        raise InputError(
            f"{path} {where} ({value!r}): empty or non-text label {label!r}: give every listed "
            "image one label, or remove the entry"
        )
    return label.strip()


def _warn_skipped(path: Path, skipped: int) -> None:
    if skipped:
        print(f"warning: {path}: {skipped} tasks have no annotation; skipped", file=sys.stderr)


def _strip_url(value: str, url_prefix: str) -> str:
    """A Label Studio task URL's path (``url_prefix`` removed, unquoted); other values as is."""
    if url_prefix and value.startswith(url_prefix):
        return urllib.parse.unquote(value[len(url_prefix) :])
    return value


class _PoolLookup:
    """Pool rows by name, or by a path to ``root / name`` (absolute or relative to the cwd)."""

    def __init__(self, names: Sequence[str], root: str | Path) -> None:
        self.rows = {str(name): i for i, name in enumerate(names)}
        root = Path(root)
        self.roots = list(dict.fromkeys([Path(os.path.abspath(root)), root.resolve()]))

    def row(self, value: str) -> int | None:
        if value in self.rows:
            return self.rows[value]
        given = Path(value)
        for candidate in dict.fromkeys([Path(os.path.abspath(given)), given.resolve()]):
            for root in self.roots:
                if candidate.is_relative_to(root):
                    row = self.rows.get(candidate.relative_to(root).as_posix())
                    if row is not None:
                        return row
        return None


def predict_pool(
    features: Any,
    selection: np.ndarray,
    labeled_rows: np.ndarray,
    labels: np.ndarray,
    *,
    mode: str = "linear",
    folds: int = 5,
    seed: int = 0,
    chunk_rows: int = 65536,
    **probe: Any,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(predictions, metrics) of a probe trained on the labeled picks of ``selection`` only.

    ``features``: (n, d) numpy or zarr array, read ``chunk_rows`` rows at a time. Labels of rows
    outside the selection are ignored: the probe trains on exactly the picks (each once).
    ``predictions``: ``row``, ``label``, ``confidence`` (softmax max for linear; the winner's
    share of the vote mass for knn) of every row not trained on, by row. ``metrics``: the
    training facts and a ``folds``-fold cross-validated top-1 (percent) on the labeled picks.
    """
    import pandas as pd

    if mode not in PROBE_MODES:
        raise InputError(f"unknown probe mode {mode!r}: use one of {list(PROBE_MODES)}")
    check_option(folds, "folds", int, low=2)
    check_option(chunk_rows, "chunk_rows", int, low=1)
    n = features.shape[0]
    picks = np.unique(check_ids(selection, n, "the selection", unique=False))
    labeled_rows = check_ids(labeled_rows, n, "the labeled rows")
    labels = np.asarray(labels, dtype=str)
    train = np.isin(picks, labeled_rows)
    rows, n_unlabeled = picks[train], int((~train).sum())
    if rows.size == 0:
        raise InputError(
            f"the labels name none of this selection's {picks.size} picks: label the images the "
            "selection picked (its export), not others"
        )
    if n_unlabeled:
        print(f"warning: {n_unlabeled} of {picks.size} picks have no label", file=sys.stderr)
    by_row = dict(zip(labeled_rows.tolist(), labels.tolist(), strict=True))
    names = np.array([by_row[r] for r in rows.tolist()], dtype=str)
    classes, y = np.unique(names, return_inverse=True)
    if classes.size < 2:
        raise InputError(
            f"the labeled picks have one class only ({classes.tolist()}): a probe needs at "
            "least 2; label picks of other classes"
        )
    x = np.asarray(features[rows], dtype=np.float32)

    options = probe_options(**probe)

    def fit(x_fit: np.ndarray, y_fit: np.ndarray) -> dict[str, np.ndarray]:
        return fit_probe(mode, x_fit, y_fit, classes.size, **options)

    k = min(folds, rows.size)
    fold = fold_ids(y, k, seed)
    scores = []
    for f in range(k):
        held = fold == f
        logits = predict_logits(fit(x[~held], y[~held]), x[held], classes.size)
        scores.append(float((logits.argmax(1) == y[held]).mean() * 100))
    model = fit(x, y)
    trained = np.zeros(n, dtype=bool)
    trained[rows] = True
    out_rows, out_ids, out_conf = [], [], []
    for lo in range(0, n, chunk_rows):
        keep = ~trained[lo : lo + chunk_rows]
        block = np.asarray(features[lo : lo + chunk_rows], dtype=np.float32)[keep]
        logits = predict_logits(model, block, classes.size).astype(np.float64)
        out_rows.append(lo + np.flatnonzero(keep))
        out_ids.append(logits.argmax(1))
        out_conf.append(_confidence(logits, mode))
    predictions = pd.DataFrame(
        {
            "row": np.concatenate(out_rows),
            "label": classes[np.concatenate(out_ids)],
            "confidence": np.concatenate(out_conf),
        }
    )
    metrics = {
        "mode": mode,
        "n_train": int(rows.size),
        "n_picks_unlabeled": n_unlabeled,
        "classes": classes.tolist(),
        "class_counts": dict(zip(classes.tolist(), np.bincount(y).tolist(), strict=True)),
        "crossval_folds": k,
        "crossval_top1": float(np.mean(scores)),
        "crossval_top1_std": float(np.std(scores)),
        "crossval_top1_per_fold": scores,
        "note": f"{k}-fold cross-validated top-1 on the labeled picks (no test split)",
    }
    return predictions, metrics


def fold_ids(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Each sample's fold in [0, k): a seeded shuffle, then each class dealt round-robin, so a
    class with >= k samples reaches every fold and fold sizes differ by at most one."""
    order = np.random.default_rng(seed).permutation(y.size)
    order = order[np.argsort(y[order], kind="stable")]
    fold = np.empty(y.size, dtype=np.int64)
    fold[order] = np.arange(y.size) % k
    return fold


def _confidence(logits: np.ndarray, mode: str) -> np.ndarray:
    """The winning class's probability: softmax max (linear) or share of the vote mass (knn)."""
    if mode == "linear":
        return 1.0 / np.exp(logits - logits.max(1, keepdims=True)).sum(1)
    return logits.max(1) / logits.sum(1)


def write_predictions(
    path: str | Path, predictions: pd.DataFrame, names: Sequence[str], root: str | Path
) -> None:
    """predictions.csv: path (absolute: root / name), label, confidence (4 decimals), in row
    order; atomic."""
    import pandas as pd

    table = predictions.sort_values("row", kind="stable")
    base = os.path.abspath(root)
    pool = np.asarray(names, dtype=object)
    out = pd.DataFrame(
        {
            "path": [os.path.join(base, name) for name in pool[table["row"].to_numpy()]],
            "label": table["label"].to_numpy(),
            "confidence": table["confidence"].to_numpy(),
        }
    )
    with atomic_path(path) as tmp:
        out.to_csv(tmp, index=False, float_format="%.4f")


POOL_LABELS_HEADER = "row,name,label"


def label_pool(
    labels: str | Path,
    samples: str | Path,
    root: str | Path,
    *,
    url_prefix: str = LABEL_STUDIO_PREFIX,
    label_column: str | None = None,
) -> pd.DataFrame:
    """The stage ``bilaf labels``: a labels file checked against the pool's samples table once,
    as (row, name, label) by pool row, what :func:`predict` reads."""
    import pandas as pd

    names = pd.read_csv(samples, dtype={"name": str})["name"].to_numpy()
    rows, values = read_labels(
        labels, names, root, url_prefix=url_prefix, label_column=label_column
    )
    order = np.argsort(rows)
    return pd.DataFrame({"row": rows[order], "name": names[rows[order]], "label": values[order]})


def write_pool_labels(path: str | Path, table: pd.DataFrame) -> None:
    """The labels by pool row (:func:`label_pool`), atomically."""
    with atomic_path(path, ours=is_pool_labels) as tmp:
        table.to_csv(tmp, index=False)


def is_pool_labels(path: Path) -> bool:
    """Whether ``path`` is a table :func:`write_pool_labels` wrote (what a rerun may replace)."""
    return starts_with_line(path, POOL_LABELS_HEADER)


def read_pool_labels(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(pool rows, labels) of a table :func:`write_pool_labels` wrote."""
    import pandas as pd

    table = pd.read_csv(path, dtype={"label": str, "name": str})
    return table["row"].to_numpy(np.int64), table["label"].to_numpy()


def predict(
    features: str | Path,
    samples: str | Path,
    selection: str | Path,
    labels: str | Path,
    root: str | Path,
    *,
    labeled: str | Path | None = None,
    mode: str = "linear",
    seed: int = 0,
    **probe: Any,
) -> tuple[pd.DataFrame, dict[str, Any], np.ndarray]:
    """The stage ``bilaf predict``: (predictions, metrics, pool names) of :func:`predict_pool` on
    the pool store ``features``, trained on the labeled picks of the ``selection`` file and the
    images ``labeled`` before it (a table of :func:`write_pool_labels`), if any."""
    import pandas as pd

    from bilaf.features import open_features
    from bilaf.finetune import read_selection

    feats, _ = open_features(features)
    names = pd.read_csv(samples, dtype={"name": str})["name"].to_numpy()
    if len(names) != feats.shape[0]:
        raise InputError(f"{samples} has {len(names)} rows, the store {feats.shape[0]}: re-extract")
    picks = read_selection(selection, feats.shape[0])
    rows, values = read_pool_labels(labels)
    if labeled is not None:
        before, before_values = read_pool_labels(labeled)
        label_before = dict(zip(before.tolist(), before_values.tolist(), strict=True))
        pairs = zip(rows.tolist(), values.tolist(), strict=True)
        differ = [r for r, v in pairs if label_before.get(r, v) != v]
        if differ:
            raise InputError(
                f"pool row {differ[0]} ({names[differ[0]]}) has one label in {labels} and "
                f"another in {labeled}: keep one"
            )
        keep = ~np.isin(before, rows)
        picks = np.concatenate([picks, before])
        rows = np.concatenate([rows, before[keep]])
        values = np.concatenate([values, before_values[keep]])
    predictions, metrics = predict_pool(
        feats,
        picks,
        rows,
        values,
        mode=mode,
        seed=seed,
        **probe,
    )
    return predictions, metrics, names
