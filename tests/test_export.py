"""The export of an unlabeled pool's picks: tables, Label Studio tasks and the contact sheet."""

import itertools
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
    BROKEN_TILE,
    CORE_FRAME,
    EXPORT_FILES,
    MAX_WIDTH,
    STAT_COLUMNS,
    contact_sheet,
    labelstudio_tasks,
    pick_roles,
    pick_stats,
    pick_table,
    write_picks,
)
from tests.selection.contract import blobs

COLOURS = [(230, 20, 20), (20, 200, 40), (30, 60, 220), (240, 200, 10)]
MODES = [("RGB", "PNG"), ("RGB", "JPEG"), ("L", "PNG"), ("P", "PNG")]


def solid(path, colour, mode="RGB", fmt=None, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour)
    image.paste((255, 255, 255), (0, 0, 8, 8))  # a corner, so no tile is flat
    image.convert(mode).save(path, format=fmt)
    return str(path)


def expected_colour(i):
    """What picture i looks like in RGB: its colour, or the colour's grey for a grey picture."""
    colour = COLOURS[i % 4]
    if MODES[i % 4][0] == "L":
        return np.full(3, Image.new("RGB", (1, 1), colour).convert("L").getpixel((0, 0)))
    return np.array(colour)


@pytest.fixture
def pictures(tmp_path):
    """30 readable pictures (RGB / grey / palette, PNG / JPEG) plus a corrupt and an empty file."""
    paths = []
    for i in range(30):
        mode, fmt = MODES[i % 4]
        suffix = ".jpg" if fmt == "JPEG" else ".png"
        paths.append(solid(tmp_path / "imgs" / f"p{i}{suffix}", COLOURS[i % 4], mode, fmt))
    (tmp_path / "imgs" / "corrupt.png").write_bytes(b"\x89PNG garbage")
    (tmp_path / "imgs" / "empty.jpg").write_bytes(b"")
    return [*paths, str(tmp_path / "imgs" / "corrupt.png"), str(tmp_path / "imgs" / "empty.jpg")]


def pool(n=5):
    return [f"/p/{i}.png" for i in range(n)], [f"h{i}" for i in range(n)]


def test_pick_table_follows_the_selection():
    paths, hashes = pool()
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
    assert table["path"].tolist() == ["/p/3.png", "/p/0.png"]
    assert table["sha256"].tolist() == ["h3", "h0"]
    assert table["role"].tolist() == ["core", "boundary"]
    assert table["pseudo_class"].tolist() == [1, 0]
    assert table["score"].isna().all()
    scored = pick_table(np.array([4]), paths, hashes, ["baseline"], np.array([0]), np.array([0.5]))
    assert scored["score"].tolist() == [0.5]


@pytest.mark.parametrize(
    "selection, roles, groups, scores, hashes, match",
    [
        ([0], np.array(["judge"]), [0], None, 5, r"unknown roles \['judge'\]"),
        ([0, 1], ["core"], [0, 0], None, 5, "1 roles for 2 picks"),
        ([0, 1], ["core"] * 2, [0], None, 5, "1 pseudo_class for 2 picks"),
        ([0, 1], ["core"] * 2, [0, 0], [0.1], 5, "1 scores for 2 picks"),
        ([0], ["core"], [0], None, 4, "4 hashes for 5 paths"),
        ([5], ["core"], [0], None, 5, r"pick 5 lies outside the pool \[0, 5\)"),
        ([-1], ["core"], [0], None, 5, "pick -1 lies outside"),
    ],
)
def test_pick_table_refuses_bad_input(selection, roles, groups, scores, hashes, match):
    paths, _ = pool()
    with pytest.raises(InputError, match=match):
        pick_table(np.array(selection), paths, ["h"] * hashes, roles, np.array(groups), scores)


def test_roles_by_method_kind():
    picks, cores = np.array([4, 9, 2]), np.array([2, 7, 4])
    assert pick_roles(picks, cores, "boundary").tolist() == ["core", "boundary", "core"]
    assert pick_roles(picks, cores, "core").tolist() == ["core"] * 3
    assert pick_roles(picks, cores, "baseline").tolist() == ["baseline"] * 3
    with pytest.raises(InputError, match="unknown method kind"):
        pick_roles(picks, cores, "other")


def test_label_studio_tasks_are_exactly_the_import_schema():
    tasks = labelstudio_tasks(["a/img 1.png", "b.jpg", "c/#1?.png"], "/data/local-files/?d=")
    assert tasks == [
        {"data": {"image": "/data/local-files/?d=a/img%201.png"}},
        {"data": {"image": "/data/local-files/?d=b.jpg"}},
        {"data": {"image": "/data/local-files/?d=c/%231%3F.png"}},
    ]
    assert labelstudio_tasks(["a/img 1.png"], "") == [{"data": {"image": "a/img 1.png"}}]


