"""Provenance manifests and the reproducibility audit.

Every selection and metrics file gets ``<file>.manifest.json``: the file's own SHA-256, the
SHA-256 of each input (a zarr store hashes every file in it) with its path relative to the
manifest's folder, the parameters that produced it, the seed, package versions, the git commit
and the device. ``audit(root)`` checks every manifest against the files on disk and reruns a
sample of the selections, reporting any that differ.

:func:`write_with_manifest` writes a JSON output and its manifest as one pair: both are renamed
into place under an exclusive lock of their folder, and the audit reads each pair under a shared
lock, so concurrent writers of one output never leave (or show) one's file with the other's
manifest.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bilaf.errors import InputError
from bilaf.io import check_replaceable, json_text

MANIFEST_SUFFIX = ".manifest.json"
PACKAGES = ("numpy", "torch", "timm", "zarr", "pandas", "snakemake")
RERUN_KEYS = ("method", "budget", "seed", "options")


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


def _manifest_path(output: str | Path) -> Path:
    """Where the manifest of ``output`` lives: ``<output>.manifest.json`` beside it."""
    output = Path(output)
    return output.with_name(output.name + MANIFEST_SUFFIX)


def _manifest(
    output: Path,
    digest: str,
    inputs: dict[str, str | Path],
    params: dict[str, Any],
    seed: int | None,
    device: str,
    rerun: dict[str, Any] | None,
) -> dict[str, Any]:
    """The manifest of ``output`` (SHA-256 ``digest``); input paths are stored relative to its
    folder, so the audit finds them whatever the current directory is when it runs."""
    folder = os.path.abspath(output.parent)
    return {
        "file": output.name,
        "sha256": digest,
        "inputs": {
            name: {"path": os.path.relpath(os.path.abspath(p), folder), "sha256": sha256(p)}
            for name, p in inputs.items()
        },
        "params": params,
        "seed": seed,
        "device": device,
        "git_commit": _git_commit(),
        "versions": _versions(),
        "rerun": rerun,
    }


def has_manifest(path: Path) -> bool:
    """Whether ``path`` is a file with its manifest beside it: an output of
    :func:`write_with_manifest`, which a rerun of the same command may replace."""
    return path.is_file() and _manifest_path(path).is_file()


@contextlib.contextmanager
def _folder_lock(folder: Path, operation: int) -> Iterator[None]:
    """Hold ``fcntl.flock(operation)`` on ``folder`` (LOCK_EX to replace a pair, LOCK_SH to
    read one); closing the descriptor releases it."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, operation)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def _temporary(final: Path, data: bytes) -> Iterator[Path]:
    """A new sibling of ``final`` holding ``data``, removed on exit unless renamed away."""
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        tmp.unlink()  # recreated below, so the file gets the umask's mode, not mkstemp's 0600
        with open(tmp, "xb") as fh:
            fh.write(data)
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def write_with_manifest(
    output: str | Path,
    obj: Any,
    inputs: dict[str, str | Path],
    params: dict[str, Any],
    seed: int | None = None,
    device: str = "cpu",
    rerun: dict[str, Any] | None = None,
) -> Path:
    """Write ``obj`` as JSON to ``output`` and ``<output>.manifest.json`` describing how it was
    made, so that a reader always sees a matching pair; return the manifest's path.

    ``rerun``: for a selection, the ``select`` call that reproduces it (method, budget, seed,
    options; the features come from ``inputs['features']``). An existing ``output`` is replaced
    only when it has a manifest (an earlier output of this kind), else OutputError.

    Both files are written to temporaries first, then renamed into place under an exclusive
    lock of the folder, which :func:`audit` holds shared while it reads a pair.
    """
    output = Path(output)
    check_replaceable(output, has_manifest)
    output.parent.mkdir(parents=True, exist_ok=True)
    data = json_text(obj).encode()
    digest = hashlib.sha256(data).hexdigest()
    manifest = json_text(_manifest(output, digest, inputs, params, seed, device, rerun)).encode()
    path = _manifest_path(output)
    with _temporary(output, data) as tmp_output, _temporary(path, manifest) as tmp_manifest:
        with _folder_lock(output.parent, fcntl.LOCK_EX):
            os.replace(tmp_output, output)
            os.replace(tmp_manifest, path)
    return path


def manifests(root: str | Path) -> Iterator[Path]:
    yield from sorted(Path(root).rglob(f"*{MANIFEST_SUFFIX}"))


def _describe(err: BaseException) -> str:
    """``Type: message`` on one line, for a FAIL line."""
    message = " ".join(str(err).split())
    return f"{type(err).__name__}: {message}" if message else type(err).__name__


