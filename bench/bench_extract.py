"""Feature extraction throughput against the model's bare forward pass on the same device.

extract: ``bilaf.features.extract_to_zarr`` end to end on synthetic images (DataLoader, resize and
normalise, bf16 autocast + channels-last on CUDA, chunked zarr writes). forward: the same model on
a ready-made input batch already on the device, same precision and memory layout: the ceiling
extraction can reach. Random init (throughput does not depend on the weights).

Sources: ``array`` = CIFAR-sized 32 px images in memory, resized on the device (the CIFAR path);
``folder`` = JPEG files of ImageNet's typical 500x375, decoded and resized in the loader workers
(the ImageNet path); ``unlabeled`` = a flat folder of small JPEGs (``--side``, default 64 px) as
a user's own pool: the scan (read, hash, verify every file) timed on its own, then the
extraction from its table (the ``make pick`` path).

    python bench/bench_extract.py                          # GPU: ViT-S/16 at 224, 20,000 images
    python bench/bench_extract.py --source folder --n 5000 --workers 14
    python bench/bench_extract.py --n 64 --batch-size 32 --threads 2   # CPU smoke run
    python bench/bench_extract.py --source unlabeled --model tf_efficientnet_lite0 --n 20000 \
        --image-size 64 --batch-size 128 --workers 2 --threads 2      # CPU: the issue-14 row
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bilaf.backbones import build_backbone, resolve_preprocess
from bilaf.data import DATASETS, Images
from bilaf.devices import device_name
from bilaf.features import extract_to_zarr


def synthetic_images(source: str, n: int, workdir: Path, side: int = 64) -> Images:
    """``n`` random images, 10 classes: in memory (32 px), as JPEG files (500x375), or an
    unlabeled flat folder of side x side JPEGs (scanned; its time is printed)."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 10
    if source == "unlabeled":
        return unlabeled_pool(n, workdir, side, rng)
    if source == "array":
        pixels = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        names = np.asarray([f"synthetic[{i}]" for i in range(n)])
        return Images(labels, names, tuple(str(c) for c in range(10)), pixels=pixels)
    from PIL import Image

    base = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        folder = workdir / "train" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.roll(base, i, axis=1)).save(folder / f"{i:07d}.jpg", quality=90)
    return DATASETS["imagefolder"].load("train", None, {"train": workdir / "train"})


def unlabeled_pool(n: int, workdir: Path, side: int, rng: np.random.Generator) -> Images:
    """A flat folder of ``n`` distinct small JPEGs, scanned as ``make pick`` does (timed)."""
    from PIL import Image

    from bilaf.scan import scan_pool, write_scan

    folder = workdir / "images"
    folder.mkdir()
    for i in range(n):  # noise: JPEG's rounding never makes two files alike
        image = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"{i:07d}.jpg", quality=90)
    start = time.perf_counter()
    _, found, skipped = scan_pool(folder, workers=4)
    write_scan(workdir / "images.csv", workdir / "skipped.csv", found, skipped)
    seconds = time.perf_counter() - start
    print(f"scan          {len(found) / seconds:10.1f} images/s ({len(found)} in {seconds:.1f} s)")
    return DATASETS["unlabeled"].load("train", workdir / "images.csv", {})


def bare_forward(model: torch.nn.Module, size: int, batch: int, n: int, device: str) -> float:
    """Images/s of the model alone on a ready input batch (bf16 + channels-last on CUDA)."""
    on_cuda = device.startswith("cuda")
    x = torch.randn(batch, 3, size, size, device=device)
    if on_cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    steps = max(1, -(-n // batch))
    with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=on_cuda):
        for _ in range(2):  # warm-up
            model(x)
        if on_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            model(x)
        if on_cuda:
            torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_small_patch16_224.dino")
    parser.add_argument("--source", choices=["array", "folder", "unlabeled"], default="array")
    parser.add_argument("--side", type=int, default=64, help="unlabeled: the JPEGs' side")
    parser.add_argument("--image-size", type=int, default=None, help="default: the model's")
    parser.add_argument("--n", type=int, default=20_000, help="images to extract")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--chunk-rows", type=int, default=4096)
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers")
    parser.add_argument("--device", default=None, help="default: cuda if available")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = device_name(args.device)
    on_cuda = device.startswith("cuda")
    model = build_backbone(args.model, "random").to(device)
    if on_cuda:
        model = model.to(memory_format=torch.channels_last)
    prep = resolve_preprocess(args.model, args.image_size)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        images = synthetic_images(args.source, args.n, workdir, args.side)
        rows = np.arange(len(images))

        def extract(name: str, count: int) -> float:
            start = time.perf_counter()
            extract_to_zarr(
                workdir / name,
                images.take(rows[:count]),
                rows[:count],
                model,
                prep,
                {"bench": True},
                batch_size=args.batch_size,
                chunk_rows=args.chunk_rows,
                workers=args.workers,
                device=device,
            )
            if on_cuda:
                torch.cuda.synchronize()
            return count / (time.perf_counter() - start)

        extract("warmup.zarr", min(len(images), 2 * args.batch_size))
        extract_rate = extract("bench.zarr", len(images))
    forward_rate = bare_forward(model, prep.image_size, args.batch_size, args.n, device)
    name = torch.cuda.get_device_name() if on_cuda else f"cpu ({torch.get_num_threads()} threads)"
    print(
        f"device={name} model={args.model} size={prep.image_size} source={args.source} "
        f"n={args.n} batch={args.batch_size} workers={args.workers}"
    )
    print(f"extract       {extract_rate:10.1f} images/s")
    print(f"bare forward  {forward_rate:10.1f} images/s")
    print(f"extract / forward = {extract_rate / forward_rate:.2f}")


if __name__ == "__main__":
    main()