def test_written_picks_read_back(tmp_path):
    paths = [f"/pool/x {i}.png" for i in range(4)]
    table = pick_table(np.array([2, 1]), paths, list("abcd"), ["baseline"] * 2, np.array([0, 1]))
    out = tmp_path / "export"
    write_picks(table, out / "p.csv", out / "p.txt", out / "ls.json", ["x 2.png", "x 1.png"])
    pd.testing.assert_frame_equal(pd.read_csv(out / "p.csv"), table, check_dtype=False)
    assert (out / "p.txt").read_text() == "/pool/x 2.png\n/pool/x 1.png\n"
    assert (out / "p.txt").read_text().splitlines() == table["path"].tolist()
    tasks = json.loads((out / "ls.json").read_text())
    assert isinstance(tasks, list) and len(tasks) == 2
    for task in tasks:  # nothing but what Label Studio's import expects, at any level
        assert list(task) == ["data"] and list(task["data"]) == ["image"]
        assert isinstance(task["data"]["image"], str)
    assert [t["data"]["image"] for t in tasks] == [
        "/data/local-files/?d=x%202.png",
        "/data/local-files/?d=x%201.png",
    ]
    write_picks(table, out / "p.csv", out / "p.txt", out / "ls.json", ["x 2.png", "x 1.png"], "")
    assert json.loads((out / "ls.json").read_text())[0] == {"data": {"image": "x 2.png"}}
    assert sorted(p.name for p in out.iterdir()) == ["ls.json", "p.csv", "p.txt"]


def test_write_picks_needs_a_url_path_per_pick(tmp_path):
    paths, hashes = pool()
    table = pick_table(np.array([2, 1]), paths, hashes, ["baseline"] * 2, np.array([0, 1]))
    with pytest.raises(InputError, match="1 URL paths for 2 picks"):
        write_picks(table, tmp_path / "a.csv", tmp_path / "a.txt", tmp_path / "a.json", ["x"])
    assert list(tmp_path.iterdir()) == []


def crimson(pixels):
    """Which pixels (any shape ..., 3) are the core frame's colour."""
    return np.abs(pixels - np.array(CORE_FRAME)).sum(-1) < 30


