import json

import numpy as np
import pytest
import zarr

from bilaf.cli import main
from bilaf.errors import InputError
from bilaf.features import open_features
from bilaf.pool_map import fit_pca, plot_pool_map, project
from bilaf.selection import SelectionError
from tests.selection.contract import blobs


def test_pca_matches_numpy_svd_up_to_sign():
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(300, 6)) * [5, 3, 1, 0.5, 0.2, 0.1]).astype(np.float32) + 7
    mean, components, ratio, rows = fit_pca(x, chunk_rows=64)
    assert rows.tolist() == list(range(300))  # a small pool is fitted whole
    centred = x.astype(np.float64) - x.mean(axis=0, dtype=np.float64)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    signs = np.sign((components * vt[:2]).sum(axis=1))
    np.testing.assert_allclose(components, signs[:, None] * vt[:2], atol=1e-4)
    np.testing.assert_allclose(ratio, s[:2] ** 2 / (s**2).sum(), rtol=1e-4)
    xy = project(x, mean, components, chunk_rows=64)  # chunked: 5 chunks, the last short
    np.testing.assert_allclose(xy, centred @ components.T, rtol=1e-4, atol=1e-3)


def test_pca_fit_sample_is_seeded_and_bounded():
    x = blobs(n=500, d=8)
    first, second = fit_pca(x, max_rows=100, seed=3), fit_pca(x, max_rows=100, seed=3)
    assert first[3].size == 100 and np.unique(first[3]).size == 100
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.fixture
def pool(tmp_path):
    """A small zarr pool store as `bilaf extract` writes it (features chunked by rows)."""
    x = blobs(n=400, d=16)
    group = zarr.open_group(str(tmp_path / "pool.zarr"), mode="w")
    group.create_array("features", data=x, chunks=(64, 16))
    group.create_array("labels", data=np.arange(400) % 8)
    group.attrs["complete"] = True
    return tmp_path / "pool.zarr", x


def test_map_files_written_from_a_zarr_pool(pool, tmp_path):
    features, labels = open_features(pool[0])  # read in row chunks, never whole
    outs = [tmp_path / "out" / "map.png", tmp_path / "out" / "sub" / "map.svg"]
    selections = {"random": np.arange(0, 400, 20), "bilaf": np.array([1, 2, 3, 50, 60])}
    written = plot_pool_map(features, labels, selections, np.array([1, 2, 9]), outs, "t")
    assert written == outs
    assert outs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in outs[1].read_text()
    files = [p.name for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert sorted(files) == ["map.png", "map.svg"]  # no temporaries left


@pytest.mark.parametrize("bad", [[0, 400], [-1, 3], [[1, 2]], [0.5]])
def test_a_selection_outside_the_pool_names_the_method(pool, tmp_path, bad):
    _, x = pool
    with pytest.raises(SelectionError, match="selection 'kmeans'"):
        plot_pool_map(x, None, {"random": [0, 1], "kmeans": bad}, None, [tmp_path / "m.png"], "t")
    assert not (tmp_path / "m.png").exists()


def test_bad_cores_and_suffix_are_errors(pool, tmp_path):
    _, x = pool
    with pytest.raises(SelectionError, match="cores contains index 400"):
        plot_pool_map(x, None, {"bilaf": [0]}, np.array([400]), [tmp_path / "m.png"], "t")
    with pytest.raises(InputError, match=r"\.png or \.svg"):
        plot_pool_map(x, None, {"bilaf": [0]}, None, [tmp_path / "m.pdf"], "t")


def test_cli_map(pool, tmp_path, capsys):
    store, _ = pool
    (tmp_path / "r.json").write_text(json.dumps(list(range(0, 400, 40))))
    (tmp_path / "b.json").write_text(json.dumps([5, 6, 7, 100]))
    (tmp_path / "c.json").write_text(json.dumps([5, 6]))
    outs = [str(tmp_path / "m.png"), str(tmp_path / "m.svg")]
    args = ["map", "--features", str(store), "--title", "pool", "--out", *outs]
    sel = ["--selection", f"random={tmp_path / 'r.json'}", f"bilaf={tmp_path / 'b.json'}"]
    assert main([*args, *sel, "--cores", str(tmp_path / "c.json")]) == 0
    assert capsys.readouterr().out.split() == outs
    assert main([*args, "--selection", "no-path"]) == 2
    assert "expected NAME=PATH" in capsys.readouterr().err
