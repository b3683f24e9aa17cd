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

import urllib.parse
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bilaf.errors import InputError, check_option
from bilaf.io import atomic_path, json_text

if TYPE_CHECKING:
    import pandas as pd

ROLES = ("core", "boundary", "baseline")
METHOD_KINDS = ("boundary", "core", "baseline")  # how a method's picks get their roles
LABEL_STUDIO_PREFIX = "/data/local-files/?d="  # local-files storage: + path under its document root
EXPORT_FILES = {
    "picks_csv": "picks.csv",
    "picks_txt": "picks.txt",
    "labelstudio": "labelstudio.json",
    "sheet": "contact_sheet.png",
    "stats": "stats.json",
}
# stats.json: a run's label-free facts (:func:`pick_stats`), in the order tables show them
STAT_COLUMNS = (
    "picks",
    *ROLES,
    "pseudo_classes",
    "pseudo_classes_reached",
    "coverage_mean",
    "coverage_p95",
    "coverage_max",
)
CORE_FRAME = (220, 20, 60)  # crimson
FRAME = 3  # the frame's width: a pad of this inside every tile keeps it off the picture
BROKEN_TILE = (200, 200, 200)
HEADER_HEIGHT = 18
GAP = 4
MAX_HEIGHT = 60_000  # beyond this the tiles shrink (to 16 px at least): 10,000 picks stay sane
MAX_WIDTH = 4096  # fewer columns than asked rather than a sheet wider than this


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
    if len(hashes) != n:
        raise InputError(f"pick table: {len(hashes)} hashes for {n} paths; give one per pool row")
    per_pick = {"roles": roles, "pseudo_class": pseudo_class}
    if scores is not None:
        per_pick["scores"] = scores
    for name, values in per_pick.items():
        if len(values) != b:
            raise InputError(f"pick table: {len(values)} {name} for {b} picks; give one per pick")
    outside = selection[(selection < 0) | (selection >= n)]
    if outside.size:
        raise InputError(f"pick table: pick {outside[0]} lies outside the pool [0, {n})")
    unknown = sorted({str(role) for role in roles} - set(ROLES))
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
    if len(url_paths) != len(table):
        raise InputError(f"{len(url_paths)} URL paths for {len(table)} picks; give one per pick")
    with atomic_path(picks_csv) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(picks_txt) as tmp:
        tmp.write_text("".join(f"{p}\n" for p in table["path"]))
    with atomic_path(labelstudio_json) as tmp:
        tmp.write_text(json_text(labelstudio_tasks(url_paths, url_prefix)))


