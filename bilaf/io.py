"""Atomic writes and JSON helpers: an interrupted job never leaves a file that looks complete,
and an output never replaces what it must not (a folder, an input, someone else's file)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from bilaf.errors import InputError, OutputError

Ownership = Callable[[Path], bool]


def is_plain_file(path: Path) -> bool:
    """A regular file (what a file output may replace unless its writer knows better)."""
    return path.is_file()


def starts_with_line(path: Path, header: str) -> bool:
    """Whether the text file ``path`` begins with the line ``header`` (or a longer header that
    starts with it): how a table's writer recognises its earlier output."""
    try:
        with path.open() as fh:
            return fh.readline().rstrip("\r\n").startswith(header)
    except (OSError, UnicodeDecodeError):
        return False


def check_replaceable(final: str | Path, ours: Ownership = is_plain_file) -> None:
    """Raise OutputError when ``final`` exists and ``ours(final)`` does not recognise it as an
    earlier output of the same writer (so a typo like ``--out results`` never deletes a tree)."""
    final = Path(final)
    if (final.exists() or final.is_symlink()) and not ours(final):
        kind = "a folder" if final.is_dir() else "a file"
        raise OutputError(
            f"output {final} exists and is {kind} this command did not write: not replacing "
            "it; choose another output path or remove it yourself"
        )


def check_outputs_apart(outputs: Iterable[str | Path], inputs: Iterable[str | Path]) -> None:
    """Raise OutputError when an output is, contains or lies inside one of the inputs."""
    resolved = [(Path(i), Path(i).resolve()) for i in inputs]
    for output in outputs:
        out = Path(output).resolve()
        for given, inp in resolved:
            if out == inp or out in inp.parents or inp in out.parents:
                raise OutputError(
                    f"output {output} would overwrite the input {given}: choose another path"
                )


@contextlib.contextmanager
def atomic_path(final: str | Path, ours: Ownership = is_plain_file) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it onto ``final`` (file or directory).

    ``final`` may already exist only as an earlier output of the same writer (``ours``; default:
    a regular file), else OutputError before anything is written. On any exception the
    temporary is removed and ``final`` is left untouched.
    """
    final = Path(final)
    check_replaceable(final, ours)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    tmp.unlink()
    try:
        yield tmp
        if final.is_dir() and not final.is_symlink():  # only an earlier output of ours
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def json_text(obj: Any) -> str:
    """``obj`` as the project writes JSON: indented, keys of a mapping sorted, a final newline."""
    return json.dumps(obj, indent=1, sort_keys=isinstance(obj, dict)) + "\n"


def read_json(path: str | Path) -> Any:
    """The JSON in ``path``; InputError naming the file when it is missing or not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path} is not a readable JSON file ({err})") from None
