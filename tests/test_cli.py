import json

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
