"""Backbone feature extraction into a chunked, resumable zarr v3 store.

Store layout (SPEC §1): group with ``features`` (n, d) float32 chunked by rows, ``labels`` (n,)
int64, ``source_index`` (n,) int64 (row in the original split), ``chunk_done`` (n_chunks,) bool,
and attrs recording everything that produced it (preprocessing included). Work happens in
``<out>.partial``; each finished row chunk is flagged in ``chunk_done``, so a killed run redoes
only the unfinished chunks; the store is renamed to ``<out>`` only when complete.

Images come through a DataLoader (workers decode and resize image files; in-memory datasets are
resized in batches on the device). On CUDA the model runs channels-last under bf16 autocast.

:func:`extract` is the stage (``bilaf extract``): a dataset split in, a store and its samples CSV
out.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bilaf.backbones import Preprocess
from bilaf.data import Images
from bilaf.devices import device_name
from bilaf.errors import BilafError
from bilaf.io import check_replaceable
from bilaf.store import PARTIAL_SUFFIX, is_feature_store, open_store


class FeatureError(BilafError):
    """Extraction failed or produced unusable features; the message says which and why."""


def resize_crop(x: Any, prep: Preprocess) -> Any:
    """Float images (n, 3, h, w) resized (shorter side, aspect kept), centre-cropped (SPEC §1)."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    size = prep.image_size
    if (h, w) == (size, size) and prep.crop_pct == 1:
        return x
    scale = prep.resize_to / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    smooth = prep.interpolation != "nearest"
    kwargs = {"align_corners": False, "antialias": True} if smooth else {}
    x = F.interpolate(x, size=(new_h, new_w), mode=prep.interpolation, **kwargs)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return x[..., top : top + size, left : left + size]


class ImageRows:
    """Map-style dataset for the DataLoader: row i of an :class:`Images` table as uint8 (h, w[, 3]).

    Image files are decoded to RGB and resized to the model's input size here, in the loader's
    workers (their sizes differ); in-memory pixels are returned as they are, for batched resizing
    on the device.
    """

    def __init__(self, images: Images, prep: Preprocess) -> None:
        self.images = images
        self.prep = prep
        self.resized_here = images.pixels is None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Any:
        import torch

        if not self.resized_here:
            return torch.from_numpy(np.ascontiguousarray(self.images.pixels[i]))
        from PIL import Image

        path = self.images.path(i)
        try:
            with Image.open(path) as image:
                rgb = np.array(image.convert("RGB"))
        except OSError as err:
            raise FeatureError(f"{path}: cannot be read as an image ({err}); remove it") from err
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
        x = resize_crop(x, self.prep).round_().clamp_(0, 255)
        return x[0].permute(1, 2, 0).to(torch.uint8).contiguous()


def model_input(
    images: Any,
    prep: Preprocess,
    device: str,
    crop: Callable[[Any, Preprocess], Any] | None = resize_crop,
) -> Any:
    """uint8 images (n, h, w) grey or (n, h, w, 3) RGB (numpy or torch) -> the float32 batch
    (n, 3, s, s) a backbone takes, on ``device``; extraction and full finetuning share it.

    Scaled to [0, 1], grey repeated to three channels, then ``crop(x, prep)`` makes it s x s
    (default :func:`resize_crop`, the extraction's; None when the images are at size already),
    normalised by ``prep.mean`` / ``prep.std``, channels-last on CUDA.
    """
    import torch

    x = images if torch.is_tensor(images) else torch.from_numpy(np.ascontiguousarray(images))
    x = x.to(device, non_blocking=True).float().div_(255.0)
    x = x.unsqueeze(1).expand(-1, 3, -1, -1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    if crop is not None:
        x = crop(x, prep)
    mean = torch.tensor(prep.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, device=device).view(1, 3, 1, 1)
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if device.startswith("cuda") else x


def embed(
    images: Any, model: Any, prep: Preprocess, device: str = "cpu", resize: bool = True
) -> np.ndarray:
    """Features (n, d) float32 of uint8 images (n, h, w) greyscale or (n, h, w, 3) RGB.

    ``resize``: False when the images are already at the model's input size (decoded files).
    """
    import torch

    x = model_input(images, prep, device, resize_crop if resize else None)
    on_cuda = device.startswith("cuda")
    with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=on_cuda):
        out = model(x)
    return out.float().cpu().numpy()


