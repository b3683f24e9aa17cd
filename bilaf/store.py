"""Open a zarr feature store for reading, refusing one that is incomplete or damaged.

zarr reads a chunk file that is missing as fill values (zeros), so an interrupted extraction
or a lost file would otherwise reach selection, probes and plots as rows of zeros with no
error. Every reader of a store goes through :func:`open_store`, which checks once that:

- the path is a zarr group (not a plain file, a bare folder or a ``.partial`` work store) with a
  ``features`` array;
- a store written by extraction (it has ``chunk_done``) was marked complete;
- every chunk of every array in it is on disk (a missing one is named by its rows).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from bilaf.errors import InputError

PARTIAL_SUFFIX = ".partial"
REBUILD = "remove it and rerun extraction (snakemake reruns the extract rule)"


class StoreError(InputError):
    """A feature store is missing, incomplete or damaged; the message names it and the fix."""


def is_feature_store(path: str | Path) -> bool:
    """Whether ``path`` is a zarr group written by extraction (what re-extraction may replace)."""
    meta = Path(path) / "zarr.json"
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(attrs, dict) and {"n", "chunk_rows", "preprocess"} <= attrs.keys()


def open_store(path: str | Path) -> Any:
    """The zarr group at ``path``, checked as the module docstring says; StoreError if not."""
    import zarr

    path = Path(path)
    if not path.exists():
        raise StoreError(f"feature store {path} does not exist: run the extract rule first")
    if path.name.endswith(PARTIAL_SUFFIX):
        raise StoreError(
            f"feature store {path} is an unfinished extraction: rerun extraction, which resumes "
            "it, and read the store without the .partial suffix"
        )
    if not (path / "zarr.json").is_file():
        kind = "a folder without zarr.json" if path.is_dir() else "a plain file"
        raise StoreError(
            f"{path} is {kind}, not a zarr feature store: give the .zarr folder extraction wrote"
        )
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as err:  # zarr raises several types for a damaged zarr.json
        raise StoreError(f"feature store {path} cannot be opened ({err}): {REBUILD}") from None
    if "chunk_done" in group and not group.attrs.get("complete", False):
        raise StoreError(f"feature store {path} is incomplete (extraction stopped): {REBUILD}")
    if "features" not in group:
        raise StoreError(
            f"zarr group {path} has no 'features' array: not a feature store (SPEC §1 layout: "
            "features, labels, source_index)"
        )
    for name, array in group.arrays():
        missing = missing_row_chunks(path, array)
        if missing:
            rows = ", ".join(f"{lo}..{hi - 1}" for lo, hi in missing[:5])
            more = f" and {len(missing) - 5} more chunks" if len(missing) > 5 else ""
            raise StoreError(
                f"feature store {path}: array '{name}' has lost chunk files for rows {rows}{more} "
                f"(zarr would read them as zeros): {REBUILD}"
            )
    return group


def missing_row_chunks(path: Path, array: Any) -> list[tuple[int, int]]:
    """Row ranges [lo, hi) of ``array`` (in the local store at ``path``) whose chunk files are
    missing; [] when all are on disk (one listing of the store, no chunk is read)."""
    if array.nchunks_initialized == array.nchunks:
        return []
    rows_per_chunk, n = array.chunks[0], array.shape[0]
    missing = []
    for coords in itertools.product(*(range(c) for c in array.cdata_shape)):
        key = array.metadata.encode_chunk_key(coords)
        if not (path / array.path / key).exists():
            lo = coords[0] * rows_per_chunk
            if not missing or missing[-1][0] != lo:
                missing.append((lo, min(n, lo + rows_per_chunk)))
    return missing
