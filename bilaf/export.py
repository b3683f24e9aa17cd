"""The picks of an unlabeled pool as files a person and an annotation tool use.

Per run (method, budget, seed): ``picks.csv`` (rank, row, path, sha256, role, pseudo_class,
score), ``picks.txt`` (one path per line), ``labelstudio.json`` (tasks Label Studio imports as
they are: ``[{"data": {"image": <url>}}, ...]``) and ``contact_sheet.png``: thumbnails of the picks
grouped by pseudo-class, cores framed, to look at what will be labeled before paying for it.

A pick's pseudo-class is its nearest core (its position in the cores list), the grouping BiLAF
itself works with; its role says why it was picked: ``core`` (ActiveFT's, or BiLAF's cores),
``boundary`` (BiLAF's other picks) or ``baseline`` (any other method). :func:`export` is the stage
(``bilaf export``).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bilaf.errors import InputError
from bilaf.io import atomic_path

if TYPE_CHECKING:
    import pandas as pd

ROLES = ("core", "boundary", "baseline")
METHOD_KINDS = ("boundary", "core", "baseline")  # how a method's picks get their roles
LABEL_STUDIO_PREFIX = "/data/local-files/?d="  # Label Studio's local-files storage URL
EXPORT_FILES = {
    "picks_csv": "picks.csv",
    "picks_txt": "picks.txt",
    "labelstudio": "labelstudio.json",
    "sheet": "contact_sheet.png",
}
CORE_FRAME = (220, 20, 60)  # crimson
BROKEN_TILE = (200, 200, 200)
HEADER_HEIGHT = 18
GAP = 4


def pick_roles(selection: np.ndarray, cores: np.ndarray, kind: str) -> np.ndarray:
    """Each pick's role: for a ``boundary`` method (BiLAF) core if it is one of ``cores``, else
    boundary; every pick of a ``core`` method (ActiveFT) is a core, of a ``baseline`` a baseline."""
    if kind not in METHOD_KINDS:
        raise InputError(f"unknown method kind {kind!r}: use one of {list(METHOD_KINDS)}")
    if kind == "boundary":
        return np.where(np.isin(selection, cores), "core", "boundary")
    return np.full(len(selection), kind)


def pick_table(
    selection: np.ndarray,
    paths: Sequence[str],
    hashes: Sequence[str],
    roles: Sequence[str],
    pseudo_class: np.ndarray,
    scores: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per pick in selection order: rank (1..B), row, path, sha256, role, pseudo_class,
    score (NaN where the method has none). ``paths`` and ``hashes`` are per pool row; the rest
    per pick."""
    import pandas as pd

    selection = np.asarray(selection, dtype=np.int64)
    n, b = len(paths), len(selection)
    if len(hashes) != n or len(roles) != b or len(pseudo_class) != b:
        raise InputError("pick table: paths/hashes need one entry per pool row, the rest per pick")
    if b and (selection.min() < 0 or selection.max() >= n):
        raise InputError(f"pick table: a pick lies outside the pool [0, {n})")
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise InputError(f"pick table: unknown roles {unknown}; use {list(ROLES)}")
    score = np.full(b, np.nan) if scores is None else np.asarray(scores, dtype=np.float64)
    return pd.DataFrame(
        {
            "rank": np.arange(1, b + 1),
            "row": selection,
            "path": np.asarray(paths, dtype=object)[selection],
            "sha256": np.asarray(hashes, dtype=object)[selection],
            "role": np.asarray(roles, dtype=object),
            "pseudo_class": np.asarray(pseudo_class, dtype=np.int64),
            "score": score,
        }
    )


def labelstudio_tasks(
    paths: Sequence[str], url_prefix: str = LABEL_STUDIO_PREFIX
) -> list[dict[str, Any]]:
    """Label Studio import tasks, exactly ``[{"data": {"image": url}}, ...]``: ``url_prefix`` +
    the URL-quoted path; the plain path when there is no prefix."""
    if not url_prefix:
        return [{"data": {"image": str(p)}} for p in paths]
    return [{"data": {"image": url_prefix + urllib.parse.quote(str(p), safe="/")}} for p in paths]


def write_picks(
    table: pd.DataFrame,
    picks_csv: str | Path,
    picks_txt: str | Path,
    labelstudio_json: str | Path,
    url_paths: Sequence[str],
    url_prefix: str = LABEL_STUDIO_PREFIX,
) -> None:
    """picks.csv (the table), picks.txt (its paths) and labelstudio.json (tasks of ``url_paths``:
    each pick's path as the annotation tool sees it, relative to the pool folder), atomically."""
    with atomic_path(picks_csv) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(picks_txt) as tmp:
        tmp.write_text("".join(f"{p}\n" for p in table["path"]))
    with atomic_path(labelstudio_json) as tmp:
        tmp.write_text(json.dumps(labelstudio_tasks(url_paths, url_prefix), indent=1) + "\n")


