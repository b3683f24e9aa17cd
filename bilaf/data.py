"""Datasets: one registry entry per source, used by the download and extract rules (SPEC §1).

- ``fashion_mnist`` (the offline default): the official IDX files by URL, else Debian's
  ``dataset-fashion-mnist`` copy. Debian recompressed the ``.gz`` files, so the ``.gz`` MD5 is
  checked only for official downloads; the SHA-256 of the decompressed bytes is checked always.
- ``cifar10`` / ``cifar100``: the official python-version tarball by URL (or from a local folder),
  MD5 checked, unpacked once, read from its pickle batches.
- ``imagenet`` / ``imagefolder``: labeled folders named in the config (class = subfolder); nothing
  to download. Rows are sorted by class name, then relative path, by code point: the same files
  give the same row order on every machine, whatever order the file system lists them in.
- ``unlabeled``: the user's own images (``dataset.pool_dir`` or ``dataset.pool_list``), no labels
  and no test split; read from the table the scan (:mod:`bilaf.scan`) wrote: the readable,
  distinct images in sorted path order, each with its path, byte size and SHA-256.

Every split is read into an :class:`Images` table: labels, a stable name per row, and the pixels
(in-memory datasets) or the folder the files are read from (folder datasets).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np

from bilaf.errors import BilafError
from bilaf.io import atomic_path, starts_with_line

SPLITS = ("train", "test")
SAMPLES_HEADER = "row,source_index,label,class,name"
DOWNLOAD_TIMEOUT = 30.0  # seconds a URL may take to answer before the next source is tried
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class DataError(BilafError):
    """A dataset could not be fetched or read; the message says from where and what to do."""


@dataclass(frozen=True)
class Images:
    """One split, row by row: labels (n,) int64, a stable name per row, the pixels or the files.

    In-memory datasets hold ``pixels`` (n, h, w) or (n, h, w, 3) uint8 and name rows
    ``<file>[<row>]``; folder datasets hold ``root`` and read ``root / names[i]``. An unlabeled
    pool has label -1 on every row, no classes, and ``files``: per row its ``path`` (the file
    read), ``bytes`` and ``sha256``.
    """

    labels: np.ndarray
    names: np.ndarray
    classes: tuple[str, ...]
    pixels: np.ndarray | None = None
    root: Path | None = None
    files: Mapping[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, i: int) -> Path:
        """The file of row ``i`` (folder datasets and unlabeled pools)."""
        return Path(self.files["path"][i]) if self.files else self.root / self.names[i]

    def take(self, rows: np.ndarray) -> Images:
        """The rows ``rows`` of this split, in that order."""
        pixels = None if self.pixels is None else self.pixels[rows]
        files = None if self.files is None else {k: v[rows] for k, v in self.files.items()}
        return replace(
            self, labels=self.labels[rows], names=self.names[rows], pixels=pixels, files=files
        )

    def digest(self) -> str:
        """SHA-256 of the (label, name[, content hash]) rows: equal digests, same samples (same
        bytes, for an unlabeled pool) in the same order."""
        sha = hashlib.sha256()
        hashes = self.files["sha256"] if self.files else [""] * len(self)
        for label, name, content in zip(self.labels, self.names, hashes, strict=True):
            sha.update(f"{label}\t{name}{chr(9) + content if content else ''}\n".encode())
        return sha.hexdigest()


def write_samples(path: str | Path, images: Images, source_index: np.ndarray) -> None:
    """CSV of what each feature row is (row, source_index, label, class, name; an unlabeled pool's
    also path, bytes, sha256), written atomically.

    It sits next to the feature store so that a row index names the same image on every machine.
    """
    import pandas as pd

    classes = np.asarray([*images.classes, ""], dtype=object)  # label -1: no class
    table = pd.DataFrame(
        {
            "row": np.arange(len(images)),
            "source_index": np.asarray(source_index, dtype=np.int64),
            "label": images.labels,
            "class": classes[images.labels],
            "name": images.names,
            **(images.files or {}),
        }
    )
    with atomic_path(path, ours=is_samples_file) as tmp:
        table.to_csv(tmp, index=False)


def is_samples_file(path: Path) -> bool:
    """Whether ``path`` is a table :func:`write_samples` wrote (what re-extraction may replace)."""
    return starts_with_line(path, SAMPLES_HEADER)


class Source(Protocol):
    """A registry entry: where a dataset's raw files come from and how a split is read."""

    urls: tuple[str, ...]
    local_dir: str | None
    raw_files: tuple[str, ...]  # what `fetch` leaves in its out_dir, relative to it
    needs_folders: bool  # True: the config names the train/test folders

    def split_sizes(self, folders: Mapping[str, str | None]) -> dict[str, int]: ...

    def fetch(
        self, out_dir: Path, urls: Sequence[str], local_dir: str | None, timeout: float
    ) -> list[Path]: ...

    def load(
        self, split: str, raw_dir: Path | None, folders: Mapping[str, str | None]
    ) -> Images: ...


