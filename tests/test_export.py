"""The export of an unlabeled pool's picks: tables, Label Studio tasks and the contact sheet."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from PIL import Image

from bilaf.cli import main
from bilaf.errors import InputError
from bilaf.export import (
    CORE_FRAME,
    EXPORT_FILES,
    contact_sheet,
    labelstudio_tasks,
    pick_roles,
    pick_table,
    write_picks,
)
from tests.selection.contract import blobs

COLOURS = [(230, 20, 20), (20, 200, 40), (30, 60, 220), (240, 200, 10)]


def solid(path, colour, mode="RGB", fmt=None, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour)
    image.paste((255, 255, 255), (0, 0, 8, 8))  # a corner, so no tile is flat
    image.convert(mode).save(path, format=fmt)
    return str(path)


@pytest.fixture
def pictures(tmp_path):
    """30 readable pictures (RGB / grey / palette, PNG / JPEG) plus a corrupt and an empty file."""
    paths = []
    for i in range(30):
        mode, fmt = [("RGB", "PNG"), ("RGB", "JPEG"), ("L", "PNG"), ("P", "PNG")][i % 4]
        suffix = ".jpg" if fmt == "JPEG" else ".png"
        paths.append(solid(tmp_path / "imgs" / f"p{i}{suffix}", COLOURS[i % 4], mode, fmt))
    (tmp_path / "imgs" / "corrupt.png").write_bytes(b"\x89PNG garbage")
    (tmp_path / "imgs" / "empty.jpg").write_bytes(b"")
    return [*paths, str(tmp_path / "imgs" / "corrupt.png"), str(tmp_path / "imgs" / "empty.jpg")]


def test_pick_table_follows_the_selection():
    paths, hashes = [f"/p/{i}.png" for i in range(5)], [f"h{i}" for i in range(5)]
    table = pick_table(np.array([3, 0]), paths, hashes, ["core", "boundary"], np.array([1, 0]))
    assert table.columns.tolist() == [
        "rank",
        "row",
        "path",
        "sha256",
        "role",
        "pseudo_class",
        "score",
    ]
    assert table["rank"].tolist() == [1, 2] and table["row"].tolist() == [3, 0]
    assert table["path"].tolist() == ["/p/3.png", "/p/0.png"] and table["sha256"][0] == "h3"
    assert table["score"].isna().all()


@pytest.mark.parametrize(
    "selection, roles, groups, match",
    [
        ([0], ["judge"], [0], "unknown roles"),
        ([0, 1], ["core"], [0, 0], "per pick"),
        ([5], ["core"], [0], "outside the pool"),
    ],
)
def test_pick_table_refuses_bad_input(selection, roles, groups, match):
    with pytest.raises(InputError, match=match):
        pick_table(np.array(selection), ["a"] * 5, ["h"] * 5, roles, np.array(groups))


def test_roles_by_method_kind():
    picks, cores = np.array([4, 9, 2]), np.array([2, 7, 4])
    assert pick_roles(picks, cores, "boundary").tolist() == ["core", "boundary", "core"]
    assert pick_roles(picks, cores, "core").tolist() == ["core"] * 3
    assert pick_roles(picks, cores, "baseline").tolist() == ["baseline"] * 3
    with pytest.raises(InputError, match="unknown method kind"):
        pick_roles(picks, cores, "other")


def test_label_studio_tasks_are_exactly_the_import_schema():
    tasks = labelstudio_tasks(["a/img 1.png", "b.jpg"], "/data/local-files/?d=")
    assert tasks == [
        {"data": {"image": "/data/local-files/?d=a/img%201.png"}},
        {"data": {"image": "/data/local-files/?d=b.jpg"}},
    ]
    assert labelstudio_tasks(["a/img 1.png"], "") == [{"data": {"image": "a/img 1.png"}}]


def test_written_picks_read_back(tmp_path):
    paths = [f"/pool/x {i}.png" for i in range(4)]
    table = pick_table(np.array([2, 1]), paths, list("abcd"), ["baseline"] * 2, np.array([0, 1]))
    out = tmp_path / "export"
    write_picks(table, out / "p.csv", out / "p.txt", out / "ls.json", ["x 2.png", "x 1.png"])
    pd.testing.assert_frame_equal(pd.read_csv(out / "p.csv"), table, check_dtype=False)
    assert (out / "p.txt").read_text() == "/pool/x 2.png\n/pool/x 1.png\n"
    tasks = json.loads((out / "ls.json").read_text())
    assert [t["data"]["image"] for t in tasks] == [
        "/data/local-files/?d=x%202.png",
        "/data/local-files/?d=x%201.png",
    ]
    assert sorted(p.name for p in out.iterdir()) == ["ls.json", "p.csv", "p.txt"]


def test_the_contact_sheet_has_one_tile_per_pick_grouped_by_pseudo_class(tmp_path, pictures):
    groups = np.array([(i * 7) % 3 for i in range(len(pictures))])
    is_core = np.zeros(len(pictures), dtype=bool)
    is_core[[0, 5, 31]] = True
    out = tmp_path / "sheet" / "s.png"
    boxes = contact_sheet(pictures, groups, is_core, out, tile=32, columns=5, title="t")
    sheet = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert len(boxes) == len(pictures)
    h, w, _ = sheet.shape
    for i, (left, top, right, bottom) in enumerate(boxes):
        assert 0 <= left < right <= w and 0 <= top < bottom <= h
        for j in range(i):
            a = boxes[j]
            assert right <= a[0] or a[2] <= left or bottom <= a[1] or a[3] <= top, (i, j)
    for g in (1, 2):  # each group starts on rows below the previous group, at the left margin
        assert min(boxes[i][1] for i in np.flatnonzero(groups == g)) >= max(
            boxes[i][3] for i in np.flatnonzero(groups == g - 1)
        )
        assert min(boxes[i][0] for i in np.flatnonzero(groups == g)) == boxes[0][0]
    for i, (left, top, right, bottom) in enumerate(boxes):
        tile = sheet[top + 4 : bottom - 4, left + 4 : right - 4]
        border = sheet[top, left + 5 : right - 5]
        if i < 30:  # readable: the picture's colour dominates its tile
            mean = tile.reshape(-1, 3).mean(0)
            want = np.array(Image.new("RGB", (1, 1), COLOURS[i % 4]).convert("L").getpixel((0, 0)))
            if i % 4 in (0, 1, 3):  # colour modes keep the hue
                assert np.argmax(mean) == np.argmax(COLOURS[i % 4]), (i, mean)
            else:
                assert abs(mean.mean() - want) < 40, (i, mean)
        else:  # unreadable: a grey tile
            assert np.abs(tile - tile.mean()).max() < 120 and 100 < tile.mean() < 220
        framed = (np.abs(border - CORE_FRAME).sum(1) < 30).mean() > 0.8
        assert framed == is_core[i], i
    assert sorted(p.name for p in out.parent.iterdir()) == ["s.png"]


def test_the_export_stage_writes_every_file(tmp_path, pictures):
    n = len(pictures)
    features = blobs(n=n, d=8)
    group = zarr.open_group(str(tmp_path / "pool.zarr"), mode="w")
    group.create_array("features", data=features, chunks=(16, 8))
    group.create_array("labels", data=np.full(n, -1))
    group.attrs["complete"] = True
    names = [p.split("/imgs/")[1] for p in pictures]
    samples = tmp_path / "pool.samples.csv"
    pd.DataFrame(
        {"row": range(n), "name": names, "path": pictures, "sha256": [f"h{i}" for i in range(n)]}
    ).to_csv(samples, index=False)
    (tmp_path / "sel.json").write_text(json.dumps([3, 7, 1, 30, 12]))
    (tmp_path / "cores.json").write_text(json.dumps([7, 12]))
    out = tmp_path / "export"
    args = ["export", "--features", str(tmp_path / "pool.zarr"), "--samples", str(samples)]
    args += ["--selection", str(tmp_path / "sel.json"), "--cores", str(tmp_path / "cores.json")]
    assert main([*args, "--kind", "boundary", "--tile", "24", "--out-dir", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(EXPORT_FILES.values())
    table = pd.read_csv(out / "picks.csv")
    assert table["row"].tolist() == [3, 7, 1, 30, 12]
    assert table["role"].tolist() == ["boundary", "core", "boundary", "boundary", "core"]
    centres = features[[7, 12]]
    nearest = np.argmin(((features[[3, 7, 1, 30, 12]][:, None] - centres) ** 2).sum(-1), 1)
    assert table["pseudo_class"].tolist() == nearest.tolist()
    assert all(Path(p).exists() for p in table["path"])
    assert (out / "picks.txt").read_text().splitlines() == table["path"].tolist()
    assert len(json.loads((out / "labelstudio.json").read_text())) == 5
    assert Image.open(out / "contact_sheet.png").size[0] > 0
