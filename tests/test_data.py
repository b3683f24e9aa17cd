import gzip
import hashlib

import numpy as np
import pytest

from bilaf.data import DataError, RawFile, fetch_files, load_fashion_mnist, read_idx, subset_indices


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
