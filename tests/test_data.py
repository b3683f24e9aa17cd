import dataclasses
import gzip
import hashlib
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from bilaf.data import (
    DATASETS,
    CifarSource,
    DataError,
    RawFile,
    fetch_files,
    load_fashion_mnist,
    read_idx,
    subset_indices,
    write_samples,
)


def idx_bytes(array: np.ndarray) -> bytes:
    header = b"\x00\x00\x08" + bytes([array.ndim])
    header += b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + array.astype(np.uint8).tobytes()


def raw_file(name: str, data: bytes, gz: bytes) -> RawFile:
    return RawFile(name, hashlib.md5(gz).hexdigest(), hashlib.sha256(data).hexdigest())


@pytest.fixture
def mirror(tmp_path):
    """A fake official mirror (served by file:// URL) and a recompressed local copy."""
    data = idx_bytes(np.arange(24).reshape(2, 3, 4))
    official, local = tmp_path / "official", tmp_path / "local"
    official.mkdir()
    local.mkdir()
    gz = gzip.compress(data, mtime=0)
    (official / "x-idx3-ubyte.gz").write_bytes(gz)
    (local / "x-idx3-ubyte.gz").write_bytes(gzip.compress(data, compresslevel=1, mtime=1))
    return data, raw_file("x-idx3-ubyte", data, gz), official, local


def test_fetch_from_url_verifies_and_decompresses(mirror, tmp_path):
    data, raw, official, _ = mirror
    (path,) = fetch_files((raw,), tmp_path / "out", [official.as_uri() + "/"])
    assert path.read_bytes() == data


def test_unreachable_url_falls_back_to_local_copy(mirror, tmp_path):
    data, raw, _, local = mirror
    (path,) = fetch_files((raw,), tmp_path / "out", ["file:///nonexistent/"], local)
    assert path.read_bytes() == data


def test_corrupt_download_is_an_error_and_writes_nothing(mirror, tmp_path):
    _, raw, official, local = mirror
    (official / "x-idx3-ubyte.gz").write_bytes(gzip.compress(b"tampered"))
    with pytest.raises(DataError, match="MD5 mismatch"):
        fetch_files((raw,), tmp_path / "out", [official.as_uri() + "/"], local)
    assert not (tmp_path / "out" / "x-idx3-ubyte").exists()


def test_wrong_local_bytes_fail_the_sha256_check(mirror, tmp_path):
    _, raw, _, local = mirror
    (local / "x-idx3-ubyte.gz").write_bytes(gzip.compress(b"other"))
    with pytest.raises(DataError, match="SHA-256"):
        fetch_files((raw,), tmp_path / "out", [], local)


def test_neither_source_names_both(mirror, tmp_path):
    _, raw, _, _ = mirror
    with pytest.raises(DataError, match=r"file:///nowhere/.*not found in the local copy"):
        fetch_files((raw,), tmp_path / "out", ["file:///nowhere/"], tmp_path / "empty")


def test_read_idx_and_split_loader(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(images))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([0, 9, 3, 3, 1])))
    x, y = load_fashion_mnist(tmp_path, "test")
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, [0, 9, 3, 3, 1])
    assert y.dtype == np.int64


def test_truncated_idx_is_rejected(tmp_path):
    (tmp_path / "f").write_bytes(idx_bytes(np.zeros((4, 2, 2)))[:-3])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "f")


def test_subset_is_seeded_sorted_and_distinct():
    a, b = subset_indices(1000, 100, 0), subset_indices(1000, 100, 0)
    np.testing.assert_array_equal(a, b)
    assert np.all(np.diff(a) > 0) and a.size == 100
    assert not np.array_equal(a, subset_indices(1000, 100, 1))
    np.testing.assert_array_equal(subset_indices(7, None, 0), np.arange(7))


# --- CIFAR: fake tarballs in the official python-version format ---------------------------------


def cifar_tarball(root: Path, variant: str, per_batch: int = 3) -> tuple[Path, CifarSource]:
    """A tarball laid out like the official one (pickled batches, bytes keys) and its source.

    Pixel value = image number (mod 256) in every plane, so the unpacking order is checkable.
    """
    source = DATASETS[variant]
    folder = root / "build" / source.archive.folder
    folder.mkdir(parents=True)
    count = 0
    for member in (*source.train, *source.test):
        n = per_batch
        data = np.repeat((np.arange(count, count + n) % 256).astype(np.uint8)[:, None], 3072, 1)
        data[:, 1024:2048] = 7  # the green plane, to check the channel order
        batch = {
            b"batch_label": member.encode(),
            source.label_key: [(count + i) % 10 for i in range(n)],
            b"data": data,
            b"filenames": [f"img{count + i}.png".encode() for i in range(n)],
        }
        (folder / member).write_bytes(pickle.dumps(batch, protocol=2))
        count += n
    names = [f"class{i}".encode() for i in range(100 if variant == "cifar100" else 10)]
    (folder / source.meta).write_bytes(pickle.dumps({source.names_key: names}, protocol=2))
    mirror = root / "mirror"
    mirror.mkdir()
    tarball = mirror / source.archive.name
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(folder, arcname=source.archive.folder)
    md5 = hashlib.md5(tarball.read_bytes()).hexdigest()
    return tarball, dataclasses.replace(
        source, archive=dataclasses.replace(source.archive, md5=md5)
    )


