import json

import numpy as np
import pytest

from bilaf.audit import audit, sha256
from bilaf.cli import main
from tests.selection.contract import blobs


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    root.mkdir()
    np.save(root / "f.npy", blobs(n=150))
    for seed in (0, 1):
        assert (
            main(
                [
                    "select",
                    "random",
                    "--features",
                    str(root / "f.npy"),
                    "--budget",
                    "12",
                    "--seed",
                    str(seed),
                    "--out",
                    str(root / f"sel{seed}.json"),
                ]
            )
            == 0
        )
    return root


def flip_one_byte(path, offset=-3):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_clean_results_pass(results):
    assert audit(results) == []
    manifest = json.loads((results / "sel0.json.manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["versions"]["numpy"] == np.__version__
    assert manifest["inputs"]["features"]["sha256"] == sha256(results / "f.npy")


def test_changed_selection_byte_is_named(results):
    flip_one_byte(results / "sel1.json", offset=1)
    problems = audit(results)
    assert len(problems) == 1 and "sel1.json: content changed" in problems[0]


def test_changed_feature_byte_is_named(results):
    flip_one_byte(results / "f.npy")
    problems = audit(results)
    assert problems and all("input features" in p and "f.npy" in p for p in problems)


def test_rerun_catches_a_selection_that_does_not_reproduce(results):
    sel = results / "sel0.json"
    picked = json.loads(sel.read_text())
    picked[0] = next(i for i in range(150) if i not in picked)
    sel.write_text(json.dumps(picked))
    manifest_path = results / "sel0.json.manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["sha256"] = sha256(sel)  # a consistent forgery: only a rerun can tell
    manifest_path.write_text(json.dumps(manifest))
    assert audit(results, rerun_sample=2) == [f"{sel}: rerunning random gives different indices"]


def test_cli_exit_code(results, capsys):
    assert main(["audit", str(results)]) == 0
    flip_one_byte(results / "sel0.json", offset=1)
    assert main(["audit", str(results)]) == 2
    assert "FAIL" in capsys.readouterr().out
