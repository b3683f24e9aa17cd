"""The scan of an unlabeled pool: which files are images, in what order, why the rest is out."""

import hashlib
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bilaf.cli import main
from bilaf.data import get_source
from bilaf.errors import InputError
from bilaf.scan import scan_pool, write_scan


def picture(path, seed, mode="RGB", fmt=None, side=48):
    """A distinct seeded picture (noise compresses badly, so a JPEG has many entropy blocks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path, format=fmt)


# name -> how it is made; the expected fate of each file is in EXPECTED
TREE = {
    "b/deep/er/one.png": lambda p: picture(p, 1),
    "a/TWO.JPG": lambda p: picture(p, 2, fmt="JPEG"),
    "a/three.jpeg": lambda p: picture(p, 3),
    "c/four.WebP": lambda p: picture(p, 4, fmt="WEBP"),
    "five.bmp": lambda p: picture(p, 5),
    "c/six.TIF": lambda p: picture(p, 6, "L", fmt="TIFF"),
    "seven.gif": lambda p: picture(p, 7, "P", fmt="GIF"),
    "no_suffix": lambda p: picture(p, 8, fmt="PNG"),
    "zero.png": lambda p: p.write_bytes(b""),
    "text.jpg": lambda p: p.write_text("not a picture at all"),
    "notes.txt": lambda p: p.write_text("a note beside the images"),
    "z/copy_of_one.png": lambda p: picture(p, 1),  # the same bytes as one.png
    ".hidden/h.png": lambda p: picture(p, 9),
    ".dotfile.png": lambda p: picture(p, 10),
}
IMAGES = [
    "a/TWO.JPG",
    "a/three.jpeg",
    "b/deep/er/one.png",
    "c/four.WebP",
    "c/six.TIF",
    "five.bmp",
    "linked/far.png",
    "no_suffix",
    "seven.gif",
]
SKIPPED = {
    "broken.jpg": "does not decode",
    "notes.txt": "not an image",
    "text.jpg": "not an image",
    "z/copy_of_one.png": "duplicate of b/deep/er/one.png",
    "zero.png": "empty file (0 bytes)",
}


def make_tree(root, order):
    for name in order:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        TREE[name](path)
    whole = root.parent / f"{root.name}_whole.jpg"
    picture(whole, 11, fmt="JPEG", side=256)
    blob = whole.read_bytes()
    (root / "broken.jpg").write_bytes(blob[: len(blob) * 2 // 3])  # header intact, data cut
    elsewhere = root.parent / f"{root.name}_elsewhere"
    picture(elsewhere / "far.png", 12)
    os.symlink(elsewhere, root / "linked")  # a linked folder outside the tree is walked


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "pool"
    make_tree(root, list(TREE))
    return root


def test_the_pool_is_every_readable_distinct_image_in_path_order(tree):
    root, images, skipped = scan_pool(tree, workers=3)
    assert root == tree.absolute()
    assert [c.name for c in images] == IMAGES
    for check in images:
        data = (tree / check.name).read_bytes()
        assert check.path == str(tree / check.name)
        assert (check.bytes, check.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    reasons = {c.name: c.reason for c in skipped}
    assert sorted(reasons) == sorted(SKIPPED)
    for name, start in SKIPPED.items():
        assert reasons[name].startswith(start), (name, reasons[name])


def test_the_order_does_not_depend_on_how_the_tree_was_made(tmp_path, tree):
    other = tmp_path / "other"
    make_tree(other, list(reversed(TREE)))
    first, second = scan_pool(tree), scan_pool(other)
    assert [(c.name, c.sha256) for c in first[1]] == [(c.name, c.sha256) for c in second[1]]
    assert [(c.name, c.reason) for c in first[2]] == [(c.name, c.reason) for c in second[2]]


def test_a_file_list_gives_the_pool_of_its_entries(tmp_path, tree):
    listing = tmp_path / "list.txt"
    absolute = tree / "a" / "three.jpeg"
    listing.write_text(
        f"# my picks\npool/a/TWO.JPG\n\n{absolute}\n./pool/zero.png\npool/gone.png\n"
    )
    root, images, skipped = scan_pool(pool_list=listing)
    assert root == tmp_path.absolute()
    assert [c.name for c in images] == [str(absolute), "pool/a/TWO.JPG"]
    assert {c.name: c.reason.split(" (")[0] for c in skipped} == {
        "pool/gone.png": "unreadable",
        "pool/zero.png": "empty file",
    }
    table = tmp_path / "list.csv"
    pd.DataFrame({"Image": ["pool/a/TWO.JPG"], "other": [1]}).to_csv(table, index=False)
    assert [c.name for c in scan_pool(pool_list=table)[1]] == ["pool/a/TWO.JPG"]


def test_on_bad_image_fail_stops_at_the_first_bad_file(tree):
    with pytest.raises(InputError, match=r"broken\.jpg: does not decode .*on_bad_image: fail"):
        scan_pool(tree, on_bad_image="fail")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: None, "holds no files: nothing to select from"),
        (lambda root: (root / "a.txt").write_text("x"), "none of its 1 files is a readable image"),
    ],
    ids=["empty folder", "no image"],
)
def test_a_pool_without_images_is_refused(tmp_path, make, message):
    root = tmp_path / "pool"
    root.mkdir()
    make(root)
    with pytest.raises(InputError, match=message):
        scan_pool(root)


def test_a_budget_above_the_readable_images_is_refused(tree):
    with pytest.raises(InputError, match=r"budget 10 exceeds the 9 readable images .*5 files"):
        scan_pool(tree, min_images=10)
    assert len(scan_pool(tree, min_images=9)[1]) == 9


def test_the_tables_feed_the_unlabeled_source(tmp_path, tree):
    images_csv, skipped_csv = tmp_path / "out" / "images.csv", tmp_path / "out" / "skipped.csv"
    args = [
        "scan",
        "--pool-dir",
        str(tree),
        "--out",
        str(images_csv),
        "--skipped",
        str(skipped_csv),
    ]
    assert main(args) == 0
    assert main(args) == 0  # its own earlier tables are replaced
    pool = get_source("unlabeled").load("train", images_csv, {})
    assert pool.names.tolist() == IMAGES and (pool.labels == -1).all()
    assert [str(pool.path(i)) for i in range(len(pool))] == [str(tree / n) for n in IMAGES]
    assert pd.read_csv(skipped_csv)["name"].tolist() == sorted(SKIPPED)
    with pytest.raises(Exception, match="no test split"):
        get_source("unlabeled").load("test", images_csv, {})


def test_the_scan_replaces_only_its_own_tables(tmp_path, tree, capsys):
    precious = tmp_path / "precious.csv"
    precious.write_text("a,b\n1,2\n")
    args = ["scan", "--pool-dir", str(tree), "--out", str(precious), "--skipped", "s.csv"]
    assert main(args) == 2
    assert "did not write: not replacing it" in capsys.readouterr().err
    assert precious.read_text() == "a,b\n1,2\n"


def test_write_scan_is_atomic(tmp_path, tree):
    _, images, skipped = scan_pool(tree)
    write_scan(tmp_path / "i.csv", tmp_path / "s.csv", images, skipped)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "i.csv",
        "pool",
        "pool_elsewhere",
        "pool_whole.jpg",
        "s.csv",
    ]


@pytest.mark.parametrize(
    "make, budget, message",
    [
        (lambda root: None, 1, "holds no files: nothing to select from"),
        (lambda root: (root / "a.jpg").write_text("x"), 1, "none of its 1 files is a readable"),
        (lambda root: picture(root / "a.png", 1), 2, "budget 2 exceeds the 1 readable images"),
    ],
    ids=["empty folder", "no readable image", "budget over the readable images"],
)
def test_bad_pools_are_one_line_and_nothing_written(tmp_path, capsys, make, budget, message):
    root = tmp_path / "pool"
    root.mkdir()
    make(root)
    out = tmp_path / "out"
    args = ["scan", "--pool-dir", str(root), "--min-images", str(budget)]
    assert main([*args, "--out", str(out / "i.csv"), "--skipped", str(out / "s.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bilaf scan: error: ") and message in err[0]
    assert not out.exists()
