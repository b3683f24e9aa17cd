"""Time ``bilaf.export.contact_sheet`` on seeded synthetic JPEGs; print a one-line result.

The pictures (default 1,000 of 64x64: a tinted background with a few ellipses and rectangles) are
written to a temporary folder first, so the timed call reads them from the page cache. Groups:
``--groups`` pseudo-classes drawn at random; ``--cores`` of the picks are cores.

    python bench/bench_contact_sheet.py
    python bench/bench_contact_sheet.py --n 1000 --workers 1 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def write_pictures(folder: Path, n: int, size: int, seed: int) -> list[str]:
    """``n`` seeded JPEGs of ``size`` x ``size`` with a few shapes each; their paths."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        image = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(4):
            x0, y0 = (int(v) for v in rng.integers(0, size - 8, 2))
            x1, y1 = x0 + int(rng.integers(8, size // 2)), y0 + int(rng.integers(8, size // 2))
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape((x0, y0, x1, y1), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        path = folder / f"img_{i:05d}.jpg"
        image.save(path, quality=90)
        paths.append(str(path))
    return paths


def main() -> None:
    from bilaf.export import contact_sheet

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64, help="side of each picture (pixels)")
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--cores", type=int, default=50)
    parser.add_argument("--tile", type=int, default=96)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1, help="timed calls (best is shown)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    groups = rng.integers(0, args.groups, args.n)
    is_core = np.zeros(args.n, dtype=bool)
    is_core[rng.choice(args.n, min(args.cores, args.n), replace=False)] = True
    with tempfile.TemporaryDirectory() as folder:
        paths = write_pictures(Path(folder), args.n, args.size, args.seed)
        out = Path(folder) / "sheet" / "contact_sheet.png"
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            contact_sheet(paths, groups, is_core, out, tile=args.tile, workers=args.workers)
            times.append(time.perf_counter() - start)
        from PIL import Image

        with Image.open(out) as sheet:
            width, height = sheet.size
        megabytes = out.stat().st_size / 1e6
    best = min(times)
    print(
        f"contact_sheet: {args.n} picks of {args.size}px JPEG, tile {args.tile}, "
        f"workers {args.workers}: {best:.2f} s (best of {args.repeat}), {args.n / best:.0f} "
        f"tiles/s, sheet {width}x{height} px ({megabytes:.1f} MB) | "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{time.strftime('%Y-%m-%d')}"
    )


if __name__ == "__main__":
    main()
