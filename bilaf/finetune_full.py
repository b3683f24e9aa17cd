"""Full finetuning with the paper's recipe (SPEC §5): the whole backbone plus a new head.

SGD (momentum 0.9), lr = base_lr x total_batch / 512, weight decay 1e-4, linear warm-up then
cosine decay per step, label smoothing 0.1, drop-path 0.1, no mixup/cutmix; random-resized-crop
and horizontal-flip augmentation. bf16 autocast and channels-last on CUDA.

Resumable and reproducible: the data order, the augmentation and drop-path draw from generators
seeded by (seed, epoch), so an epoch's randomness does not depend on the ones before it; a
checkpoint is written atomically after every epoch, and a rerun continues after the last one with
the same final weights as an uninterrupted run.

Multi-GPU (torchrun): the *total* batch and so the lr stay as configured whatever the number of
processes; each process takes total_batch / world_size samples of every step. (The official
recipe sets the per-GPU batch, so its effective batch and lr change with the GPU count.)

:func:`finetune_full` is the stage (``bilaf finetune-full``): stores, a selection file and the
recipe in; the model file's contents (the test logits) and its facts out.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bilaf.backbones import Preprocess
from bilaf.data import get_source
from bilaf.devices import device_name, resolve_device
from bilaf.errors import BilafError, check_option
from bilaf.finetune import labeled_facts, read_selection
from bilaf.io import atomic_path
from bilaf.store import open_store


class FullFinetuneError(BilafError):
    """Bad recipe, data or checkpoint; the message names it."""


@dataclass(frozen=True)
class Recipe:
    """Hyperparameters of full finetuning; defaults are the paper's (SPEC §5)."""

    epochs: int = 1000
    total_batch: int = 512
    base_lr: float = 3e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: int = 5
    label_smoothing: float = 0.1
    drop_path: float = 0.1
    eval_every: int = 50  # SPEC §6: the paper evaluates every 50 epochs
    min_crop: float = 0.35  # random-resized-crop: smallest area fraction
    seed: int = 0

    @property
    def lr(self) -> float:
        """The learning rate actually used: base_lr scaled by total batch / 512."""
        return self.base_lr * self.total_batch / 512


def lr_at(step: int, steps_per_epoch: int, recipe: Recipe) -> float:
    """Linear warm-up over ``warmup_epochs`` then cosine decay to 0, evaluated per step."""
    warmup = recipe.warmup_epochs * steps_per_epoch
    total = recipe.epochs * steps_per_epoch
    if step < warmup:
        return recipe.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return recipe.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_classifier(name: str, weights: str | None, n_classes: int, drop_path: float) -> Any:
    """timm ``name`` with ``n_classes`` outputs, backbone weights as for extraction."""
    import timm

    from bilaf.backbones import build_backbone

    backbone = build_backbone(name, weights)
    model = timm.create_model(
        name, pretrained=False, num_classes=n_classes, drop_path_rate=drop_path
    )
    missing, unexpected = model.load_state_dict(backbone.state_dict(), strict=False)
    head = {f"{model.default_cfg.get('classifier', 'head')}.{p}" for p in ("weight", "bias")}
    if unexpected or set(missing) - head:
        raise FullFinetuneError(f"{name}: backbone keys do not fit: {sorted(missing)[:3]}")
    return model


class DecodedImages:
    """Folder images decoded on demand to the model's input size: ``x[rows]`` -> uint8 array.

    Lets training and evaluation index a folder dataset like an in-memory pixel array without
    holding it all in memory.
    """

    def __init__(self, images: Any, prep: Any) -> None:
        from bilaf.features import ImageRows

        self.rows = ImageRows(images, prep)
        self.shape = (len(images),)

    def __getitem__(self, index: Any) -> np.ndarray:
        rows = np.arange(self.shape[0])[index]
        return np.stack([self.rows[int(i)].numpy() for i in rows])


def _batch(
    images: np.ndarray, prep: Any, device: str, generator: Any = None, min_crop: float = 1.0
) -> Any:
    """uint8 images -> normalised input batch (:func:`bilaf.features.model_input`): a random
    resized crop + flip when a generator is given (training), else the extraction's resize and
    centre crop (evaluation)."""
    from bilaf.features import model_input, resize_crop

    if generator is None:
        return model_input(images, prep, device, resize_crop)
    return model_input(images, prep, device, partial(_random_crop, generator, min_crop))


