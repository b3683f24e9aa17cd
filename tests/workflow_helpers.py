"""Run the workflow from tests: a real run or a dry run in a scratch working directory."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def snakemake(
    workdir: Path, *args: str, timeout: int = 600, path: str | None = None
) -> subprocess.CompletedProcess:
    """`snakemake -s <repo>/Snakefile --directory workdir --cores 2 ARGS` with this venv's PATH.

    ``path`` replaces PATH instead, as in a shell where the venv is not activated.
    """
    venv_path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    env = {**os.environ, "PATH": venv_path if path is None else path}
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Rule -> job count of a dry run (empty when there is nothing to do); 'all' left out."""
    result = snakemake(workdir, "-n", *args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    stats = result.stdout.split("Job stats:")[-1] if "Job stats:" in result.stdout else ""
    return {
        m[1]: int(m[2])
        for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)
        if m[1] not in ("total", "all")
    }