# --- downloads ---------------------------------------------------------------------------------


def _digest(data: bytes, algorithm: str) -> str:
    return hashlib.new(algorithm, data).hexdigest()


def _file_md5(path: Path) -> str:
    sha = hashlib.md5()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            sha.update(block)
    return sha.hexdigest()


def _open_url(url: str, timeout: float) -> BinaryIO | None:
    """An open response for ``url``, or None when unreachable (a checksum failure is not that)."""
    try:
        return urllib.request.urlopen(url, timeout=timeout)
    except (urllib.error.URLError, OSError) as err:
        print(f"[download] {url} unreachable ({err}); trying the next source", file=sys.stderr)
        return None


def _join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


def _tried(urls: Sequence[str]) -> str:
    return ", ".join(urls) or "no URL (dataset.urls is empty)"


@dataclass(frozen=True)
class RawFile:
    """One file of a dataset: its name, the MD5 of the official .gz, the SHA-256 of its bytes."""

    name: str
    gz_md5: str
    sha256: str


def fetch_files(
    files: Sequence[RawFile],
    out_dir: str | Path,
    base_urls: Sequence[str] = (),
    local_dir: str | Path | None = None,
    timeout: float = DOWNLOAD_TIMEOUT,
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
            response = _open_url(_join(base, f"{raw.name}.gz"), timeout)
            if response is None:
                urls_alive.remove(base)
                continue
            with response:
                gz = response.read()
            if _digest(gz, "md5") != raw.gz_md5:
                raise DataError(f"{_join(base, raw.name)}.gz: MD5 mismatch (corrupt download)")
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


def _read_local(raw: RawFile, local_dir: str | Path | None, base_urls: Sequence[str]) -> bytes:
    if local_dir is not None:
        for candidate in (Path(local_dir) / f"{raw.name}.gz", Path(local_dir) / raw.name):
            if candidate.exists():
                blob = candidate.read_bytes()
                return gzip.decompress(blob) if candidate.suffix == ".gz" else blob
    raise DataError(
        f"{raw.name}: not reachable at {_tried(base_urls)} and not found in the local copy "
        f"{local_dir}; go online or run: apt-get install dataset-fashion-mnist"
    )


@dataclass(frozen=True)
class Archive:
    """An official tarball: file name, MD5, the folder it unpacks to and the files read from it."""

    name: str
    md5: str
    folder: str
    members: tuple[str, ...]


def _download(url: str, dest: Path, md5: str, timeout: float) -> bool:
    """Stream ``url`` into ``dest`` checking its MD5; False when unreachable.

    Wrong bytes raise DataError and leave no file behind (the download is written to a temporary).
    """
    response = _open_url(url, timeout)
    if response is None:
        return False
    print(f"[download] {url} -> {dest}", file=sys.stderr)
    digest = hashlib.md5()
    with response, atomic_path(dest) as tmp, tmp.open("wb") as out:
        while block := response.read(1 << 20):
            digest.update(block)
            out.write(block)
        if digest.hexdigest() != md5:
            raise DataError(
                f"{url}: MD5 {digest.hexdigest()} is not the official {md5}: a corrupt download "
                "or another file; nothing was kept, rerun to retry"
            )
    return True


def fetch_archive(
    archive: Archive,
    out_dir: str | Path,
    base_urls: Sequence[str] = (),
    local_dir: str | Path | None = None,
    timeout: float = DOWNLOAD_TIMEOUT,
) -> list[Path]:
    """Fetch ``archive`` into ``out_dir`` (MD5 checked), unpack it once, return its members' paths.

    Sources in order: the tarball already in ``out_dir`` (a bad one is removed), each base URL,
    then ``local_dir``. Nothing is done when every member is already unpacked.
    """
    out_dir = Path(out_dir)
    members = [out_dir / archive.folder / m for m in archive.members]
    if all(p.exists() for p in members):
        return members
    tarball = out_dir / archive.name
    if tarball.exists() and _file_md5(tarball) != archive.md5:
        print(f"[download] {tarball}: MD5 mismatch, removed; fetching again", file=sys.stderr)
        tarball.unlink()
    if not tarball.exists() and not any(
        _download(_join(base, archive.name), tarball, archive.md5, timeout) for base in base_urls
    ):
        _copy_local(archive, tarball, local_dir, base_urls)
    _unpack(tarball, out_dir, archive)
    missing = [str(p) for p in members if not p.exists()]
    if missing:
        raise DataError(f"{tarball} unpacked without {missing}: not the official {archive.name}")
    return members


def _copy_local(
    archive: Archive, dest: Path, local_dir: str | Path | None, base_urls: Sequence[str]
) -> None:
    candidate = Path(local_dir) / archive.name if local_dir is not None else None
    if candidate is None or not candidate.exists():
        raise DataError(
            f"{archive.name}: not reachable at {_tried(base_urls)} and not found in "
            f"dataset.local_dir ({local_dir}); go online, or download it elsewhere and set "
            "dataset.local_dir to the folder that holds it"
        )
    if _file_md5(candidate) != archive.md5:
        raise DataError(
            f"{candidate}: MD5 {_file_md5(candidate)} is not the official {archive.md5}; replace "
            "it with the official file"
        )
    with atomic_path(dest) as tmp:
        shutil.copyfile(candidate, tmp)


def _unpack(tarball: Path, out_dir: Path, archive: Archive) -> None:
    """Extract ``archive.folder`` from the tarball; it appears in ``out_dir`` only when complete."""
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".unpack.") as tmp:
        with tarfile.open(tarball, "r:gz") as tar:
            inside = [
                m
                for m in tar.getmembers()
                if m.name == archive.folder or m.name.startswith(archive.folder + "/")
            ]
            tar.extractall(tmp, members=inside, filter="data")
        final = out_dir / archive.folder
        if final.exists():
            shutil.rmtree(final)
        if (Path(tmp) / archive.folder).exists():
            os.replace(Path(tmp) / archive.folder, final)


