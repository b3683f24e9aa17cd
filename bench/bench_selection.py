"""Time selection methods on seeded synthetic DINO-like features; print a Markdown table.

Features: a mixture of Gaussian clusters in d dimensions (raw scale, not unit norm), generated in
row chunks and stored in zarr when n is large, so even ImageNet size (1.28M x 384) never sits in
this process's memory at once. Each case runs in its own subprocess so its peak RSS is its own.

    python bench/bench_selection.py --n 50000 --cases boundary:250:2500 boundary:50:500 \
        activeft:250 fds:500
    python bench/bench_selection.py --n 1281167 --zarr /tmp/in1k.zarr \
        --cases boundary:6405:12811:paper boundary:6405:12811:reference activeft:6405:100000:100

A case is METHOD:ARG[:ARG]: ``boundary:K:B`` times BiLAF (paper and reference mode) from K
seeded random cores to budget B (the cores' own selection is not timed; ``boundary:K:B:MODE``
runs one mode, so its peak RSS is its own); ``activeft:K`` times 300 full-batch iterations
(``activeft:K:BATCH:ITERS`` for the ImageNet recipe); any other method ``NAME:B`` times
``select(NAME, features, B)``, and ``NAME:B:KEY=VALUE...`` passes options (JSON values), e.g.
``maxherding:12811:points=20000``. ``--repeat R`` runs every case R times, each in a fresh process,
and reports the best time with the spread (worst − best).

ActiveFT cases also split the timed call into its parts (summed over the run: batch reads, Adam
steps, readout) and time, in the same process afterwards, one step and the bare matrix products
it stands in for on the same rows (the whole pool, or one batch): the forward n×d×K product
alone, and forward + backward (f·θᵀ, then its n×K result back through fᵀ: the two products
plain autograd of the θ-only loss does). The ``ratio:`` rows are step time over those (the
target is step / fwd+bwd <= 1.5).
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


def _timed(module, name: str, totals: dict) -> None:
    """Wrap ``module.name`` so the seconds and calls spent in it add up in ``totals[name]``."""
    inner = getattr(module, name)
    totals[name] = [0.0, 0]

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            totals[name][0] += time.perf_counter() - t0
            totals[name][1] += 1

    setattr(module, name, wrapper)


def _best_of(fn, repeats: int = 3) -> float:
    """Best seconds of ``repeats`` calls of ``fn`` after one warm-up call."""
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def _activeft_case(features, n: int, seed: int, args: list[str]) -> list:
    """ActiveFT: the timed call, its parts, and one step against the bare products it needs."""
    import torch

    from bilaf.selection import activeft as aft
    from bilaf.selection import select

    k = int(args[0])
    options = {"batch_size": int(args[1]), "iters": int(args[2])} if len(args) > 1 else {}
    totals: dict = {}
    for name in ("_load", "_step", "readout"):
        _timed(aft, name, totals)
    start = time.perf_counter()
    select("activeft", features, k, seed, **options)
    label = f"activeft K={k}" + (
        f", batch {args[1]}, {args[2]} iters" if options else ", 300 iters"
    )
    rows = [(label, time.perf_counter() - start)]
    step_s, steps = totals["_step"]
    rows.append(("  of which: reading the pool once", totals["_load"][0]))
    rows.append((f"  of which: {steps} Adam steps", step_s))
    rows.append(("  of which: readout", totals["readout"][0]))

    # One step and the bare products on the same rows, in this process, after the run.
    dev = aft._device(None)
    feats = aft._load(features, dev)
    where = f"all {n} rows"
    if options:
        batch = np.sort(np.random.default_rng(seed + 1).choice(n, options["batch_size"], False))
        feats = feats[torch.from_numpy(batch).to(dev)]
        where = f"batch of {options['batch_size']}"
    init = np.random.default_rng(seed).choice(feats.shape[0], size=k, replace=False)
    theta = feats[torch.from_numpy(init).to(dev)].clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=1e-3)
    one_step = _best_of(lambda: aft._step(feats, theta, opt, 0.07, 1.0))

    def forward() -> None:
        with torch.no_grad():
            feats @ theta.T

    def forward_backward() -> None:
        with torch.no_grad():
            (feats @ theta.T).T @ feats

    fwd, fwd_bwd = _best_of(forward), _best_of(forward_backward)
    rows.append((f"  one step, {where} (best of 3)", one_step))
    rows.append((f"  bare forward product, {where}", fwd))
    rows.append((f"  bare forward+backward products, {where}", fwd_bwd))
    rows.append(("  ratio: mean step in the run / bare fwd+bwd", step_s / steps / fwd_bwd))
    rows.append(("  ratio: one step / bare fwd+bwd", one_step / fwd_bwd))
    rows.append(("  ratio: one step / bare forward", one_step / fwd))
    return rows


def run_case(case: str, source, n: int, seed: int) -> dict:
    """Run one case in this process; return its timing (module imports, torch's included, are
    done before the clock starts)."""
    from bilaf.selection import get_method, load_features, select

    method, *args = case.split(":")
    get_method("bilaf" if method == "boundary" else method)
    features = load_features(source)
    rows = []
    if method == "boundary":
        k, budget = int(args[0]), int(args[1])
        cores = np.random.default_rng(seed).choice(n, size=k, replace=False).tolist()
        for mode in args[2:] or ("paper", "reference"):
            start = time.perf_counter()
            select("bilaf", features, budget, seed, cores=cores, mode=mode)
            rows.append((f"bilaf {mode}, {k} cores -> {budget}", time.perf_counter() - start))
    elif method == "activeft":
        rows = _activeft_case(features, n, seed, args)
    else:
        budget = int(args[0])
        options = {k: json.loads(v) for k, _, v in (a.partition("=") for a in args[1:])}
        start = time.perf_counter()
        select(method, features, budget, seed, **options)
        shown = "".join(f", {key}={value}" for key, value in options.items())
        rows.append((f"{method} -> {budget}{shown}", time.perf_counter() - start))
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
    parser.add_argument("--repeat", type=int, default=1, help="runs per case (best is shown)")
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
    print(
        f"| case | seconds, best of {args.repeat} (ratio rows: ratio) | spread (worst - best) "
        "| peak RSS GB (whole case, worst run) |\n|---|---|---|---|"
    )
    for case in args.cases:
        results = []
        for _ in range(args.repeat):
            child = subprocess.run(
                [sys.executable, __file__, *sys.argv[1:], "--one", case],
                capture_output=True,
                text=True,
                check=False,
            )
            if child.returncode != 0:
                last = (child.stderr.strip().splitlines() or [f"exit {child.returncode}"])[-1]
                print(f"| {case} | failed: {last} | | |", flush=True)
                break
            results.append(json.loads(child.stdout.strip().splitlines()[-1]))
        if not results:
            continue
        peak = max(r["peak_rss_gb"] for r in results)
        for i, (label, _) in enumerate(results[0]["rows"]):
            values = [r["rows"][i][1] for r in results]
            spread = f"{max(values) - min(values):.3f}" if len(values) > 1 else "-"
            print(f"| {label} | {min(values):.3f} | {spread} | {peak:.2f} |", flush=True)


if __name__ == "__main__":
    main()
