import numpy as np
import pandas as pd
import pytest

from bilaf.io import write_json
from bilaf.report import write_report


def test_report_numbers_come_from_the_metrics_files(tmp_path):
    values = {
        ("random", 10): [50.0, 54.0, 52.0],
        ("bilaf", 10): [60.0, 61.0, 62.0],
        ("random", 20): [70.0, 72.0, 74.0],
        ("bilaf", 20): [65.0, 66.0, 67.0],
    }
    paths = []
    for (method, budget), tops in values.items():
        for seed, top1 in enumerate(tops):
            path = tmp_path / f"{method}_{budget}_{seed}.json"
            write_json(
                path,
                {
                    "dataset": "d",
                    "finetune_mode": "linear",
                    "method": method,
                    "budget": budget,
                    "seed": seed,
                    "top1": top1,
                },
            )
            paths.append(str(path))
    out = tmp_path / "out"
    write_report(paths, out / "s.csv", out / "s.md", out / "p.png", ["random", "bilaf"], "t")
    table = pd.read_csv(out / "s.csv").set_index(["method", "budget"])
    assert (table["finetune_mode"] == "linear").all()
    for key, tops in values.items():
        assert table.loc[key, "mean"] == pytest.approx(np.mean(tops))
        assert table.loc[key, "std"] == pytest.approx(np.std(tops, ddof=1), abs=1e-4)
        assert table.loc[key, "n_seeds"] == 3
    md = (out / "s.md").read_text()
    assert "| random | 52.0±2.0 (3) | **72.0±2.0 (3)** |" in md
    assert "| bilaf | **61.0±1.0 (3)** | 66.0±1.0 (3) |" in md
    assert (out / "p.png").read_bytes()[:4] == b"\x89PNG"
