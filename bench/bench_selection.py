"""Time selection methods on seeded synthetic DINO-like features; print a Markdown table.

Features: a mixture of Gaussian clusters in d dimensions (raw scale, not unit norm), generated in
row chunks and stored in zarr when n is large, so even ImageNet size (1.28M x 384) never sits in
this process's memory at once. Each case runs in its own subprocess so its peak RSS is its own.

    python bench/bench_selection.py --n 50000 --cases boundary:250:2500 boundary:50:500 \
        activeft:250 fds:500
    python bench/bench_selection.py --n 1281167 --zarr /tmp/in1k.zarr --cases boundary:6405:12811

A case is METHOD:ARG[:ARG]: ``boundary:K:B`` times BiLAF (paper and reference mode) from K
seeded random cores to budget B (the cores' own selection is not timed); ``activeft:K`` times
300 full-batch iterations (``activeft:K:BATCH:ITERS`` for the ImageNet recipe); any other method
``NAME:B`` times ``select(NAME, features, B)``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHUNK = 65_536


def synthetic_features(n: int, d: int, clusters: int, seed: int, chunk: int = CHUNK):
    """Yield float32 row blocks of a seeded Gaussian mixture (cluster spread ~ DINO's)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, (clusters, d)).astype(np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        labels = rng.integers(0, clusters, m)
        yield centres[labels] + rng.normal(0.0, 0.6, (m, d)).astype(np.float32)


def materialise(n: int, d: int, clusters: int, seed: int, zarr_path: str | None):
    """The features as an in-memory array, or a zarr store written chunk by chunk."""
    if zarr_path is None:
        return np.concatenate(list(synthetic_features(n, d, clusters, seed)))
    import zarr

    path = Path(zarr_path)
    if path.exists():
        group = zarr.open_group(str(path), mode="r")
        if group["features"].shape == (n, d) and group.attrs.get("seed") == seed:
            return str(path)
    group = zarr.open_group(str(path), mode="w")
    group.attrs["seed"] = seed
    array = group.create_array("features", shape=(n, d), dtype="float32", chunks=(CHUNK, d))
    for i, block in enumerate(synthetic_features(n, d, clusters, seed)):
        array[i * CHUNK : i * CHUNK + block.shape[0]] = block
    return str(path)


def run_case(case: str, source, n: int, seed: int) -> dict:
    """Run one case in this process; return its timing."""
    from bilaf.selection import load_features, select

    method, *args = case.split(":")
    features = load_features(source)
    rows = []
    if method == "boundary":
        k, budget = int(args[0]), int(args[1])
        cores = np.random.default_rng(seed).choice(n, size=k, replace=False).tolist()
        for mode in ("paper", "reference"):
            start = time.perf_counter()
            select("bilaf", features, budget, seed, cores=cores, mode=mode)
            rows.append((f"bilaf {mode}, {k} cores -> {budget}", time.perf_counter() - start))
    elif method == "activeft":
        k = int(args[0])
        options = {"batch_size": int(args[1]), "iters": int(args[2])} if len(args) > 1 else {}
        start = time.perf_counter()
        select("activeft", features, k, seed, **options)
        label = f"activeft K={k}" + (f", batch {args[1]}, {args[2]} iters" if options else "")
        rows.append((label, time.perf_counter() - start))
        if not options:
            from bilaf.selection.activeft import iteration_cost

            cost = iteration_cost(features, k, seed)
            rows.append(
                (
                    f"activeft K={k}: one iteration / bare matmuls",
                    cost["iteration_s"] / cost["matmul_s"],
                )
            )
    else:
        budget = int(args[0])
        start = time.perf_counter()
        select(method, features, budget, seed)
        rows.append((f"{method} -> {budget}", time.perf_counter() - start))
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    return {"rows": rows, "peak_rss_gb": peak_gb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--d", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--zarr", default=None, help="store features here (for large n)")
    parser.add_argument("--cases", nargs="+", required=True)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()

    if args.one is not None:
        source = materialise(args.n, args.d, args.clusters, args.seed, args.zarr)
        print(json.dumps(run_case(args.one, source, args.n, args.seed)))
        return
    if args.zarr:
        materialise(args.n, args.d, args.clusters, args.seed, args.zarr)
    print(
        f"n={args.n} d={args.d} clusters={args.clusters} seed={args.seed} "
        f"zarr={bool(args.zarr)} | {platform.processor() or platform.machine()}, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    print("| case | seconds (ratio for cost rows) | peak RSS GB (whole case) |\n|---|---|---|")
    for case in args.cases:
        child = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--one", case],
            capture_output=True,
            text=True,
            check=False,
        )
        if child.returncode != 0:
            print(f"| {case} | failed: {child.stderr.strip().splitlines()[-1]} | |")
            continue
        result = json.loads(child.stdout.strip().splitlines()[-1])
        for label, value in result["rows"]:
            print(f"| {label} | {value:.2f} | {result['peak_rss_gb']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