def _check_manifest(manifest: Any) -> None:
    """Raise InputError unless ``manifest`` has every key the audit reads."""
    if not isinstance(manifest, dict):
        raise InputError("not a JSON object")
    missing = [key for key in ("file", "sha256", "inputs") if key not in manifest]
    if missing:
        raise InputError(f"missing {', '.join(missing)}")
    if not isinstance(manifest["inputs"], dict):
        raise InputError("inputs is not an object")
    for name, entry in manifest["inputs"].items():
        if not (isinstance(entry, dict) and isinstance(entry.get("path"), str)):
            raise InputError(f"input {name} has no path")
        if "sha256" not in entry:
            raise InputError(f"input {name} has no sha256")
    rerun = manifest.get("rerun")
    if rerun and not (isinstance(rerun, dict) and set(RERUN_KEYS) <= rerun.keys()):
        raise InputError(f"rerun lacks one of {', '.join(RERUN_KEYS)}")


def _read_pair(path: Path) -> tuple[dict[str, Any], bytes | None]:
    """(manifest, output bytes or None if the output is missing), read as one consistent pair
    under a shared lock of the folder; InputError if the manifest is corrupt."""
    with _folder_lock(path.parent, fcntl.LOCK_SH):
        try:
            manifest = json.loads(path.read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"not JSON ({err})") from None
        _check_manifest(manifest)
        try:
            return manifest, path.with_name(manifest["file"]).read_bytes()
        except FileNotFoundError:
            return manifest, None


def _input_problems(
    output: Path, manifest: dict[str, Any], hashes: dict[Path, str | None]
) -> list[str]:
    """One line per input of ``output`` whose hash differs or that is missing; ``hashes``
    caches each input's hash across manifests."""
    problems = []
    for name, source in _inputs(manifest, output.parent).items():
        if source not in hashes:
            hashes[source] = sha256(source) if source.exists() else None
        if hashes[source] != manifest["inputs"][name]["sha256"]:
            problems.append(f"{output}: input {name} {source} changed or is missing")
    return problems


def _inputs(manifest: dict[str, Any], folder: Path) -> dict[str, Path]:
    """The manifest's input paths, joined to its folder (absolute paths stay) and normalised
    lexically, as :func:`_manifest` made them relative (a symlinked folder keeps its ``..``)."""
    return {
        name: Path(os.path.normpath(folder / entry["path"]))
        for name, entry in manifest["inputs"].items()
    }


def _rerun_problem(output: Path, manifest: dict[str, Any], recorded: bytes) -> str | None:
    """The FAIL line when rerunning the selection does not give the indices in ``recorded``
    (the output's bytes, as read with its manifest)."""
    from bilaf.selection import select

    spec = manifest["rerun"]
    try:
        features = _inputs(manifest, output.parent)["features"]
        again = select(spec["method"], features, spec["budget"], spec["seed"], **spec["options"])
        if [int(v) for v in again] != json.loads(recorded):
            return f"{output}: rerunning {spec['method']} gives different indices"
    # Broad on purpose: the audit is what people run when things are broken, so a damaged
    # store's decoder error (or anything else) must become a FAIL line, not end the audit.
    except Exception as err:
        return f"{output}: rerunning {spec['method']} failed: {_describe(err)}"
    return None


def audit(root: str | Path, rerun_sample: int = 3, seed: int = 0) -> list[str]:
    """Problems found under ``root`` (empty list = all good), one line per file
    ("<path>: <what is wrong>").

    Checks each manifest's output and input hashes, then reruns ``rerun_sample`` seeded-random
    selections and compares their indices with the recorded ones. A corrupt manifest, an
    unreadable file or a rerun that raises is reported like any other problem.
    """
    problems: list[str] = []
    rerunnable: list[tuple[Path, dict[str, Any], bytes]] = []
    hashes: dict[Path, str | None] = {}
    found = list(manifests(root))
    if not found:
        return [f"no manifests under {root}: nothing to audit"]
    for path in found:
        try:
            manifest, data = _read_pair(path)
        # Broad on purpose (see _rerun_problem): one bad manifest must not hide the rest.
        except Exception as err:
            if isinstance(err, InputError):
                problems.append(f"{path}: corrupt manifest: {err}")
            else:
                problems.append(f"{path}: cannot be read ({_describe(err)})")
            continue
        output = path.with_name(manifest["file"])
        if data is None:
            problems.append(f"{output}: missing (named by {path})")
            continue
        if hashlib.sha256(data).hexdigest() != manifest["sha256"]:
            problems.append(f"{output}: content changed since it was written (hash mismatch)")
            continue
        try:
            problems += _input_problems(output, manifest, hashes)
        except Exception as err:  # broad on purpose (see _rerun_problem)
            problems.append(f"{output}: inputs cannot be checked ({_describe(err)})")
            continue
        if manifest.get("rerun"):
            rerunnable.append((output, manifest, data))
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(rerunnable), size=min(rerun_sample, len(rerunnable)), replace=False)
    for i in sorted(picks):
        problem = _rerun_problem(*rerunnable[i])
        if problem:
            problems.append(problem)
    return problems
