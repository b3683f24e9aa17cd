"""Datasets: fetch with checksums (official URL first, a local packaged copy otherwise) and read.

Fashion-MNIST is the offline default (SPEC §1): the official IDX files by URL when reachable, else
Debian's ``dataset-fashion-mnist`` copy. Debian recompressed the ``.gz`` files, so the ``.gz`` MD5
is checked only for official downloads; the SHA-256 of the decompressed bytes is checked always.
"""

from __future__ import annotations

import gzip
import hashlib
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bilaf.io import atomic_path


@dataclass(frozen=True)
class RawFile:
    """One file of a dataset: its name, the MD5 of the official .gz, the SHA-256 of its bytes."""

    name: str
    gz_md5: str
    sha256: str


FASHION_MNIST_FILES = (
    RawFile(
        "train-images-idx3-ubyte",
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    RawFile(
        "train-labels-idx1-ubyte",
        "25c81989df183df01b3e8a0aad5dffbe",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    RawFile(
        "t10k-images-idx3-ubyte",
        "bef4ecab320f06d8554ea6380940ec79",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    RawFile(
        "t10k-labels-idx1-ubyte",
        "bb300cfdad3c16e7a12a480ee83cd310",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
)
FASHION_MNIST_URLS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
FASHION_MNIST_LOCAL = "/usr/share/datasets/fashion-mnist"
SPLIT_PREFIX = {"train": "train", "test": "t10k"}


class DataError(ValueError):
    """A dataset could not be fetched or read; the message says from where and what to do."""


def _digest(data: bytes, algorithm: str) -> str:
    return hashlib.new(algorithm, data).hexdigest()


def _fetch_url(url: str, timeout: float) -> bytes | None:
    """The body at ``url``, or None when unreachable (a checksum failure is not unreachability)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except (urllib.error.URLError, OSError) as err:
        print(f"[download] {url} unreachable ({err}); trying the next source", file=sys.stderr)
        return None


def fetch_files(
    files: tuple[RawFile, ...],
    out_dir: str | Path,
    base_urls: tuple[str, ...] | list[str] = (),
    local_dir: str | Path | None = None,
    timeout: float = 10.0,
) -> list[Path]:
    """Put each file, decompressed and verified, in ``out_dir``; return their paths.

    Sources in order: each base URL (``.gz`` MD5 checked), then ``local_dir`` (``.gz`` or plain).
    After the first unreachable URL the remaining files skip URLs, so an offline run waits once.
    """
    out_dir = Path(out_dir)
    urls_alive = list(base_urls)
    paths = []
    for raw in files:
        data = None
        for base in list(urls_alive):
            gz = _fetch_url(base.rstrip("/") + f"/{raw.name}.gz", timeout)
            if gz is None:
                urls_alive.remove(base)
                continue
            if _digest(gz, "md5") != raw.gz_md5:
                raise DataError(f"{base}{raw.name}.gz: MD5 mismatch (corrupt download); retry")
            data = gzip.decompress(gz)
            break
        if data is None:
            data = _read_local(raw, local_dir, base_urls)
        if _digest(data, "sha256") != raw.sha256:
            raise DataError(f"{raw.name}: SHA-256 of the decompressed bytes does not match")
        with atomic_path(out_dir / raw.name) as tmp:
            tmp.write_bytes(data)
        paths.append(out_dir / raw.name)
    return paths


def _read_local(raw: RawFile, local_dir: str | Path | None, base_urls) -> bytes:
    tried = ", ".join(base_urls) or "no URL configured"
    if local_dir is not None:
        for candidate in (Path(local_dir) / f"{raw.name}.gz", Path(local_dir) / raw.name):
            if candidate.exists():
                blob = candidate.read_bytes()
                return gzip.decompress(blob) if candidate.suffix == ".gz" else blob
    raise DataError(
        f"{raw.name}: not reachable at {tried} and not found in the local copy "
        f"{local_dir}; go online or run: apt-get install dataset-fashion-mnist"
    )


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format): big-endian header, then uint8 data."""
    blob = Path(path).read_bytes()
    if len(blob) < 4 or blob[:2] != b"\x00\x00" or blob[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    ndim = blob[3]
    shape = tuple(int.from_bytes(blob[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(blob, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path}: header says {shape} but holds {data.size} bytes (truncated?)")
    return data.reshape(shape)


def load_fashion_mnist(raw_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 28, 28) uint8 and labels (n,) int64 of a split ('train' or 'test')."""
    if split not in SPLIT_PREFIX:
        raise DataError(f"unknown Fashion-MNIST split {split!r}; use one of {list(SPLIT_PREFIX)}")
    prefix = Path(raw_dir) / SPLIT_PREFIX[split]
    images = read_idx(f"{prefix}-images-idx3-ubyte")
    labels = read_idx(f"{prefix}-labels-idx1-ubyte").astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{prefix}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images, labels


def subset_indices(n: int, size: int | None, seed: int) -> np.ndarray:
    """A seeded subset of ``size`` rows of ``n`` (all rows when size is None), sorted ascending."""
    if size is None or size == n:
        return np.arange(n, dtype=np.int64)
    if not 0 < size <= n:
        raise DataError(f"subset size {size} must be in 1..{n}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)
