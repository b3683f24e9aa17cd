"""Provenance manifests and the reproducibility audit.

Every selection and metrics file gets ``<file>.manifest.json``: the file's own SHA-256, the
SHA-256 of each input (a zarr store hashes every file in it), the parameters that produced it,
the seed, package versions, the git commit and the device. ``audit(root)`` checks every manifest
against the files on disk and reruns a sample of the selections, reporting any that differ.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bilaf.io import read_json, write_json

MANIFEST_SUFFIX = ".manifest.json"
PACKAGES = ("numpy", "torch", "timm", "zarr", "pandas", "snakemake")


def sha256(path: str | Path) -> str:
    """SHA-256 of a file, or of a directory: every file's relative path and bytes, in order."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_manifest(
    output: str | Path,
    inputs: dict[str, str | Path],
    params: dict[str, Any],
    seed: int | None = None,
    device: str = "cpu",
    rerun: dict[str, Any] | None = None,
) -> Path:
    """Write ``<output>.manifest.json`` describing how ``output`` was produced.

    ``rerun``: for a selection, the ``select`` call that reproduces it (method, budget, seed,
    options; the features come from ``inputs['features']``).
    """
    output = Path(output)
    manifest = {
        "file": output.name,
        "sha256": sha256(output),
        "inputs": {name: {"path": str(p), "sha256": sha256(p)} for name, p in inputs.items()},
        "params": params,
        "seed": seed,
        "device": device,
        "git_commit": _git_commit(),
        "versions": _versions(),
        "rerun": rerun,
    }
    path = output.with_name(output.name + MANIFEST_SUFFIX)
    write_json(path, manifest)
    return path


def manifests(root: str | Path) -> Iterator[Path]:
    yield from sorted(Path(root).rglob(f"*{MANIFEST_SUFFIX}"))


def audit(root: str | Path, rerun_sample: int = 3, seed: int = 0) -> list[str]:
    """Problems found under ``root`` (empty list = all good).

    Checks each manifest's output and input hashes, then reruns ``rerun_sample`` seeded-random
    selections and compares their indices with the recorded ones.
    """
    from bilaf.selection import select

    problems, rerunnable, input_hashes = [], [], {}
    found = list(manifests(root))
    if not found:
        return [f"no manifests under {root}: nothing to audit"]
    for path in found:
        manifest = read_json(path)
        output = path.with_name(manifest["file"])
        if not output.exists():
            problems.append(f"{output}: missing (named by {path})")
            continue
        if sha256(output) != manifest["sha256"]:
            problems.append(f"{output}: content changed since it was written (hash mismatch)")
            continue
        for name, entry in manifest["inputs"].items():
            source = Path(entry["path"])
            if source not in input_hashes:
                input_hashes[source] = sha256(source) if source.exists() else None
            if input_hashes[source] != entry["sha256"]:
                problems.append(f"{output}: input {name} {source} changed or is missing")
        if manifest.get("rerun"):
            rerunnable.append((output, manifest))
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(rerunnable), size=min(rerun_sample, len(rerunnable)), replace=False)
    for i in sorted(picks):
        output, manifest = rerunnable[i]
        spec = manifest["rerun"]
        again = select(
            spec["method"],
            manifest["inputs"]["features"]["path"],
            spec["budget"],
            spec["seed"],
            **spec["options"],
        )
        if [int(v) for v in again] != read_json(output):
            problems.append(f"{output}: rerunning {spec['method']} gives different indices")
    return problems