def _random_crop(generator: Any, min_crop: float, x: Any, prep: Any) -> Any:
    """Per image a seeded random square crop (area >= ``min_crop``) resized to the input size,
    flipped horizontally with probability 1/2."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = x.shape
    scale = min_crop + (1 - min_crop) * torch.rand(n, generator=generator)
    side = (scale.sqrt() * min(h, w)).long().clamp(min=1)
    top = (torch.rand(n, generator=generator) * (h - side + 1)).long()
    left = (torch.rand(n, generator=generator) * (w - side + 1)).long()
    flip = torch.rand(n, generator=generator) < 0.5
    crops = []
    for i in range(n):
        crop = x[i : i + 1, :, top[i] : top[i] + side[i], left[i] : left[i] + side[i]]
        crop = F.interpolate(
            crop, size=(prep.image_size,) * 2, mode="bilinear", align_corners=False
        )
        crops.append(crop.flip(-1) if flip[i] else crop)
    return torch.cat(crops)


def predict(model: Any, images: Any, prep: Any, device: str, batch: int = 256) -> np.ndarray:
    """Logits (n, classes) float32 of ``images`` in eval mode."""
    import torch

    model.eval()
    out = []
    on_cuda = device.startswith("cuda")
    with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=on_cuda):
        for lo in range(0, images.shape[0], batch):
            out.append(model(_batch(images[lo : lo + batch], prep, device)).float().cpu())
    return torch.cat(out).numpy()


def train_full(
    model: Any,
    arch: str,
    train_images: Any,
    train_labels: np.ndarray,
    test_images: Any,
    test_labels: np.ndarray,
    recipe: Recipe,
    prep: Any,
    checkpoint: str | Path,
    device: str = "cpu",
) -> dict[str, Any]:
    """Finetune ``model`` on the labeled images; return history, last/best top-1, test logits.

    Images are uint8 arrays (n, h, w[, 3]) or :class:`DecodedImages`; ``prep`` (a
    bilaf.backbones.Preprocess) gives the input size and normalisation. Resumes from
    ``checkpoint`` when it exists (it must come from the same ``arch``).
    """
    import torch

    if train_images.shape[0] == 0:
        raise FullFinetuneError("the selection is empty: nothing to train on")
    for name in ("epochs", "total_batch", "eval_every"):
        check_option(getattr(recipe, name), name, int, low=1, error=FullFinetuneError)
    rank, world = _distributed_rank_world()
    if recipe.total_batch % world:
        raise FullFinetuneError(
            f"total_batch {recipe.total_batch} is not divisible by the "
            f"{world} processes: change total_batch or the process count"
        )
    model = model.to(device)
    if device.startswith("cuda"):
        model = model.to(memory_format=torch.channels_last)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    n = train_images.shape[0]
    steps_per_epoch = math.ceil(n / recipe.total_batch)
    state = {"epoch": 0, "history": [], "best_top1": -1.0}
    checkpoint = Path(checkpoint)
    if checkpoint.exists():
        state = _load_checkpoint(checkpoint, arch, model, optimizer)
        print(f"[finetune] resuming after epoch {state['epoch']}", file=sys.stderr)
    labels_t = torch.from_numpy(np.asarray(train_labels, dtype=np.int64))
    on_cuda = device.startswith("cuda")
    start = time.perf_counter()
    for epoch in range(state["epoch"], recipe.epochs):
        net.train()
        torch.manual_seed(recipe.seed * 100_003 + epoch)  # drop-path draws
        generator = torch.Generator().manual_seed(recipe.seed * 100_003 + epoch)
        order = torch.randperm(n, generator=generator)
        epoch_loss = 0.0
        epoch_start = time.perf_counter()
        for step in range(steps_per_epoch):
            rows = order[step * recipe.total_batch : (step + 1) * recipe.total_batch]
            x_all = _batch(train_images[rows.numpy()], prep, device, generator, recipe.min_crop)
            mine = slice(rank, None, world)  # this process's share of the global batch
            x, y = x_all[mine], labels_t[rows][mine].to(device)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(epoch * steps_per_epoch + step, steps_per_epoch, recipe)
            with torch.autocast("cuda", torch.bfloat16, enabled=on_cuda):
                loss = loss_fn(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_loss += float(loss.detach()) / steps_per_epoch
        # throughput and memory of the training steps (evaluation excluded), for the GPU check
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": epoch_loss,
            "images_per_s": n / (time.perf_counter() - epoch_start),
        }
        if on_cuda:
            record["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        if (epoch + 1) % recipe.eval_every == 0 or epoch + 1 == recipe.epochs:
            logits = predict(model, test_images, prep, device)
            record["top1"] = 100.0 * float((logits.argmax(1) == test_labels).mean())
            state["best_top1"] = max(state["best_top1"], record["top1"])
        state["history"].append(record)
        state["epoch"] = epoch + 1
        print(f"[finetune] {record}", file=sys.stderr, flush=True)
        if rank == 0:
            _save_checkpoint(checkpoint, arch, model, optimizer, state)
    logits = predict(model, test_images, prep, device)
    return {
        "test_logits": logits,
        "history": state["history"],
        "last_top1": 100.0 * float((logits.argmax(1) == test_labels).mean()),
        "best_top1": state["best_top1"],
        "recipe": asdict(recipe),
        "effective_batch_size": recipe.total_batch,
        "per_device_batch_size": recipe.total_batch // world,
        "world_size": world,
        "lr": recipe.lr,
        "device": device,
        "train_seconds": time.perf_counter() - start,
    }


def finetune_full(
    features: str | Path,
    test_features: str | Path,
    selection: str | Path,
    n_classes: int,
    recipe: Recipe,
    *,
    source: str,
    raw: str | Path | None,
    folders: dict[str, str | None],
    backbone: str,
    weights: str | None,
    checkpoint_dir: str | Path,
    device: str | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(model, meta) of full finetuning (the stage ``bilaf finetune-full``): timm ``backbone``
    with ``weights`` trained by :func:`train_full` on the images of the ``selection`` file's
    rows of the pool store ``features``, tested on the rows of ``test_features``.

    Images come from the dataset registry entry ``source`` (``raw`` folder, or ``folders`` for
    folder sources), prepared as the stores record. The checkpoint under ``checkpoint_dir`` is
    named by a hash of (backbone, weights, recipe, selection): a changed selection or recipe
    starts afresh instead of resuming someone else's training. The model is the test logits;
    ``meta`` is train_full's record plus :func:`bilaf.finetune.labeled_facts`.
    """
    pool, test = open_store(features), open_store(test_features)
    pool_labels = pool["labels"][:]
    picked = read_selection(selection, pool_labels.size)
    y = pool_labels[picked]  # the only labels training sees
    prep = Preprocess(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in pool.attrs["preprocess"].items()}
    )
    dataset = get_source(source)

    def images(split: str, rows: np.ndarray) -> Any:
        table = dataset.load(split, raw, folders).take(rows)
        return table.pixels if table.pixels is not None else DecodedImages(table, prep)

    key = json.dumps([backbone, weights, vars(recipe), picked.tolist()])
    checkpoint = Path(checkpoint_dir) / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
    device = device_name(device)
    model = build_classifier(backbone, weights, n_classes, recipe.drop_path)
    out = train_full(
        model,
        backbone,
        images("train", pool["source_index"][:][picked]),
        y,
        images("test", test["source_index"][:]),
        test["labels"][:],
        recipe,
        prep,
        checkpoint,
        device,
    )
    record = {k: v for k, v in out.items() if k != "test_logits"}
    facts = labeled_facts("full", n_classes, y)
    meta = {**facts, **record, "checkpoint": str(checkpoint)}
    return {"mode": np.array("full"), "test_logits": out["test_logits"]}, meta


def _distributed_rank_world() -> tuple[int, int]:
    """(rank, world size), initialising torch.distributed when launched by torchrun."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if resolve_device().type == "cuda" else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _save_checkpoint(path: Path, arch: str, model: Any, optimizer: Any, state: dict) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(
            {
                "arch": arch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                **state,
            },
            tmp,
        )


def _load_checkpoint(path: Path, arch: str, model: Any, optimizer: Any) -> dict[str, Any]:
    import torch

    saved = torch.load(path, map_location="cpu", weights_only=False)
    if saved.get("arch") != arch:
        raise FullFinetuneError(
            f"checkpoint {path} is from architecture {saved.get('arch')!r}, not {arch!r}: "
            "move it away or use its architecture; it was left untouched"
        )
    try:
        model.load_state_dict(saved["model"])
    except RuntimeError as err:
        raise FullFinetuneError(f"checkpoint {path} does not fit {arch}: {err}") from err
    optimizer.load_state_dict(saved["optimizer"])
    return {k: saved[k] for k in ("epoch", "history", "best_top1")}