# --- sources -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IdxSource:
    """Fashion-MNIST: four IDX files, read whole into memory."""

    files: tuple[RawFile, ...]
    sizes: Mapping[str, int]
    urls: tuple[str, ...]
    local_dir: str | None
    needs_folders: bool = False

    @property
    def raw_files(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.files)

    def split_sizes(self, folders: Mapping[str, str | None]) -> dict[str, int]:
        return dict(self.sizes)

    def fetch(
        self, out_dir: Path, urls: Sequence[str], local_dir: str | None, timeout: float
    ) -> list[Path]:
        return fetch_files(self.files, out_dir, urls, local_dir, timeout)

    def load(self, split: str, raw_dir: Path | None, folders: Mapping[str, str | None]) -> Images:
        images, labels = load_fashion_mnist(_need_raw_dir(raw_dir), split)
        names = [f"{SPLIT_PREFIX[split]}-images-idx3-ubyte[{i}]" for i in range(len(labels))]
        return Images(labels, np.asarray(names), FASHION_MNIST_CLASSES, pixels=images)


def _need_raw_dir(raw_dir: Path | None) -> Path:
    if raw_dir is None:
        raise DataError("this dataset is read from its downloaded files: pass --raw")
    return Path(raw_dir)


@dataclass(frozen=True)
class CifarSource:
    """CIFAR-10/100, python version: pickled batches of (n, 3072) uint8 rows, RGB planes."""

    archive: Archive
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: bytes
    meta: str
    names_key: bytes
    sizes: Mapping[str, int]
    urls: tuple[str, ...]
    local_dir: str | None = None
    needs_folders: bool = False

    @property
    def raw_files(self) -> tuple[str, ...]:
        return tuple(f"{self.archive.folder}/{m}" for m in self.archive.members)

    def split_sizes(self, folders: Mapping[str, str | None]) -> dict[str, int]:
        return dict(self.sizes)

    def fetch(
        self, out_dir: Path, urls: Sequence[str], local_dir: str | None, timeout: float
    ) -> list[Path]:
        return fetch_archive(self.archive, out_dir, urls, local_dir, timeout)

    def load(self, split: str, raw_dir: Path | None, folders: Mapping[str, str | None]) -> Images:
        folder = _need_raw_dir(raw_dir) / self.archive.folder
        pixels, labels, names = [], [], []
        for member in {"train": self.train, "test": self.test}[split]:
            batch = _unpickle(folder / member, (b"data", self.label_key))
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            pixels.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(np.asarray(batch[self.label_key], dtype=np.int64))
            names += [f"{member}[{i}]" for i in range(len(data))]
        meta = _unpickle(folder / self.meta, (self.names_key,))
        classes = tuple(c.decode() for c in meta[self.names_key])
        return Images(
            np.concatenate(labels),
            np.asarray(names),
            classes,
            pixels=np.ascontiguousarray(np.concatenate(pixels)),
        )


