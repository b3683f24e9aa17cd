"""Every reader of a feature store refuses one that is incomplete or damaged (bilaf.store)."""

import numpy as np
import pytest
import zarr

from bilaf.cli import main
from bilaf.store import StoreError, is_feature_store, missing_row_chunks, open_store
from tests.selection.contract import blobs


def write_store(path, n=300, d=8, chunk=64, **attrs):
    group = zarr.open_group(str(path), mode="w")
    group.create_array("features", data=blobs(n=n, d=d), chunks=(chunk, d))
    group.create_array("labels", data=np.arange(n) % 5, chunks=(chunk,))
    group.attrs.update({"complete": True, **attrs})
    return path


def test_a_complete_store_opens(tmp_path):
    group = open_store(write_store(tmp_path / "s.zarr"))
    np.testing.assert_array_equal(group["features"][:], blobs(n=300, d=8))


def test_lost_chunks_are_named_by_their_rows(tmp_path):
    store = write_store(tmp_path / "s.zarr")
    (store / "features" / "c" / "1" / "0").unlink()
    (store / "features" / "c" / "4" / "0").unlink()  # the last, short chunk
    features = zarr.open_group(str(store), mode="r")["features"]
    assert missing_row_chunks(store, features) == [(64, 128), (256, 300)]
    with pytest.raises(
        StoreError, match=r"'features' has lost chunk files for rows 64\.\.127, 256\.\.299 \("
    ):
        open_store(store)


def test_a_lost_label_chunk_is_refused_too(tmp_path):
    store = write_store(tmp_path / "s.zarr")
    (store / "labels" / "c" / "2").unlink()
    with pytest.raises(StoreError, match=r"'labels' has lost chunk files for rows 128\.\.191 \("):
        open_store(store)


def test_not_a_store(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(StoreError, match=r"folder is a folder without zarr\.json"):
        open_store(tmp_path / "folder")
    (tmp_path / "file.json").write_text("[1, 2]")
    with pytest.raises(StoreError, match=r"file\.json is a plain file, not a zarr feature store"):
        open_store(tmp_path / "file.json")
    zarr.open_group(str(tmp_path / "empty.zarr"), mode="w").create_array("x", data=np.ones(3))
    with pytest.raises(StoreError, match=r"has no 'features' array"):
        open_store(tmp_path / "empty.zarr")
    store = write_store(tmp_path / "s.zarr")
    (store / "zarr.json").write_text("{broken")
    with pytest.raises(StoreError, match=r"cannot be opened"):
        open_store(store)


def test_an_extraction_store_without_its_complete_flag_is_refused(tmp_path):
    store = write_store(tmp_path / "s.zarr", complete=False)
    zarr.open_group(str(store), mode="r+").create_array("chunk_done", data=np.ones(5, bool))
    with pytest.raises(StoreError, match=r"is incomplete"):
        open_store(store)


def test_only_extraction_stores_count_as_replaceable(tmp_path):
    assert not is_feature_store(write_store(tmp_path / "user.zarr"))
    extracted = write_store(tmp_path / "x.zarr")
    zarr.open_group(str(extracted), mode="r+").attrs.update(n=300, chunk_rows=64, preprocess={})
    assert is_feature_store(extracted)
    assert not is_feature_store(tmp_path / "absent.zarr")


@pytest.mark.parametrize(
    "command",
    [
        ["finetune", "--selection", "{sel}", "--n-classes", "5", "--out", "{tmp}/m.npz"],
        ["map", "--selection", "r={sel}", "--title", "t", "--out", "{tmp}/map.png"],
        ["select", "random", "--budget", "5", "--out", "{tmp}/s.json"],
        ["select", "bilaf", "--cores", "{sel}", "--budget", "9", "--out", "{tmp}/s.json"],
    ],
)
def test_every_reader_refuses_a_store_with_a_lost_chunk(tmp_path, capsys, command):
    store = write_store(tmp_path / "s.zarr")
    (store / "features" / "c" / "3" / "0").unlink()
    sel = tmp_path / "sel.json"
    sel.write_text("[1, 2, 3, 4, 5, 6]")
    args = [a.format(sel=sel, tmp=tmp_path) for a in command] + ["--features", str(store)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "lost chunk files for rows 192..255 (" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr", "sel.json"]