def chunk_batches(
    chunks: np.ndarray, n: int, chunk_rows: int, batch_size: int
) -> list[tuple[int, int, int]]:
    """(chunk, lo, hi) of every batch of the given row chunks, in order; no batch spans chunks."""
    batches = []
    for chunk in chunks:
        end = min(n, (int(chunk) + 1) * chunk_rows)
        for lo in range(int(chunk) * chunk_rows, end, batch_size):
            batches.append((int(chunk), lo, min(end, lo + batch_size)))
    return batches


def extract_to_zarr(
    out: str | Path,
    images: Images,
    source_index: np.ndarray,
    model: Any,
    prep: Preprocess,
    attrs: dict[str, Any],
    *,
    batch_size: int,
    chunk_rows: int,
    workers: int,
    device: str | None,
) -> Path:
    """Embed every row of ``images`` chunk by chunk into a zarr group at ``out`` (the loader's
    settings come from :func:`extract`, whose signature holds their defaults).

    A leftover ``<out>.partial`` is resumed only when its attrs equal this run's (so the same
    rows, model and preprocessing); else it is restarted. Logs images/s to stderr.
    """
    import torch

    out = Path(out)
    partial = out.with_name(out.name + PARTIAL_SUFFIX)
    check_replaceable(out, is_feature_store)  # before any work: a typo never costs a store
    check_replaceable(partial, lambda p: (p / "zarr.json").is_file())
    device = device_name(device)
    on_cuda = device.startswith("cuda")
    model = model.to(device, memory_format=torch.channels_last) if on_cuda else model.to(device)
    n = len(images)
    run_attrs = {
        **attrs,
        "preprocess": asdict(prep),
        "n": int(n),
        "chunk_rows": int(chunk_rows),
    }
    group = _open_partial(partial, run_attrs)
    if group is None:
        group = _create_store(partial, run_attrs, images.labels, source_index, chunk_rows)
    done = group["chunk_done"][:]
    batches = chunk_batches(np.flatnonzero(~done), n, chunk_rows, batch_size)
    rows = ImageRows(images, prep)
    loader = torch.utils.data.DataLoader(
        rows,
        batch_sampler=[range(lo, hi) for _, lo, hi in batches],
        num_workers=workers,
        pin_memory=on_cuda,
    )
    rows_left = sum(hi - lo for _, lo, hi in batches)
    start = time.perf_counter()
    with tqdm(
        total=n,
        initial=n - rows_left,
        unit="img",
        desc=f"extract {out.name}",
        file=sys.stderr,
        mininterval=2.0,
    ) as bar:
        blocks: list[np.ndarray] = []
        for (chunk, lo, hi), batch in zip(batches, loader, strict=True):
            blocks.append(embed(batch, model, prep, device, resize=not rows.resized_here))
            bar.update(hi - lo)
            if hi == min(n, (chunk + 1) * chunk_rows):
                _write_chunk(group, chunk, chunk_rows, np.concatenate(blocks), done)
                blocks = []
    seconds = time.perf_counter() - start
    print(
        f"[extract] {out.name}: {rows_left} images in {seconds:.1f} s, "
        f"{rows_left / max(seconds, 1e-9):.1f} images/s ({device}, batch {batch_size}, "
        f"{workers} workers; {n - rows_left} rows resumed)",
        file=sys.stderr,
    )
    group.attrs["complete"] = True
    check_replaceable(out, is_feature_store)
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    return out


