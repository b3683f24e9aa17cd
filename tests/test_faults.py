"""A killed stage leaves the previous output as it was, and a rerun is byte-identical."""

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.selection.contract import blobs


def select_command(features, out, iters):
    return [
        sys.executable,
        "-m",
        "bilaf.cli",
        "select",
        "activeft",
        "--features",
        str(features),
        "--budget",
        "20",
        "--seed",
        "3",
        "--iters",
        str(iters),
        "--out",
        str(out),
    ]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_a_killed_selection_keeps_the_old_output_and_a_rerun_is_byte_identical(tmp_path, signum):
    features, out = tmp_path / "f.npy", tmp_path / "sel.json"
    np.save(features, blobs(n=3000, d=32))
    subprocess.run(select_command(features, out, 5), check=True, capture_output=True)
    manifest = out.with_name("sel.json.manifest.json")
    first = out.read_bytes(), manifest.read_bytes()

    long_run = subprocess.Popen(select_command(features, out, 10**6), stderr=subprocess.PIPE)
    time.sleep(4)  # importing torch and starting the optimisation, far from done
    assert long_run.poll() is None, long_run.stderr.read().decode()
    long_run.send_signal(signum)
    assert long_run.wait(timeout=30) != 0
    assert (out.read_bytes(), manifest.read_bytes()) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.npy", "sel.json", manifest.name]

    subprocess.run(select_command(features, out, 5), check=True, capture_output=True)
    assert (out.read_bytes(), manifest.read_bytes()) == first
