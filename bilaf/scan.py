"""An unlabeled pool of the user's own images: list them, keep the readable ones, drop copies.

A pool is a folder tree (``dataset.pool_dir``) or a list of paths (``dataset.pool_list``: one per
line, or a CSV with a path column; relative paths are relative to the list's folder). Every file
found is either an image of the pool or a line of the skipped table with its reason, so nothing
disappears silently:

- every file is tried, whatever its name or extension (``photo.JPG``, ``scan.tif``, a PNG saved
  without a suffix): it is an image when Pillow recognises its bytes, and it must then decode
  completely (a truncated JPEG fails here, not hours later during extraction). JPEGs are decoded
  at reduced scale (``draft``), which still reads every entropy-coded block, at a fraction of
  the full decode's cost;
- a zero-byte file, a file that is not an image and one that does not decode are skipped with
  the reason (``on_bad_image="fail"`` stops at the first one instead);
- exact copies (same SHA-256 of the bytes) keep the first in pool order, so a budget is never
  spent twice on one picture; the others are skipped as ``duplicate of <name>``.

Pool order is the sorted relative POSIX path (by code point), so the same files give the same
rows whatever order the file system lists them in. Hidden files and folders (a leading dot) are
not part of the pool; symlinks are followed (a link cycle is entered once).
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bilaf.errors import InputError, check_option
from bilaf.io import atomic_path, starts_with_line

BAD_IMAGE_ACTIONS = ("skip", "fail")
POOL_HEADER = "name,path,bytes,sha256"
SKIPPED_HEADER = "name,path,bytes,reason"
PATH_COLUMNS = ("path", "image", "file", "filename", "name")  # also a labels file's


@dataclass(frozen=True)
class FileCheck:
    """What the scan found about one file: its size, content hash and why it is skipped, if so."""

    name: str
    path: str
    bytes: int  # the pool and skipped tables' column names are the fields'
    sha256: str
    reason: str | None


def check_image(name: str, path: str) -> FileCheck:
    """Read ``path`` once: size, SHA-256, and whether it is an image that decodes completely.

    Any decoding failure is a reason to skip the file, never an exception: one bad image must not
    stop a large run.
    """
    from PIL import Image

    try:
        data = Path(path).read_bytes()
    except OSError as err:
        return FileCheck(name, path, 0, "", f"unreadable ({err.strerror or err})")
    sha = hashlib.sha256(data).hexdigest()
    if not data:
        return FileCheck(name, path, 0, sha, "empty file (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except Exception:  # UnidentifiedImageError, or a header so broken Pillow cannot tell
        reason = "not an image (Pillow reads no image format from it, or its header is damaged)"
        return FileCheck(name, path, len(data), sha, reason)
    try:
        with image:
            if image.format == "JPEG":
                image.draft("RGB", (64, 64))
            image.load()
    except Exception as err:  # OSError (truncated), SyntaxError, ValueError, DecompressionBomb...
        return FileCheck(
            name, path, len(data), sha, f"does not decode ({type(err).__name__}: {err})"
        )
    return FileCheck(name, path, len(data), sha, None)


def walk_files(root: Path) -> Iterator[str]:
    """Relative POSIX paths of the non-hidden files under ``root``, following symlinks; a folder
    reached twice (a link cycle or two links to one folder) is walked once."""
    seen: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        stat = os.stat(folder)
        if (stat.st_dev, stat.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # the first of two links wins
        rel = Path(folder).relative_to(root)
        for f in files:
            full = Path(folder) / f
            if not f.startswith(".") and full.is_file():
                yield (rel / f).as_posix()


def pool_root(pool_dir: str | Path | None, pool_list: str | Path | None) -> Path:
    """The folder a pool's names are relative to: ``pool_dir``, or the folder of ``pool_list``."""
    return Path(pool_dir).absolute() if pool_dir is not None else Path(pool_list).parent.absolute()


def list_pool(pool_dir: str | Path | None, pool_list: str | Path | None) -> tuple[Path, list[str]]:
    """(root, names): the pool's files as names relative to ``root``, sorted by code point.

    Exactly one of ``pool_dir`` and ``pool_list`` is given. A list's names are its entries as
    written (absolute, or relative to the list's folder, which is then the root).
    """
    if (pool_dir is None) == (pool_list is None):
        raise InputError("give the pool as exactly one of dataset.pool_dir and dataset.pool_list")
    if pool_dir is not None:
        root = pool_root(pool_dir, None)
        if not root.is_dir():
            raise InputError(f"dataset.pool_dir: {root} is not a folder")
        names = sorted(walk_files(root))
        if not names:
            raise InputError(f"dataset.pool_dir: {root} holds no files: nothing to select from")
        return root, names
    listing = Path(pool_list)
    if not listing.is_file():
        raise InputError(f"dataset.pool_list: {listing} is not a file")
    names = sorted({posixpath.normpath(entry) for entry in read_path_list(listing)})
    if not names:
        raise InputError(f"dataset.pool_list: {listing} names no files")
    return pool_root(None, listing), names