def extract(
    out: str | Path,
    source: str,
    split: str,
    dataset: str,
    backbone: str,
    *,
    weights: str | None = "hub",
    raw: str | Path | None = None,
    folders: Mapping[str, str | None] | None = None,
    subset_size: int | None = None,
    subset_seed: int = 0,
    image_size: int | None = None,
    interpolation: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    crop_pct: float = 1.0,
    batch_size: int = 128,
    chunk_rows: int = 2048,
    workers: int = 0,
    device: str | None = None,
    samples: str | Path | None = None,
) -> Path:
    """The stage ``bilaf extract``: features of ``split`` of the dataset registry entry
    ``source`` (all rows, or a seeded subset of ``subset_size``) by timm ``backbone`` with
    ``weights``, written by :func:`extract_to_zarr` to ``out``, plus the CSV naming each row's
    image at ``samples`` (default ``<out>.samples.csv``).

    Preprocessing is the model's except what is given (:func:`bilaf.backbones.resolve_preprocess`);
    the store's attrs record the dataset, weights, subset, classes and the samples' digest.
    """
    from bilaf.backbones import build_backbone, resolve_preprocess
    from bilaf.data import get_source, subset_indices, write_samples

    out = Path(out)
    images = get_source(source).load(split, raw, folders or {})
    rows = subset_indices(len(images), subset_size, subset_seed)
    images = images.take(rows)
    prep = resolve_preprocess(backbone, image_size, interpolation, mean, std, crop_pct)
    attrs = {
        "dataset": dataset,
        "source": source,
        "split": split,
        "backbone": backbone,
        "weights": weights,
        "subset_size": subset_size,
        "subset_seed": subset_seed,
        "classes": list(images.classes),
        "samples_sha256": images.digest(),
    }
    model = build_backbone(backbone, weights)
    extract_to_zarr(
        out,
        images,
        rows,
        model,
        prep,
        attrs,
        batch_size=batch_size,
        chunk_rows=chunk_rows,
        workers=workers,
        device=device,
    )
    write_samples(samples or out.with_suffix(".samples.csv"), images, rows)
    return out


def _create_store(
    partial: Path,
    run_attrs: dict[str, Any],
    labels: np.ndarray,
    source_index: np.ndarray,
    chunk_rows: int,
) -> Any:
    import zarr

    n = len(labels)
    group = zarr.open_group(str(partial), mode="w")
    group.attrs.update(_jsonable(run_attrs))
    group.create_array("labels", data=np.asarray(labels, dtype=np.int64), chunks=(max(n, 1),))
    group.create_array(
        "source_index", data=np.asarray(source_index, dtype=np.int64), chunks=(max(n, 1),)
    )
    n_chunks = -(-n // chunk_rows)
    group.create_array(
        "chunk_done", data=np.zeros(n_chunks, dtype=bool), chunks=(max(n_chunks, 1),)
    )
    return group


def _write_chunk(
    group: Any, chunk: int, chunk_rows: int, block: np.ndarray, done: np.ndarray
) -> None:
    """Write one row chunk (creating ``features`` at the first one) and flag it done."""
    lo = chunk * chunk_rows
    if not np.isfinite(block).all():
        raise FeatureError(f"non-finite features in rows {lo}..{lo + len(block)}: check the model")
    if "features" not in group:
        n, dim = group["labels"].shape[0], block.shape[1]
        group.create_array("features", shape=(n, dim), dtype="float32", chunks=(chunk_rows, dim))
    group["features"][lo : lo + len(block)] = block
    done[chunk] = True
    group["chunk_done"][:] = done


def _open_partial(partial: Path, run_attrs: dict[str, Any]) -> Any:
    """The partial group when it belongs to this very run, else None (and it is removed)."""
    import zarr

    if not partial.exists():
        return None
    try:
        group = zarr.open_group(str(partial), mode="r+")
        stored = {key: group.attrs[key] for key in run_attrs}
        if stored == _jsonable(run_attrs) and "chunk_done" in group:
            print(f"[extract] resuming {partial}", file=sys.stderr)
            return group
    except (KeyError, FileNotFoundError, ValueError):
        pass
    shutil.rmtree(partial)
    return None


def _jsonable(obj: Any) -> Any:
    """Tuples as lists, as attrs read back from JSON, so that they compare equal."""
    return json.loads(json.dumps(obj))


def open_features(path: str | Path) -> tuple[Any, np.ndarray]:
    """(features zarr array, labels) of a complete store (:func:`bilaf.store.open_store`)."""
    group = open_store(path)
    return group["features"], group["labels"][:]