def thumbnail(path: str, tile: int) -> Any:
    """The picture at ``path`` fitted in tile x tile (RGB), or None when it cannot be read.

    JPEGs decode at reduced scale (``draft``): a large photo costs little more than a small one.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.draft("RGB", (tile, tile))
            image = image.convert("RGB")
            image.thumbnail((tile, tile))
            return image
    except Exception:  # one unreadable image gets a marked tile; the sheet goes on
        return None


def sheet_layout(
    groups: np.ndarray, columns: int, tile: int
) -> tuple[list[tuple[int, int, int, int]], list[tuple[int, int, str]], tuple[int, int]]:
    """(each pick's tile box in input order, (x, y, text) of each group header, canvas size):
    groups in ascending order, each from a new row under its header, picks in input order."""
    cell = tile + GAP
    boxes: list[tuple[int, int, int, int]] = [(0, 0, 0, 0)] * len(groups)
    headers = []
    top = GAP
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        headers.append((GAP, top, int(group)))
        top += HEADER_HEIGHT
        for k, i in enumerate(members):
            left = GAP + (k % columns) * cell
            row_top = top + (k // columns) * cell
            boxes[i] = (left, row_top, left + tile, row_top + tile)
        top += -(-len(members) // columns) * cell + GAP
    return boxes, headers, (GAP + columns * cell, top)


def contact_sheet(
    paths: Sequence[str],
    groups: np.ndarray,
    is_core: np.ndarray,
    out: str | Path,
    *,
    tile: int = 96,
    columns: int = 16,
    title: str = "",
    workers: int = 4,
) -> list[tuple[int, int, int, int]]:
    """A PNG of the picks' thumbnails grouped by pseudo-class, cores in a crimson frame, an
    unreadable file as a grey tile with a cross; returns each pick's tile box (left, top, right,
    bottom) in input order. ``workers`` threads decode (Pillow releases the GIL)."""
    from PIL import Image, ImageDraw

    groups = np.asarray(groups, dtype=np.int64)
    is_core = np.asarray(is_core, dtype=bool)
    if not len(paths) == len(groups) == len(is_core):
        raise InputError("contact sheet: paths, groups and is_core need one entry per pick")
    columns = max(1, min(columns, len(paths)))
    boxes, headers, (width, height) = sheet_layout(groups, columns, tile)
    offset = HEADER_HEIGHT if title else 0
    canvas = Image.new("RGB", (width, height + offset), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((GAP, GAP), title, fill="black")
    counts = dict(zip(*np.unique(groups, return_counts=True), strict=True))
    for x, y, group in headers:
        cores = int(is_core[groups == group].sum())
        text = f"pseudo-class {group}: {counts[group]} picks ({cores} cores)"
        draw.text((x, y + offset + 3), text, fill="black")
    boxes = [(a, b + offset, c, d + offset) for a, b, c, d in boxes]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        thumbs = pool.map(lambda p: thumbnail(str(p), tile), paths)
        for (left, top, right, bottom), thumb, core in zip(boxes, thumbs, is_core, strict=True):
            if thumb is None:
                draw.rectangle((left, top, right - 1, bottom - 1), fill=BROKEN_TILE)
                draw.line((left, top, right - 1, bottom - 1), fill="dimgrey", width=2)
                draw.line((left, bottom - 1, right - 1, top), fill="dimgrey", width=2)
            else:
                w, h = thumb.size
                canvas.paste(thumb, (left + (tile - w) // 2, top + (tile - h) // 2))
            if core:
                draw.rectangle((left, top, right - 1, bottom - 1), outline=CORE_FRAME, width=3)
    with atomic_path(out) as tmp:
        canvas.save(tmp, format="PNG")
    return boxes


def is_export_dir(path: Path) -> bool:
    """Whether ``path`` is a folder holding only export files (what a rerun may write into)."""
    return path.is_dir() and all(p.name in EXPORT_FILES.values() for p in path.iterdir())


def export(
    features: str | Path,
    samples: str | Path,
    selection: str | Path,
    cores: str | Path,
    kind: str,
    out_dir: str | Path,
    *,
    url_prefix: str = LABEL_STUDIO_PREFIX,
    tile: int = 96,
    title: str = "",
    workers: int = 4,
) -> dict[str, Path]:
    """The stage ``bilaf export``: a run's picks of the pool store ``features`` (rows named by
    its ``samples`` table) as :data:`EXPORT_FILES` in ``out_dir``; return their paths.

    Pseudo-class of a pick: its nearest of the ``cores`` (a JSON list of pool ids); roles by the
    method's ``kind`` (:func:`pick_roles`).
    """
    import pandas as pd

    from bilaf.features import open_features
    from bilaf.finetune import read_selection
    from bilaf.io import read_json
    from bilaf.selection.base import check_ids
    from bilaf.selection.bilaf.pseudo_classes import nearest_cores

    feats, _ = open_features(features)
    n = feats.shape[0]
    table = pd.read_csv(samples, dtype={"name": str, "path": str, "sha256": str})
    if len(table) != n or "path" not in table:
        raise InputError(f"{samples} is not the samples table of an unlabeled pool of {n} rows")
    picks = read_selection(selection, n)
    core_ids = check_ids(read_json(cores), n, f"cores {cores}")
    near, _ = nearest_cores(
        np.asarray(feats[picks], dtype=np.float32), np.asarray(feats[core_ids], np.float32), 1
    )
    roles = pick_roles(picks, core_ids, kind)
    picked = pick_table(picks, table["path"], table["sha256"], roles, near[:, 0])
    files = {key: Path(out_dir) / name for key, name in EXPORT_FILES.items()}
    names = table["name"].to_numpy(dtype=object)[picks]
    write_picks(
        picked, files["picks_csv"], files["picks_txt"], files["labelstudio"], names, url_prefix
    )
    contact_sheet(
        picked["path"].tolist(),
        near[:, 0],
        roles == "core",
        files["sheet"],
        tile=tile,
        title=title,
        workers=workers,
    )
    return files