def _unpickle(path: Path, keys: tuple[bytes, ...]) -> dict[bytes, Any]:
    """A CIFAR python batch (pickled with bytes keys; trusted: its tarball's MD5 was checked)."""
    if not path.exists():
        raise DataError(f"{path} is missing: run the download rule (bilaf download) first")
    with path.open("rb") as f:
        batch = pickle.load(f, encoding="bytes")
    if not isinstance(batch, dict) or any(k not in batch for k in keys):
        raise DataError(f"{path} is not a CIFAR python batch (expected keys {list(keys)})")
    return batch


@dataclass(frozen=True)
class FolderSource:
    """Labeled image folders (class = subfolder) for train and test, from the config.

    ``sizes``: the expected image counts (ImageNet), checked when read; None counts the folders.
    """

    sizes: Mapping[str, int] | None = None
    hint: str = ""
    urls: tuple[str, ...] = ()
    local_dir: str | None = None
    raw_files: tuple[str, ...] = ()
    needs_folders: bool = True

    def split_sizes(self, folders: Mapping[str, str | None]) -> dict[str, int]:
        if self.sizes is not None:
            return dict(self.sizes)
        classes = image_classes(_folder(folders, "train", self.hint))
        return {
            split: len(list_image_folder(_folder(folders, split, self.hint), classes)[0])
            for split in SPLITS
        }

    def fetch(
        self, out_dir: Path, urls: Sequence[str], local_dir: str | None, timeout: float
    ) -> list[Path]:
        raise DataError(
            "folder datasets have nothing to download: set dataset.train_dir and dataset.test_dir"
        )

    def load(self, split: str, raw_dir: Path | None, folders: Mapping[str, str | None]) -> Images:
        classes = image_classes(_folder(folders, "train", self.hint))
        root = _folder(folders, split, self.hint)
        names, labels = list_image_folder(root, classes)
        expected = None if self.sizes is None else self.sizes[split]
        if expected is not None and len(names) != expected:
            raise DataError(
                f"dataset.{split}_dir: {root} holds {len(names)} images, not the {expected} of "
                f"this dataset; {self.hint} (or use source: imagefolder for a part of it)"
            )
        return Images(labels, names, tuple(classes), root=root)


@dataclass(frozen=True)
class UnlabeledSource:
    """The user's own unlabeled images: the pool is the scan's table (``raw``: its CSV), written
    by ``bilaf scan`` from ``dataset.pool_dir`` or ``dataset.pool_list``; no labels, no test split.
    """

    urls: tuple[str, ...] = ()
    local_dir: str | None = None
    raw_files: tuple[str, ...] = ()
    needs_folders: bool = False

    def split_sizes(self, folders: Mapping[str, str | None]) -> dict[str, int]:
        raise DataError("an unlabeled pool's size is known only after its scan")

    def fetch(
        self, out_dir: Path, urls: Sequence[str], local_dir: str | None, timeout: float
    ) -> list[Path]:
        raise DataError("an unlabeled pool has nothing to download: it is scanned (bilaf scan)")

    def load(self, split: str, raw_dir: Path | None, folders: Mapping[str, str | None]) -> Images:
        import pandas as pd

        if split != "train":
            raise DataError("an unlabeled pool has no test split: it is all pool")
        table = pd.read_csv(_need_raw_dir(raw_dir), dtype={"name": str, "path": str, "sha256": str})
        files = {
            "path": table["path"].to_numpy(),
            "bytes": table["bytes"].to_numpy(np.int64),
            "sha256": table["sha256"].to_numpy(),
        }
        labels = np.full(len(table), -1, dtype=np.int64)
        return Images(labels, table["name"].to_numpy(), (), files=files)