def test_the_contact_sheet_has_one_tile_per_pick_grouped_by_pseudo_class(tmp_path, pictures):
    n, size = len(pictures), 64
    groups = np.array([(9, 2, 5)[(i * 7) % 3] for i in range(n)])  # not sorted, not 0..G-1
    is_core = np.zeros(n, dtype=bool)
    is_core[[0, 5, 30]] = True  # 30: the corrupt file
    out = tmp_path / "sheet" / "s.png"
    boxes = contact_sheet(pictures, groups, is_core, out, tile=size, columns=5, title="t")
    sheet = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert len(boxes) == n
    h, w, _ = sheet.shape
    for i, (left, top, right, bottom) in enumerate(boxes):
        assert right - left == bottom - top == size
        assert 0 <= left < right <= w and 0 <= top < bottom <= h
        for j in range(i):
            a = boxes[j]
            assert right <= a[0] or a[2] <= left or bottom <= a[1] or a[3] <= top, (i, j)

    first = min(box[1] for box in boxes)
    assert (sheet[: first - 20] < 100).any()  # the title line, above the first header
    order = sorted(set(groups))
    for lower, group in itertools.pairwise(order):
        members = np.flatnonzero(groups == group)
        below = min(boxes[i][1] for i in members)
        assert below >= max(boxes[i][3] for i in np.flatnonzero(groups == lower))
        assert (sheet[below - 15 : below, :] < 100).any()  # the group's header line
    left_margin = min(box[0] for box in boxes)
    for group in order:  # from the left margin, picks in input order
        members = np.flatnonzero(groups == group)
        assert boxes[members[0]][0] == left_margin
        places = [(boxes[i][1], boxes[i][0]) for i in members]
        assert places == sorted(places) and len(set(places)) == len(places)

    for i, (left, top, right, bottom) in enumerate(boxes):
        tile = sheet[top:bottom, left:right]
        ring = np.concatenate([tile[:3].reshape(-1, 3), tile[-3:].reshape(-1, 3)])
        ring = np.concatenate([ring, tile[:, :3].reshape(-1, 3), tile[:, -3:].reshape(-1, 3)])
        assert crimson(ring).all() if is_core[i] else not crimson(tile).any(), i
        if is_core[i]:  # the "core" tag: white letters on crimson in the top left corner
            tag = tile[3:14, 3:26]
            assert crimson(tag).any() and (tag.min(-1) > 200).any(), i
        centre = tile[size // 2 - 4 : size // 2 + 4, size // 2 - 4 : size // 2 + 4]
        if i < 30:  # readable: not blank, and the picture's colour at its centre
            assert tile.std() > 0
            assert np.abs(centre.reshape(-1, 3).mean(0) - expected_colour(i)).max() < 40, i
        else:  # corrupt or empty: a grey tile with a darker cross
            inner = tile[3:-3, 3:-3].reshape(-1, 3)
            assert (inner == BROKEN_TILE).all(-1).mean() > 0.7, i
            assert (inner.max(-1) < 150).any(), i
    assert sorted(p.name for p in out.parent.iterdir()) == ["s.png"]


def test_thumbnails_are_upright_and_transparent_parts_white(tmp_path):
    turned = Image.new("RGB", (80, 40), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° to display": a phone photo taken upright
    turned.save(tmp_path / "turned.jpg", exif=exif)
    clear = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    clear.paste((0, 0, 255, 255), (25, 25, 75, 75))
    clear.save(tmp_path / "clear.png")
    out = tmp_path / "s.png"
    paths = [str(tmp_path / "turned.jpg"), str(tmp_path / "clear.png")]
    boxes = contact_sheet(paths, np.zeros(2), np.zeros(2), out, tile=64)
    sheet = np.asarray(Image.open(out).convert("RGB")).astype(int)
    left, top, right, bottom = boxes[0]
    red = np.abs(sheet[top:bottom, left:right] - (255, 0, 0)).max(-1) < 30
    rows, cols = np.nonzero(red)
    assert np.ptp(rows) > 1.5 * np.ptp(cols)  # taller than wide, as shown upright
    assert rows.min() >= 3 and rows.max() < 64 - 3  # inside the pad a core's frame takes
    left, top, right, bottom = boxes[1]
    corner = sheet[top + 5 : top + 14, left + 5 : left + 14]
    assert (corner > 240).all()  # transparent shows white, not its hidden black


def test_a_small_picture_fills_its_tile_with_sharp_pixels(tmp_path):
    checker = np.kron(np.indices((4, 4)).sum(0) % 2, np.ones((7, 7))).astype(np.uint8) * 255
    Image.fromarray(checker).save(tmp_path / "tiny.png")  # 28 x 28, as Fashion-MNIST
    boxes = contact_sheet([str(tmp_path / "tiny.png")], [0], [False], tmp_path / "s.png", tile=62)
    left, top, right, bottom = boxes[0]
    tile = np.asarray(Image.open(tmp_path / "s.png").convert("L"))[top:bottom, left:right]
    inner = tile[3:-3, 3:-3]  # the 56 x 56 picture: 28 px scaled by 2, nearest
    np.testing.assert_array_equal(inner, np.kron(checker, np.ones((2, 2), dtype=np.uint8)))


def test_a_wide_sheet_gets_fewer_columns(tmp_path, pictures):
    boxes = contact_sheet(pictures[:20], np.zeros(20), np.zeros(20), tmp_path / "s.png", tile=300)
    assert Image.open(tmp_path / "s.png").size[0] <= MAX_WIDTH
    assert len({box[1] for box in boxes}) == 2  # 20 tiles of 300 px in two rows


def test_a_tall_sheet_gets_smaller_tiles(tmp_path, pictures):
    paths = pictures[:30] * 4  # 120 picks in 3 groups
    groups = np.repeat([0, 1, 2], 40)
    out = tmp_path / "s.png"
    boxes = contact_sheet(paths, groups, np.zeros(120), out, tile=96, columns=8, max_height=400)
    width, height = Image.open(tmp_path / "s.png").size
    assert height <= 400 and width <= MAX_WIDTH and len(boxes) == 120
    assert 16 <= boxes[0][2] - boxes[0][0] < 96


def test_the_contact_sheet_refuses_bad_input(tmp_path, pictures):
    with pytest.raises(InputError, match="2 paths, 1 groups and 2 core flags"):
        contact_sheet(pictures[:2], np.zeros(1), np.zeros(2), tmp_path / "s.png")
    with pytest.raises(InputError, match="tile must be an integer >= 16"):
        contact_sheet(pictures[:2], np.zeros(2), np.zeros(2), tmp_path / "s.png", tile=8)
    assert not (tmp_path / "s.png").exists()


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


def test_pick_stats_against_brute_force():
    feats = blobs(n=300, d=6)
    picks = np.array([5, 80, 160, 290])
    roles = np.array(["core", "boundary", "boundary", "core"])
    stats = pick_stats(feats, picks, roles, np.array([0, 0, 1, 1]), 3)
    assert tuple(stats) == STAT_COLUMNS  # the tables' column order
    gaps = np.sqrt(((feats[:, None].astype(np.float64) - feats[picks]) ** 2).sum(-1)).min(1)
    assert (stats["picks"], stats["core"], stats["boundary"], stats["baseline"]) == (4, 2, 2, 0)
    assert (stats["pseudo_classes"], stats["pseudo_classes_reached"]) == (3, 2)
    np.testing.assert_allclose(stats["coverage_mean"], gaps.mean(), rtol=1e-6)
    np.testing.assert_allclose(stats["coverage_p95"], np.percentile(gaps, 95), rtol=1e-6)
    np.testing.assert_allclose(stats["coverage_max"], gaps.max(), rtol=1e-6)