def thumbnail(path: str, size: int) -> Any:
    """The picture at ``path`` fitted in size x size (RGB, upright by its EXIF orientation,
    transparent parts white), or None when it cannot be read.

    JPEGs decode at reduced scale (``draft``): a large photo costs little more than a small one.
    A small picture is enlarged, pixels kept sharp, so that a 28 px image is no speck.
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))  # JPEG only; a no-op for other formats
            image = image.convert("RGBA" if image.has_transparency_data else "RGB")
            image.thumbnail((size, size))
            if image.mode == "RGBA":
                image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image)
            image = ImageOps.exif_transpose(image.convert("RGB"))
            scale = size / max(image.size)
            if scale > 1:
                width, height = (max(1, round(side * scale)) for side in image.size)
                image = image.resize((width, height), Image.Resampling.NEAREST)
            return image
    except Exception:  # one unreadable image gets a marked tile; the sheet goes on
        return None


def sheet_layout(
    groups: np.ndarray, columns: int, tile: int, top: int
) -> tuple[list[tuple[int, int, int, int]], list[tuple[int, int]], tuple[int, int]]:
    """(each pick's tile box in input order, (group, y) of each group's header, canvas size),
    the first header at ``top``: groups in ascending order, each from a new row under its header,
    picks in input order inside a group."""
    cell = tile + GAP
    boxes: list[tuple[int, int, int, int]] = [(0, 0, 0, 0)] * len(groups)
    headers = []
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        headers.append((int(group), top))
        top += HEADER_HEIGHT
        for k, i in enumerate(members):
            left, row_top = GAP + (k % columns) * cell, top + (k // columns) * cell
            boxes[i] = (left, row_top, left + tile, row_top + tile)
        top += -(-len(members) // columns) * cell + GAP
    return boxes, headers, (GAP + columns * cell, top)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


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
    max_height: int = MAX_HEIGHT,
) -> list[tuple[int, int, int, int]]:
    """A PNG of the picks' thumbnails grouped by pseudo-class (``groups``), cores in a crimson
    frame tagged "core", an unreadable file as a grey tile with a cross; returns each pick's tile
    box (left, top, right, bottom) in input order. Fewer ``columns`` than asked when the sheet
    would be wider than MAX_WIDTH, smaller tiles than asked (16 px at least) when it would be
    taller than ``max_height``. ``workers`` threads decode (Pillow releases the GIL)."""
    from PIL import Image, ImageDraw, ImageFont

    groups = np.asarray(groups, dtype=np.int64)
    is_core = np.asarray(is_core, dtype=bool)
    if not len(paths) == len(groups) == len(is_core):
        raise InputError(
            f"contact sheet: {len(paths)} paths, {len(groups)} groups and {len(is_core)} core "
            "flags; give one of each per pick"
        )
    check_option(tile, "contact sheet tile", int, low=16)
    check_option(columns, "contact sheet columns", int, low=1)
    check_option(workers, "contact sheet workers", int, low=1)
    top = GAP + HEADER_HEIGHT * bool(title)
    while True:
        cols = max(1, min(columns, len(paths), (MAX_WIDTH - GAP) // (tile + GAP)))
        boxes, headers, size = sheet_layout(groups, cols, tile, top)
        if size[1] <= max_height or tile == 16:
            break
        tile, columns = max(16, tile * 4 // 5), columns * 5 // 4 + 1  # same width, fewer rows
    canvas = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    if title:
        draw.text((GAP, GAP + 3), title, fill="black", font=font)
    for group, y in headers:
        members = groups == group
        text = f"pseudo-class {group}: {_count(int(members.sum()), 'pick')}"
        text += f" ({_count(int(is_core[members].sum()), 'core')})"
        draw.text((GAP, y + 3), text, fill="black", font=font)
    with ThreadPoolExecutor(workers) as pool:
        thumbs = pool.map(lambda p: thumbnail(str(p), tile - 2 * FRAME), paths)
        for (left, top, right, bottom), thumb, core in zip(boxes, thumbs, is_core, strict=True):
            if thumb is None:
                draw.rectangle((left, top, right - 1, bottom - 1), fill=BROKEN_TILE)
                draw.line((left, top, right - 1, bottom - 1), fill="dimgrey", width=2)
                draw.line((left, bottom - 1, right - 1, top), fill="dimgrey", width=2)
            else:
                w, h = thumb.size
                canvas.paste(thumb, (left + (tile - w) // 2, top + (tile - h) // 2))
            if core:
                draw.rectangle((left, top, right - 1, bottom - 1), outline=CORE_FRAME, width=FRAME)
            if core and tile >= 48:  # on a smaller tile the tag would hide the picture
                tag = draw.textbbox((left + FRAME + 1, top + FRAME), "core", font=font, anchor="lt")
                draw.rectangle((left, top, tag[2] + 1, tag[3] + 1), fill=CORE_FRAME)
                draw.text(tag[:2], "core", fill="white", font=font, anchor="lt")
    with atomic_path(out) as tmp:
        canvas.save(tmp, format="PNG")
    return boxes


def pick_stats(
    features: Any, picks: np.ndarray, roles: np.ndarray, pseudo_class: np.ndarray, n_cores: int
) -> dict[str, Any]:
    """What can be said of a run's picks without labels: their roles, the pseudo-classes they
    reach, and how well they cover the pool (each pool row's Euclidean distance to its nearest
    pick, computed row chunk by row chunk: mean, 95th percentile, max)."""
    from bilaf.selection.base import iter_row_chunks
    from bilaf.selection.bilaf.pseudo_classes import nearest_cores

    pick_rows = np.asarray(features[picks], dtype=np.float32)
    gaps = np.concatenate(
        [nearest_cores(block, pick_rows, 1)[1][:, 0] for _, block in iter_row_chunks(features)]
    )
    return {
        "picks": int(picks.size),
        **{role: int((roles == role).sum()) for role in ROLES},  # picks of each role
        "pseudo_classes": int(n_cores),
        "pseudo_classes_reached": int(np.unique(pseudo_class).size),
        "coverage_mean": float(gaps.mean()),
        "coverage_p95": float(np.percentile(gaps, 95)),
        "coverage_max": float(gaps.max()),
    }


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
    scores: str | Path | None = None,
    run: Mapping[str, Any] | None = None,
    url_prefix: str = LABEL_STUDIO_PREFIX,
    tile: int = 96,
    title: str = "",
    workers: int = 4,
) -> dict[str, Path]:
    """The stage ``bilaf export``: a run's picks of the pool store ``features`` (rows named by
    its ``samples`` table) as :data:`EXPORT_FILES` in ``out_dir``; return their paths.

    Pseudo-class of a pick: its nearest of the ``cores`` (a JSON list of pool ids); roles by the
    method's ``kind`` (:func:`pick_roles`); ``scores``: the method's score of each pick (a JSON
    list, null for none: BiLAF's boundary score, ``bilaf select --scores-out``); ``run``: keys
    recorded in stats.json beside :func:`pick_stats` (method, budget, seed).
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
    values = None
    if scores is not None:  # a JSON list, null where a pick has no score
        raw = read_json(scores)
        if not isinstance(raw, list) or not all(
            v is None or isinstance(v, int | float) for v in raw
        ):
            raise InputError(f"scores {scores} must be a JSON list of numbers or nulls")
        values = np.array([np.nan if v is None else v for v in raw], dtype=np.float64)
    picked = pick_table(picks, table["path"], table["sha256"], roles, near[:, 0], values)
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
    stats = {**(run or {}), **pick_stats(feats, picks, roles, near[:, 0], core_ids.size)}
    with atomic_path(files["stats"]) as tmp:
        tmp.write_text(json_text(stats))
    return files