def _folder(folders: Mapping[str, str | None], split: str, hint: str) -> Path:
    path = folders.get(split)
    if path is None or not Path(path).is_dir():
        raise DataError(f"dataset.{split}_dir: {path} is not a folder; {hint}")
    return Path(path)


def image_classes(root: str | Path) -> list[str]:
    """The class names of a labeled folder: its subfolders, sorted by code point."""
    names = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not names:
        raise DataError(f"{root} has no class subfolders (expected <root>/<class>/<image>)")
    return names


def list_image_folder(root: str | Path, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(relative paths, labels (n,) int64) of the images under ``root/<class>/``, in stable order.

    Label = position of the class in ``classes`` (the train split's, so test labels agree). Rows
    are sorted by class, then by relative POSIX path, by code point: independent of the file
    system's listing order and of the locale. Hidden files and folders are skipped.
    """
    root = Path(root)
    unknown = sorted(set(image_classes(root)) - set(classes))
    if unknown:
        raise DataError(f"{root}: class folders {unknown[:5]} are not among the train classes")
    names: list[str] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        files = sorted(_image_files(root, cls))
        names += files
        labels += [label] * len(files)
    if not names:
        raise DataError(f"{root} holds no images with extensions {IMAGE_EXTENSIONS}")
    return np.asarray(names), np.asarray(labels, dtype=np.int64)


def _image_files(root: Path, cls: str) -> list[str]:
    found = []
    for folder, dirs, files in os.walk(root / cls, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = Path(folder).relative_to(root).as_posix()
        found += [
            f"{rel}/{f}"
            for f in files
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
        ]
    return found


# --- Fashion-MNIST -----------------------------------------------------------------------------

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
SPLIT_PREFIX = {"train": "train", "test": "t10k"}
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
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


# --- the registry ------------------------------------------------------------------------------

CIFAR_URLS = ("https://www.cs.toronto.edu/~kriz/",)
IMAGENET_HINT = (
    "ImageNet is not downloaded: set dataset.train_dir and dataset.test_dir to the ILSVRC-2012 "
    "train and val ImageFolders (val sorted into its 1000 class subfolders)"
)

UNLABELED = "unlabeled"  # the source of a user's own images (dataset.pool_dir / pool_list)
DATASETS: dict[str, Source] = {
    "fashion_mnist": IdxSource(
        FASHION_MNIST_FILES,
        {"train": 60_000, "test": 10_000},
        urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        local_dir="/usr/share/datasets/fashion-mnist",  # Debian package dataset-fashion-mnist
    ),
    "cifar10": CifarSource(
        Archive(
            "cifar-10-python.tar.gz",
            "c58f30108f718f92721af3b95e74349a",
            "cifar-10-batches-py",
            (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"),
        ),
        train=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test=("test_batch",),
        label_key=b"labels",
        meta="batches.meta",
        names_key=b"label_names",
        sizes={"train": 50_000, "test": 10_000},
        urls=CIFAR_URLS,
    ),
    "cifar100": CifarSource(
        Archive(
            "cifar-100-python.tar.gz",
            "eb9058c3a382ffc7106e4002c42a8d85",
            "cifar-100-python",
            ("train", "test", "meta"),
        ),
        train=("train",),
        test=("test",),
        label_key=b"fine_labels",
        meta="meta",
        names_key=b"fine_label_names",
        sizes={"train": 50_000, "test": 10_000},
        urls=CIFAR_URLS,
    ),
    "imagenet": FolderSource({"train": 1_281_167, "test": 50_000}, IMAGENET_HINT),
    "imagefolder": FolderSource(
        hint="set it to a folder of <class>/<image> files (any image format PIL reads)"
    ),
    UNLABELED: UnlabeledSource(),
}


def get_source(name: str) -> Source:
    """The registry entry ``name``; DataError listing the known ones otherwise."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset source {name!r}; known: {sorted(DATASETS)}")
    return DATASETS[name]


def subset_indices(n: int, size: int | None, seed: int) -> np.ndarray:
    """A seeded subset of ``size`` rows of ``n`` (all rows when size is None), sorted ascending."""
    if size is None or size == n:
        return np.arange(n, dtype=np.int64)
    if not 0 < size <= n:
        raise DataError(f"subset size {size} must be in 1..{n}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)