@pytest.mark.parametrize("variant", ["cifar10", "cifar100"])
def test_cifar_tarball_is_fetched_checked_unpacked_and_read(tmp_path, variant):
    tarball, source = cifar_tarball(tmp_path, variant)
    out = tmp_path / "resources"
    paths = source.fetch(out, [tarball.parent.as_uri()], None, 5.0)
    assert [p.relative_to(out).as_posix() for p in paths] == list(source.raw_files)
    train = source.load("train", out, {})
    n_train = 3 * len(source.train)
    assert train.pixels.shape == (n_train, 32, 32, 3) and train.pixels.dtype == np.uint8
    np.testing.assert_array_equal(train.pixels[:, 5, 9, 0], np.arange(n_train))  # red plane
    assert (train.pixels[..., 1] == 7).all()  # green plane
    np.testing.assert_array_equal(train.labels, np.arange(n_train) % 10)
    assert train.names[0] == f"{source.train[0]}[0]"
    assert len(train.classes) == (100 if variant == "cifar100" else 10)
    test = source.load("test", out, {})
    np.testing.assert_array_equal(test.pixels[:, 0, 0, 0], np.arange(n_train, n_train + 3))
    # unpacked once: a second fetch needs neither the URL nor the tarball
    (out / source.archive.name).unlink()
    assert source.fetch(out, ["file:///nowhere/"], None, 5.0) == paths


def test_cifar_md5_mismatch_is_an_error_and_the_bad_file_is_removed(tmp_path):
    tarball, source = cifar_tarball(tmp_path, "cifar10")
    bad = dataclasses.replace(source, archive=dataclasses.replace(source.archive, md5="0" * 32))
    out = tmp_path / "resources"
    with pytest.raises(DataError, match=r"MD5 [0-9a-f]{32} is not the official 0{32}"):
        bad.fetch(out, [tarball.parent.as_uri()], None, 5.0)
    assert not any(out.iterdir()), "nothing of a bad download may stay"


def test_cifar_bad_cached_tarball_is_replaced_and_local_copy_is_the_fallback(tmp_path, capsys):
    tarball, source = cifar_tarball(tmp_path, "cifar100")
    out = tmp_path / "resources"
    out.mkdir()
    (out / source.archive.name).write_bytes(b"truncated")
    source.fetch(out, ["file:///nowhere/"], tarball.parent, 5.0)
    assert "MD5 mismatch, removed" in capsys.readouterr().err
    assert (out / source.archive.name).read_bytes() == tarball.read_bytes()
    assert len(source.load("train", out, {})) == 3


def test_cifar_without_any_source_says_what_to_do(tmp_path):
    _, source = cifar_tarball(tmp_path, "cifar10")
    with pytest.raises(DataError, match=r"file:///nowhere/ and not found in dataset.local_dir"):
        source.fetch(tmp_path / "out", ["file:///nowhere/"], tmp_path / "empty", 5.0)


# --- labeled folders ------------------------------------------------------------------------------


def make_folder(root: Path, files: list[str], seed: int) -> Path:
    """PNG files at the given relative paths, created in a seeded random order."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for rel in rng.permutation(files):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)).save(path)
    return root


FILES = ["dog/b.png", "cat/z.png", "cat/a.PNG", "dog/sub/c.png", "Zebra/x.png", "cat/10.png"]


def test_image_folder_order_is_stable_and_sorted_by_class_then_path(tmp_path):
    first = make_folder(tmp_path / "one", FILES, seed=0)
    second = make_folder(tmp_path / "two", FILES, seed=1)  # other creation order
    (second / "cat" / ".hidden.png").write_bytes(b"")
    (second / "cat" / "notes.txt").write_text("not an image")
    source = DATASETS["imagefolder"]
    a = source.load("train", None, {"train": first})
    b = source.load("train", None, {"train": second})
    assert a.classes == ("Zebra", "cat", "dog")  # code point order: upper case first
    assert list(a.names) == [
        "Zebra/x.png",
        "cat/10.png",
        "cat/a.PNG",
        "cat/z.png",
        "dog/b.png",
        "dog/sub/c.png",
    ]
    np.testing.assert_array_equal(a.labels, [0, 1, 1, 1, 2, 2])
    assert list(b.names) == list(a.names) and a.digest() == b.digest()
    assert source.split_sizes({"train": str(first), "test": str(second)}) == {"train": 6, "test": 6}


def test_test_folder_labels_follow_the_train_classes(tmp_path):
    train = make_folder(tmp_path / "train", FILES, seed=0)
    test = make_folder(tmp_path / "test", ["dog/q.png"], seed=0)
    images = DATASETS["imagefolder"].load("test", None, {"train": train, "test": test})
    np.testing.assert_array_equal(images.labels, [2])
    make_folder(test, ["wolf/q.png"], seed=0)
    with pytest.raises(DataError, match=r"class folders \['wolf'\] are not among the train"):
        DATASETS["imagefolder"].load("test", None, {"train": train, "test": test})


def test_imagenet_folders_absent_or_wrong_size_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match=r"dataset.train_dir: .* ImageNet is not downloaded"):
        DATASETS["imagenet"].load("train", None, {"train": str(tmp_path / "nope")})
    train = make_folder(tmp_path / "train", FILES, seed=0)
    with pytest.raises(DataError, match=r"holds 6 images, not the 1281167"):
        DATASETS["imagenet"].load("train", None, {"train": train})


def test_samples_file_names_every_row(tmp_path):
    import pandas as pd

    images = DATASETS["imagefolder"].load("train", None, {"train": make_folder(tmp_path, FILES, 0)})
    rows = np.array([4, 0, 2])
    write_samples(tmp_path / "s.csv", images.take(rows), rows)
    table = pd.read_csv(tmp_path / "s.csv")
    assert list(table.columns) == ["row", "source_index", "label", "class", "name"]
    assert table["name"].tolist() == ["dog/b.png", "Zebra/x.png", "cat/a.PNG"]
    assert table["class"].tolist() == ["dog", "Zebra", "cat"]
    assert table["source_index"].tolist() == [4, 0, 2]