def read_path_list(listing: Path) -> list[str]:
    """The paths a pool list names: a CSV's path column (the first of :data:`PATH_COLUMNS`),
    else one path per non-empty line (``#`` starts a comment line)."""
    try:
        text = listing.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(
            f"dataset.pool_list: {listing} is not a readable text file ({err})"
        ) from None
    if listing.suffix.lower() == ".csv":
        import csv

        rows = list(csv.DictReader(io.StringIO(text)))
        columns = {c.lower(): c for c in (rows[0].keys() if rows else [])}
        column = next((columns[c] for c in PATH_COLUMNS if c in columns), None)
        if column is None:
            raise InputError(
                f"dataset.pool_list: {listing} has no path column (one of {PATH_COLUMNS}); "
                f"its columns: {list(columns.values())}"
            )
        return [row[column].strip() for row in rows if (row[column] or "").strip()]
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def scan_pool(
    pool_dir: str | Path | None = None,
    pool_list: str | Path | None = None,
    *,
    on_bad_image: str = "skip",
    workers: int = 4,
    min_images: int = 1,
) -> tuple[Path, list[FileCheck], list[FileCheck]]:
    """(root, images, skipped) of a pool: the readable, distinct images in pool order, and every
    other file with its reason (see the module docstring).

    ``workers`` threads read and decode files (Pillow and hashing release the GIL).
    ``min_images``: the largest budget; fewer readable images is an InputError, raised before
    anything is written.
    """
    if on_bad_image not in BAD_IMAGE_ACTIONS:
        raise InputError(f"on_bad_image must be one of {BAD_IMAGE_ACTIONS}, got {on_bad_image!r}")
    check_option(workers, "workers", int, low=1)
    root, names = list_pool(pool_dir, pool_list)
    images: list[FileCheck] = []
    skipped: list[FileCheck] = []
    first_of: dict[str, str] = {}
    with ThreadPoolExecutor(workers) as pool:
        checks = pool.map(lambda name: check_image(name, str(root / name)), names, chunksize=64)
        for check in checks:
            if check.reason is None and check.sha256 in first_of:
                check = FileCheck(
                    **{**vars(check), "reason": f"duplicate of {first_of[check.sha256]}"}
                )
            if check.reason is None:
                first_of[check.sha256] = check.name
                images.append(check)
                continue
            if on_bad_image == "fail" and not check.reason.startswith("duplicate"):
                raise InputError(
                    f"{check.path}: {check.reason} (on_bad_image: fail; set it to skip to leave "
                    "such files out and list them)"
                )
            skipped.append(check)
    source = (
        f"dataset.pool_dir {root}" if pool_dir is not None else f"dataset.pool_list {pool_list}"
    )
    if not images:
        raise InputError(
            f"{source}: none of its {len(names)} files is a readable image (first: "
            f"{skipped[0].name}: {skipped[0].reason})"
        )
    if len(images) < min_images:
        raise InputError(
            f"budget {min_images} exceeds the {len(images)} readable images of {source} "
            f"({len(skipped)} files skipped): lower the budget or add images"
        )
    if skipped:
        duplicates = sum(s.reason.startswith("duplicate") for s in skipped)
        print(
            f"warning: {len(skipped)} of {len(names)} files of {source} are not in the pool "
            f"({len(skipped) - duplicates} unreadable or not images, {duplicates} duplicates); "
            "see the skipped table",
            file=sys.stderr,
        )
    return root, images, skipped


def write_scan(images_csv: str | Path, skipped_csv: str | Path, images, skipped) -> None:
    """The pool table (name, path, bytes, sha256) and the skipped table, each atomically."""
    import csv

    for out, rows, header in (
        (images_csv, images, POOL_HEADER),
        (skipped_csv, skipped, SKIPPED_HEADER),
    ):
        columns = header.split(",")
        with atomic_path(out, ours=lambda p, h=header: starts_with_line(p, h)) as tmp:
            with tmp.open("w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(columns)
                writer.writerows([getattr(check, c) for c in columns] for check in rows)


def is_pool_table(path: Path) -> bool:
    """Whether ``path`` is a pool table :func:`write_scan` wrote (what a rescan may replace)."""
    return starts_with_line(path, POOL_HEADER)


def is_skipped_table(path: Path) -> bool:
    """Whether ``path`` is a skipped table :func:`write_scan` wrote."""
    return starts_with_line(path, SKIPPED_HEADER)
