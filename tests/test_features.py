import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import zarr

from bilaf.backbones import Preprocess
from bilaf.cli import main
from bilaf.data import DATASETS, Images
from bilaf.features import (
    chunk_batches,
    embed,
    extract_to_zarr,
    model_input,
    open_features,
    resize_crop,
)
from bilaf.selection import select
from bilaf.store import StoreError


class TinyNet(torch.nn.Module):
    """A deterministic stand-in backbone that counts its forward calls and can be made to fail."""

    def __init__(self, fail_after: int | None = None):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.calls = 0
        self.fail_after = fail_after

    def forward(self, x):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("killed")
        return self.conv(x).mean((2, 3))


def pixels(n=50, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def in_memory(n=50) -> Images:
    names = np.asarray([f"f[{i}]" for i in range(n)])
    return Images(np.arange(n) % 10, names, tuple("abcdefghij"), pixels=pixels(n))


def extract(out, net, n=50, size=16):
    return extract_to_zarr(
        out,
        in_memory(n),
        np.arange(n) * 2,
        net,
        Preprocess(size),
        {"dataset": "t"},
        batch_size=5,
        chunk_rows=10,
        workers=0,
        device="cpu",
    )


def test_embed_grey_equals_rgb_copy():
    net = TinyNet()
    grey = pixels(6)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    np.testing.assert_allclose(
        embed(grey, net, Preprocess(20)), embed(rgb, net, Preprocess(20)), rtol=1e-6
    )


def test_resize_crop_keeps_aspect_and_centre_crops():
    x = torch.arange(40.0).view(1, 1, 4, 10).expand(1, 3, 4, 10)
    out = resize_crop(x, Preprocess(4, interpolation="nearest"))
    assert out.shape == (1, 3, 4, 4)
    torch.testing.assert_close(out[0, 0], x[0, 0, :, 3:7])  # the centre 4 of 10 columns
    cropped = resize_crop(torch.zeros(2, 3, 32, 32), Preprocess(16, crop_pct=0.5))
    assert cropped.shape == (2, 3, 16, 16)  # 32 -> 32 (16 / 0.5), centre 16
    same = torch.rand(1, 3, 8, 8)
    assert resize_crop(same, Preprocess(8)) is same


def test_model_input_scales_repeats_grey_crops_and_normalises():
    prep = Preprocess(4, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    grey = np.full((2, 4, 4), 255, dtype=np.uint8)
    x = model_input(grey, prep, "cpu", crop=None)
    assert x.shape == (2, 3, 4, 4) and x.dtype == torch.float32
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([1.0, 3.0, 1.0]))
    rgb = torch.from_numpy(np.repeat(pixels(2)[..., None], 3, axis=-1))
    torch.testing.assert_close(
        model_input(rgb, Preprocess(20), "cpu"), model_input(pixels(2), Preprocess(20), "cpu")
    )
    assert model_input(pixels(2)[:, ::-1], Preprocess(20), "cpu").shape == (2, 3, 20, 20)


def test_chunk_batches_never_span_chunks():
    assert chunk_batches(np.array([1, 3]), n=33, chunk_rows=10, batch_size=4) == [
        (1, 10, 14),
        (1, 14, 18),
        (1, 18, 20),
        (3, 30, 33),
    ]


def test_extract_writes_complete_store(tmp_path):
    extract(tmp_path / "s.zarr", TinyNet())
    feats, labels = open_features(tmp_path / "s.zarr")
    assert feats.shape == (50, 4) and feats.dtype == np.float32
    assert feats.chunks == (10, 4)
    np.testing.assert_array_equal(labels, np.arange(50) % 10)
    np.testing.assert_allclose(feats[:], embed(pixels(50), TinyNet(), Preprocess(16)), rtol=1e-5)
    attrs = zarr.open_group(str(tmp_path / "s.zarr"), mode="r").attrs
    assert attrs["preprocess"] == {
        "image_size": 16,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "interpolation": "bilinear",
        "crop_pct": 1.0,
    }


def test_killed_extraction_resumes_without_redoing_chunks(tmp_path, capsys):
    reference = tmp_path / "ref.zarr"
    extract(reference, TinyNet())
    out = tmp_path / "s.zarr"
    with pytest.raises(KeyboardInterrupt):
        extract(out, TinyNet(fail_after=7))  # 3 chunks of 2 batches, then killed mid-chunk
    assert not out.exists(), "an interrupted store must not look complete"
    with pytest.raises(StoreError, match="does not exist"):
        open_features(out)
    partial = out.with_name("s.zarr.partial")
    with pytest.raises(StoreError, match=r"s\.zarr\.partial is an unfinished extraction"):
        open_features(partial)
    with pytest.raises(StoreError, match="unfinished extraction"):
        select("random", partial, 5)
    renamed = tmp_path / "renamed.zarr"  # no .partial suffix: the store's own flag tells
    shutil.copytree(partial, renamed)
    with pytest.raises(StoreError, match=r"renamed\.zarr is incomplete"):
        select("random", renamed, 5)
    resumed = TinyNet()
    extract(out, resumed)
    assert resumed.calls == 2 * 2  # the two unfinished chunks only, 2 batches each
    np.testing.assert_array_equal(open_features(out)[0][:], open_features(reference)[0][:])
    assert "20 images in" in capsys.readouterr().err  # images/s is logged for the rows done


def test_partial_from_other_settings_is_restarted(tmp_path):
    out = tmp_path / "s.zarr"
    with pytest.raises(KeyboardInterrupt):
        extract(out, TinyNet(fail_after=3))
    net = TinyNet()
    extract(out, net, size=12)
    assert net.calls == 10  # every batch: nothing reused from the other run


FOOLBOX = importlib.util.find_spec("foolbox")


@pytest.mark.skipif(FOOLBOX is None, reason="pip install --no-deps foolbox==3.3.4 (make test does)")
def test_real_cifar10_pngs_through_the_vit_feature_path(tmp_path):
    """foolbox ships 20 CIFAR-10 test images (label in the file name); read as files only."""
    from timm.models import VisionTransformer

    data = Path(next(iter(FOOLBOX.submodule_search_locations))) / "data"
    pngs = sorted(data.glob("cifar10_*.png"))
    assert len(pngs) == 20
    for png in pngs:  # an ImageFolder: class = subfolder
        label = png.stem.split("_")[-1]
        (tmp_path / "train" / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, tmp_path / "train" / label / png.name)
    images = DATASETS["imagefolder"].load("train", None, {"train": tmp_path / "train"})
    torch.manual_seed(0)
    vit = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=0
    ).eval()
    prep = Preprocess(32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic")
    out = extract_to_zarr(
        tmp_path / "f.zarr",
        images,
        np.arange(20),
        vit,
        prep,
        {"dataset": "foolbox"},
        batch_size=8,
        chunk_rows=8,
        workers=2,
        device="cpu",
    )
    feats, labels = open_features(out)
    assert feats.shape == (20, 48) and np.isfinite(feats[:]).all()
    assert np.unique(feats[:], axis=0).shape[0] == 20  # real, different images
    classes = np.asarray(images.classes)
    assert [int(c) for c in classes[labels]] == [int(n.split("_")[-1][:-4]) for n in images.names]
    # the features are the ViT's CLS token after the final norm, from the decoded pixels
    from PIL import Image

    first = np.array(Image.open(images.root / images.names[0]).convert("RGB"))
    x = (torch.from_numpy(first).permute(2, 0, 1)[None].float() / 255).sub(
        torch.tensor(prep.mean).view(1, 3, 1, 1)
    ) / torch.tensor(prep.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        cls = vit.forward_features(x)[:, 0]
    np.testing.assert_allclose(feats[:1], cls.numpy(), rtol=1e-4, atol=1e-5)


def test_cli_extracts_an_image_folder_with_the_models_preprocessing(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, n in (("b", 3), ("a", 2)):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(n):
            size = (40 + 10 * i, 30)  # mixed sizes: resized and cropped in the workers
            image = rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)
            Image.fromarray(image).save(tmp_path / "train" / cls / f"{i}.png")
    out = tmp_path / "pool.zarr"
    argv = ["extract", "--source", "imagefolder", "--train-dir", str(tmp_path / "train")]
    argv += ["--test-dir", str(tmp_path / "train"), "--dataset", "mine", "--split", "train"]
    argv += ["--backbone", "test_vit", "--weights", "random", "--batch-size", "2"]
    argv += ["--chunk-rows", "4", "--out", str(out)]
    assert main(argv) == 0
    group = zarr.open_group(str(out), mode="r")
    assert group["features"].shape == (5, 64)
    assert group.attrs["preprocess"]["image_size"] == 160  # test_vit's pretrained config
    assert group.attrs["preprocess"]["interpolation"] == "bicubic"
    assert group.attrs["classes"] == ["a", "b"]
    samples = pd.read_csv(tmp_path / "pool.samples.csv")
    assert samples["name"].tolist() == ["a/0.png", "a/1.png", "b/0.png", "b/1.png", "b/2.png"]
    np.testing.assert_array_equal(group["labels"][:], samples["label"])


def test_the_stage_extracts_a_seeded_subset_and_records_it(tmp_path):
    from PIL import Image

    from bilaf.data import subset_indices
    from bilaf.features import extract as extract_stage

    for i in range(6):
        (tmp_path / "train" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels(1, seed=i)[0]).save(tmp_path / "train" / f"c{i % 2}" / f"{i}.png")
    folders = {"train": tmp_path / "train"}
    options = {"weights": "random", "folders": folders, "subset_size": 4, "subset_seed": 1}
    options.update(image_size=16, samples=tmp_path / "rows.csv")
    out = extract_stage(tmp_path / "s.zarr", "imagefolder", "train", "toy", "test_vit", **options)
    group = zarr.open_group(str(out), mode="r")
    np.testing.assert_array_equal(group["source_index"][:], subset_indices(6, 4, 1))
    assert group.attrs["subset_size"] == 4 and group.attrs["subset_seed"] == 1
    assert group.attrs["dataset"] == "toy" and group.attrs["weights"] == "random"
    assert group.attrs["preprocess"]["image_size"] == 16 and group["features"].shape[0] == 4
    assert pd.read_csv(tmp_path / "rows.csv")["source_index"].tolist() == list(
        subset_indices(6, 4, 1)
    )
