"""`make pick` as a user runs it: a folder of unlabeled images in, exports out, labels back in."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bilaf.data import load_fashion_mnist
from tests.workflow_helpers import ROOT, planned_jobs, snakemake

PICK = ROOT / "config" / "pick.yaml"
LOCAL_DATA = Path("/usr/share/datasets/fashion-mnist")
N_IMAGES = 150

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (LOCAL_DATA / "t10k-images-idx3-ubyte.gz").exists(),
        reason="needs Debian's dataset-fashion-mnist (make test installs it)",
    ),
]


def test_dry_run_plans_selection_and_export_only(tmp_path):
    (tmp_path / "images").mkdir()
    jobs = planned_jobs(tmp_path, *pick_args(tmp_path, "methods: [bilaf, random, fds]\n"))
    assert jobs == {
        "scan": 1,
        "extract": 1,
        "core": 1,
        "boundary": 1,
        "baseline": 2,
        "export": 3,
        "pool_map": 1,
        "pick_report": 1,
    }


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """150 Fashion-MNIST test images as flat PNGs, no labels, plus a corrupt file and a copy;
    the true labels kept aside."""
    root = tmp_path_factory.mktemp("pick")
    import gzip
    import shutil

    raw = root / "raw"
    raw.mkdir()
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(gzip.decompress((LOCAL_DATA / f"{name}.gz").read_bytes()))
    pixels, labels = load_fashion_mnist(raw, "test")
    images = root / "images"
    images.mkdir()
    for i in range(N_IMAGES):
        Image.fromarray(pixels[i]).save(images / f"img_{i:04d}.png")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    shutil.copyfile(images / "img_0007.png", images / "zz copy of 7.png")
    truth = {f"img_{i:04d}.png": int(labels[i]) for i in range(N_IMAGES)}
    return root, truth


def pick_args(workdir: Path, extra: str = "", images: Path | None = None) -> list[str]:
    override = workdir / "override.yaml"
    override.write_text(
        "dataset:\n"
        "  name: mine\n"
        f"  pool_dir: {images or workdir / 'images'}\n"
        "backbone: {image_size: 32, batch_size: 64, chunk_rows: 64}\n"
        "budgets: [20]\n"
        "cores: 10\n"
        "activeft: {iters: 30}\n" + extra
    )
    return ["--configfile", str(PICK), str(override)]


@pytest.fixture(scope="module")
def picked(pool, tmp_path_factory):
    root, _ = pool
    workdir = tmp_path_factory.mktemp("run")
    args = pick_args(workdir, "methods: [bilaf, random]\n", root / "images")
    result = snakemake(workdir, *args)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir, args


def test_the_pool_skips_the_broken_file_and_the_copy(picked):
    workdir, _ = picked
    skipped = pd.read_csv(workdir / "results/mine/pool/skipped.csv")
    assert skipped["name"].tolist() == ["broken.png", "zz copy of 7.png"]
    assert skipped["reason"][1] == "duplicate of img_0007.png"
    samples = pd.read_csv(next((workdir / "results/mine/features").glob("*/pool.samples.csv")))
    assert samples["name"].tolist() == [f"img_{i:04d}.png" for i in range(N_IMAGES)]


@pytest.mark.parametrize("method", ["bilaf", "random"])
def test_every_run_exports_its_picks(picked, method):
    workdir, _ = picked
    out = workdir / f"results/mine/export/{method}/B20_s0"
    table = pd.read_csv(out / "picks.csv")
    selection = json.loads((workdir / f"results/mine/selection/{method}/B20_s0.json").read_text())
    assert table["row"].tolist() == selection and len(table) == 20
    assert all(Path(p).is_file() for p in table["path"])
    roles = set(table["role"])
    assert roles == ({"core", "boundary"} if method == "bilaf" else {"baseline"})
    if method == "bilaf":  # its 10 cores, each the pseudo-class of its position in the cores
        cores = json.loads((workdir / "results/mine/cores/K10_s0.json").read_text())
        is_core = table["role"] == "core"
        assert sorted(table["row"][is_core]) == sorted(cores)
        assert [cores[c] for c in table["pseudo_class"][is_core]] == table["row"][is_core].tolist()
        scores = json.loads(
            (workdir / "results/mine/selection/bilaf/B20_s0.scores.json").read_text()
        )
        assert [s is None for s in scores] == is_core.tolist()  # a boundary score per other pick
        np.testing.assert_allclose(table["score"][~is_core], [s for s in scores if s is not None])
    else:
        assert table["score"].isna().all()  # random has no score
    tasks = json.loads((out / "labelstudio.json").read_text())
    names = [Path(p).name for p in table["path"]]
    assert tasks == [{"data": {"image": f"/data/local-files/?d={name}"}} for name in names]
    assert (out / "picks.txt").read_text().splitlines() == table["path"].tolist()
    assert Image.open(out / "contact_sheet.png").size[0] > 100
    assert (workdir / "results/plots/mine_map.png").is_file()
    runs = pd.read_csv(workdir / "results/tables/mine_picks.csv").set_index("method")
    assert runs.loc[method, "picks"] == 20 and runs.loc[method, "pseudo_classes"] == 10
    assert runs.loc[method, "core"] == (10 if method == "bilaf" else 0)
    assert "coverage" in (workdir / "results/tables/mine_picks.md").read_text()


def test_a_labels_file_naming_another_image_fails_in_one_line(picked, pool):
    workdir, args = picked  # before any good labels: nothing of theirs exists yet
    labels = workdir / "bad_labels.csv"
    labels.write_text("path,label\n/elsewhere/cat.png,cat\n")
    extra = workdir / "bad.yaml"
    extra.write_text(f"dataset: {{labels: {labels}}}\nmethods: [bilaf]\n")
    result = snakemake(workdir, *args, str(extra), "--show-failed-logs")
    assert result.returncode != 0
    log = (workdir / "results/logs/mine/labels.log").read_text().strip().splitlines()
    assert log == [
        f"bilaf labels: error: {labels}: 1 entry names no image of the pool, e.g. "
        f"'/elsewhere/cat.png': label images of this pool (paths relative to "
        f"{pool[0] / 'images'} or absolute)"
    ]
    assert not (workdir / "results/mine/labels.csv").exists()


def test_labels_of_the_picks_predict_the_rest(picked, pool):
    workdir, args = picked
    _, truth = pool
    picks = pd.read_csv(workdir / "results/mine/export/bilaf/B20_s0/picks.csv")
    labels = workdir / "labels.csv"
    names = [Path(p).name for p in picks["path"]]
    pd.DataFrame({"image": names, "label": [truth[n] for n in names]}).to_csv(labels, index=False)
    extra = workdir / "labels.yaml"
    extra.write_text(f"dataset: {{labels: {labels}}}\nmethods: [bilaf]\n")
    result = snakemake(workdir, *args, str(extra))
    assert result.returncode == 0, result.stderr[-4000:]
    for mode in ("linear", "knn"):
        predictions = pd.read_csv(workdir / f"results/mine/predictions/{mode}/bilaf/B20_s0.csv")
        assert len(predictions) == N_IMAGES - 20
        assert not set(predictions["path"]) & set(picks["path"])
        truth_of = [truth[Path(p).name] for p in predictions["path"]]
        accuracy = (predictions["label"].to_numpy() == np.array(truth_of)).mean()
        assert accuracy > 0.3  # 10 classes from 20 labels: far above chance (0.1)
        metrics = json.loads(
            (workdir / f"results/mine/predictions/{mode}/bilaf/B20_s0.json").read_text()
        )
        assert metrics["n_train"] == 20 and "cross-validated" in metrics["note"]
    runs = pd.read_csv(workdir / "results/tables/mine_picks.csv")
    assert runs["linear_crossval_top1"].notna().all() and runs["knn_crossval_top1"].notna().all()


def test_images_labeled_before_are_never_picked_and_train_the_probes(picked, pool):
    workdir, args = picked
    _, truth = pool
    before = [f"img_{i:04d}.png" for i in (1, 2, 3, 40, 41, 90)]
    labeled = workdir / "before.csv"
    pd.DataFrame({"path": before, "label": [truth[n] for n in before]}).to_csv(labeled, index=False)
    extra = workdir / "before.yaml"
    extra.write_text(f"dataset: {{labeled: {labeled}}}\nmethods: [bilaf, random, fds]\n")
    result = snakemake(workdir, *args, str(extra))
    assert result.returncode == 0, result.stderr[-4000:]
    for method in ("bilaf", "random", "fds"):
        table = pd.read_csv(workdir / f"results/mine/export/{method}/B20_s0/picks.csv")
        assert len(table) == 20 and not {Path(p).name for p in table["path"]} & set(before)
    picks = pd.read_csv(workdir / "results/mine/export/bilaf/B20_s0/picks.csv")
    names = [Path(p).name for p in picks["path"]]
    labels = workdir / "new_labels.csv"
    pd.DataFrame({"path": names, "label": [truth[n] for n in names]}).to_csv(labels, index=False)
    extra.write_text(
        f"dataset: {{labeled: {labeled}, labels: {labels}}}\nmethods: [bilaf]\n"
        "finetune: {modes: [linear]}\n"
    )
    result = snakemake(workdir, *args, str(extra))
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = json.loads(
        (workdir / "results/mine/predictions/linear/bilaf/B20_s0.json").read_text()
    )
    assert metrics["n_train"] == 26  # the 20 picks and the 6 labeled before
    predictions = pd.read_csv(workdir / "results/mine/predictions/linear/bilaf/B20_s0.csv")
    assert len(predictions) == N_IMAGES - 26
