import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import zarr

from bilaf.audit import audit, sha256, write_with_manifest
from bilaf.cli import main
from bilaf.errors import InputError
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


def feature_store(path, n=150, d=16):
    """A complete zarr feature store of ``n`` blob rows in chunks of 50 rows."""
    group = zarr.open_group(str(path), mode="w")
    group.create_array("features", data=blobs(n=n, d=d), chunks=(50, d))
    group.create_array("labels", data=np.arange(n, dtype=np.int64) % 8, chunks=(n,))
    group.attrs["complete"] = True
    return path


def select_random(features, out, seed=0):
    args = ["select", "random", "--features", str(features), "--budget", "12"]
    assert main([*args, "--seed", str(seed), "--out", str(out)]) == 0


@pytest.mark.parametrize(
    "damage",
    [lambda data: b"not a zstd frame" * 8, lambda data: data[: len(data) // 2]],
    ids=["garbage", "truncated"],
)
def test_damaged_store_chunk_is_reported_with_every_other_problem(tmp_path, damage):
    store = feature_store(tmp_path / "pool.zarr")
    sels = [tmp_path / f"sel{seed}.json" for seed in (0, 1)]
    for seed, sel in enumerate(sels):
        select_random(store, sel, seed)
    flip_one_byte(sels[1], offset=1)
    chunk = store / "features" / "c" / "1" / "0"
    chunk.write_bytes(damage(chunk.read_bytes()))
    problems = audit(tmp_path, rerun_sample=2)
    assert all("\n" not in p for p in problems)
    assert problems[0] == f"{sels[0]}: input features {store} changed or is missing"
    assert problems[1] == f"{sels[1]}: content changed since it was written (hash mismatch)"
    assert problems[2].startswith(f"{sels[0]}: rerunning random failed: ")
    assert len(problems) == 3


def test_a_rerun_error_of_any_kind_is_one_fail_line(results, monkeypatch):
    def broken(*args, **kwargs):
        raise InputError("feature store pool.zarr is damaged:\nrebuild it")

    monkeypatch.setattr("bilaf.selection.select", broken)
    assert audit(results, rerun_sample=1) == [
        f"{results / 'sel1.json'}: rerunning random failed: "
        "InputError: feature store pool.zarr is damaged: rebuild it"
    ]


@pytest.mark.parametrize(
    "text", ["{not json", "{}", "[]", '{"file": "sel0.json", "sha256": "0", "inputs": {"f": {}}}']
)
def test_corrupt_manifest_is_named_and_the_audit_goes_on(results, text):
    manifest = results / "sel0.json.manifest.json"
    manifest.write_text(text)
    flip_one_byte(results / "sel1.json", offset=1)
    problems = audit(results)
    assert len(problems) == 2 and all("\n" not in p for p in problems)
    assert problems[0].startswith(f"{manifest}: corrupt manifest")
    assert "sel1.json: content changed" in problems[1]


def test_audit_from_another_directory_finds_relative_inputs(tmp_path, monkeypatch):
    workflow, elsewhere = tmp_path / "workflow", tmp_path / "elsewhere"
    (workflow / "results" / "features").mkdir(parents=True)
    elsewhere.mkdir()
    monkeypatch.chdir(workflow)
    np.save("results/features/f.npy", blobs(n=150))
    select_random("results/features/f.npy", "results/selection/sel.json")
    manifest = json.loads(Path("results/selection/sel.json.manifest.json").read_text())
    assert manifest["inputs"]["features"]["path"] == "../features/f.npy"
    monkeypatch.chdir(elsewhere)
    root = workflow / "results"
    assert audit(root) == []
    features = root / "features" / "f.npy"
    flip_one_byte(features)
    assert audit(root) == [
        f"{root / 'selection' / 'sel.json'}: input features {features} changed or is missing"
    ]


def _write_repeatedly(output, features, obj, times):
    for _ in range(times):
        write_with_manifest(output, obj, {"features": features}, {}, seed=0)


def test_concurrent_writers_always_leave_a_matching_pair(tmp_path):
    features, output = tmp_path / "f.npy", tmp_path / "sel.json"
    np.save(features, blobs(n=20))
    write_with_manifest(output, [0], {"features": features}, {}, seed=0)
    context = multiprocessing.get_context("fork")
    writers = [
        context.Process(target=_write_repeatedly, args=(output, features, [i] * 200, 40))
        for i in (1, 2)
    ]
    for writer in writers:
        writer.start()
    problems, audits = [], 0
    while any(writer.is_alive() for writer in writers) or audits < 25:
        problems += audit(tmp_path, rerun_sample=0)
        audits += 1
    for writer in writers:
        writer.join()
        assert writer.exitcode == 0
    assert problems == []
    assert json.loads(output.read_text()) in ([1] * 200, [2] * 200)
    assert not list(tmp_path.glob(".*.tmp"))  # no temporaries left behind
