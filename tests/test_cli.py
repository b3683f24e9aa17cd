import json
import re

import numpy as np
import pytest

from bilaf.cli import main
from tests.selection.contract import blobs


@pytest.fixture
def features(tmp_path):
    path = tmp_path / "f.npy"
    np.save(path, blobs(n=200))
    return path


def test_select_writes_a_json_list(features, tmp_path):
    out = tmp_path / "sel.json"
    assert (
        main(
            [
                "select",
                "random",
                "--features",
                str(features),
                "--budget",
                "15",
                "--seed",
                "4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    picked = json.loads(out.read_text())
    assert len(set(picked)) == 15 and all(0 <= i < 200 for i in picked)


def test_bad_budget_is_a_clear_error_and_writes_nothing(features, tmp_path, capsys):
    out = tmp_path / "sel.json"
    code = main(
        ["select", "random", "--features", str(features), "--budget", "500", "--out", str(out)]
    )
    assert code == 2
    assert "budget 500 exceeds the pool size 200" in capsys.readouterr().err
    assert not out.exists()


def test_select_help_lists_every_method(capsys):
    from bilaf.selection import METHOD_MODULES

    with pytest.raises(SystemExit):
        main(["select", "--help"])
    text = capsys.readouterr().out
    assert all(name in text for name in METHOD_MODULES)


def run_cli(args, capsys):
    """(exit code, stderr) of `bilaf ARGS` (argparse's own errors exit through SystemExit)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit:
        code = exit.code
    return code, capsys.readouterr().err


def select_random(features, out, *extra):
    return ["select", "random", "--features", features, "--budget", "5", "--out", out, *extra]


def test_a_typo_out_never_deletes_a_results_tree(features, tmp_path, capsys):
    results = tmp_path / "results"
    (results / "cifar10").mkdir(parents=True)
    (results / "cifar10" / "metrics.json").write_text("{}")
    code, err = run_cli(select_random(features, results), capsys)
    assert code == 2 and f"output {results} exists and is a folder" in err
    assert (results / "cifar10" / "metrics.json").read_text() == "{}"


def test_out_equal_to_an_input_is_refused(features, tmp_path, capsys):
    before = features.read_bytes()
    code, err = run_cli(select_random(features, features), capsys)
    assert code == 2 and f"would overwrite the input {features}" in err
    assert features.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.npy"]


def test_a_rerun_replaces_its_own_output_but_not_a_users_file(features, tmp_path, capsys):
    out = tmp_path / "sel.json"
    assert run_cli(select_random(features, out, "--seed", "1"), capsys)[0] == 0
    assert run_cli(select_random(features, out, "--seed", "2"), capsys)[0] == 0  # has a manifest
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}')
    code, err = run_cli(select_random(features, notes), capsys)
    assert code == 2 and "notes.json exists and is a file this command did not write" in err
    assert notes.read_text() == '{"mine": true}'


@pytest.fixture
def bad_inputs(tmp_path):
    import zarr

    (tmp_path / "cores.txt").write_text("not json")
    (tmp_path / "garbage.npy").write_bytes(b"hello")
    (tmp_path / "plain.json").write_text("[1, 2]")
    (tmp_path / "folder").mkdir()
    zarr.open_group(str(tmp_path / "nofeat.zarr"), mode="w").create_array("x", data=np.ones(3))
    (tmp_path / "sel.json").write_text('{"not": "a list"}')
    return tmp_path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cores", "{d}/absent.json"], "absent.json does not exist"),
        (["--cores", "{d}/cores.txt"], "cores.txt is not a readable JSON file"),
        (["--option", "clusterz=5"], "bilaf has no option 'clusterz'; its options: cores,"),
        (["--option", "noequals"], "--option 'noequals': expected KEY=VALUE"),
        (["--threads", "-1"], "argument --threads: '-1' is not an integer >= 1"),
        (["--seed", "-1"], "argument --seed: '-1' is not an integer >= 0"),
        (["--features", "{d}/nofeat.zarr"], "has no 'features' array: not a feature store"),
        (["--features", "{d}/folder"], "folder is a folder without zarr.json, not a zarr"),
        (["--features", "{d}/plain.json"], "plain.json is a plain file, not a zarr feature"),
        (["--features", "{d}/garbage.npy"], "garbage.npy is not a readable .npy array"),
    ],
)
def test_bad_select_input_is_one_line_exit_2_nothing_written(
    features, bad_inputs, capsys, args, message
):
    before = sorted(p.name for p in bad_inputs.iterdir())
    argv = ["select", "bilaf", "--features", features, "--n-cores", "4", "--budget", "20"]
    argv += [a.format(d=bad_inputs) for a in args] + ["--out", bad_inputs / "out.json"]
    code, err = run_cli(argv, capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in bad_inputs.iterdir()) == before


def test_a_corrupt_selection_read_by_finetune_is_named(bad_inputs, capsys):
    import zarr

    store = bad_inputs / "pool.zarr"
    group = zarr.open_group(str(store), mode="w")
    group.create_array("features", data=blobs(n=50))
    group.create_array("labels", data=np.arange(50) % 3)
    group.attrs["complete"] = True
    for selection, message in [
        ("sel.json", "must be a flat list of sample indices"),
        ("garbage.npy", "garbage.npy is not a readable JSON file"),
    ]:
        path = bad_inputs / selection
        argv = ["finetune", "--features", store, "--selection", path, "--n-classes", "3"]
        code, err = run_cli([*argv, "--out", bad_inputs / "m.npz"], capsys)
        assert code == 2 and message in err and str(path) in err, err
        assert len(err.strip().splitlines()) == 1
    assert not (bad_inputs / "m.npz").exists()


def test_a_bug_keeps_its_traceback(features, tmp_path, monkeypatch):
    import bilaf.selection.base as base

    def broken(*args, **kwargs):
        raise ValueError("a bug, not bad input")

    monkeypatch.setattr(base, "check_features", broken)
    with pytest.raises(ValueError, match="a bug, not bad input"):
        main(select_random(str(features), str(tmp_path / "o.json")))


def test_device_goes_only_to_a_method_that_takes_one(features, tmp_path, capsys):
    out = tmp_path / "sel.json"
    code, err = run_cli(select_random(features, out, "--device", "warp-drive"), capsys)
    assert code == 0, err  # random takes no device: it is not passed, and not recorded
    manifest = json.loads((tmp_path / "sel.json.manifest.json").read_text())
    assert manifest["device"] == "cpu" and "device" not in manifest["params"]
    argv = ["select", "fds", "--features", features, "--budget", "5", "--device", "warp-drive"]
    code, err = run_cli([*argv, "--out", tmp_path / "fds.json"], capsys)
    assert code == 2 and "device 'warp-drive' is not a torch device" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "fds.json").exists()


def test_help_strings_leave_the_numeric_defaults_to_the_functions():
    import inspect

    from bilaf.cli import RECIPE_OPTIONS, SELECT_OPTIONS, _dest
    from bilaf.finetune_full import Recipe
    from bilaf.selection import get_method

    def states(text, default):  # a choice list may name a string default; numbers are checked
        numbers = {float(n) for n in re.findall(r"\d+(?:\.\d+)?(?:e-?\d+)?", text)}
        return not isinstance(default, bool) and default in numbers

    assert states("Adam learning rate (1e-3)", 0.001) and states("(10)", 10)
    for method, options in SELECT_OPTIONS.items():
        params = inspect.signature(get_method(method)).parameters
        for flag, _, text in options:
            assert not states(text, params[_dest(flag)].default), text
    for flag, _, text in RECIPE_OPTIONS:
        assert not states(text, getattr(Recipe(), _dest(flag))), text
