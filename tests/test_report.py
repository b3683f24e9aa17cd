import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bilaf.cli import main
from bilaf.config import parse_method
from bilaf.report import write_report

MAIN = {
    ("random", 10): [50.0, 54.0, 52.0],
    ("bilaf", 10): [60.0, 61.0, 62.0],
    ("random", 20): [70.0, 72.0, 74.0],
    ("bilaf", 20): [65.0, 66.0, 67.0],
}
# Sweep points: rows delta, columns p_rm; one budget, two seeds each (one cell not run).
SWEEP = {
    ("bilaf@delta=1.1,p_rm=0.05", 10): [55.0, 57.0],
    ("bilaf@delta=1.1,p_rm=0.1", 10): [58.0, 60.0],
    ("bilaf@delta=1.2,p_rm=0.05", 10): [61.0, 63.0],
}


def write_metrics(root, values, dataset="d", mode="linear", manifest=False, first_seed=0):
    """One metrics JSON per (method, budget, seed) with the given top-1s; their paths."""
    paths = []
    for (method, budget), tops in values.items():
        for seed, top1 in enumerate(tops, first_seed):
            path = root / dataset / mode / f"{method}_{budget}_{seed}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(
                json.dumps(
                    {
                        "dataset": dataset,
                        "finetune_mode": mode,
                        "method": method,
                        "budget": budget,
                        "seed": seed,
                        "top1": top1,
                        "top5": top1 + 20,
                        "n_labeled": budget,
                        "device": "cpu",
                        "train_seconds": 0.5,
                        "per_class_top1": {"0": top1},
                    }
                )
            )
            if manifest:
                Path(f"{path}.manifest.json").write_text(json.dumps({"file": path.name}))
            paths.append(str(path))
    return paths


def check_summary(table, values):
    """Each (method, budget) row of ``table`` has the mean, std and count of ``values``."""
    table = table.set_index(["method", "budget"])
    assert len(table) == len(values)
    for key, tops in values.items():
        assert table.loc[key, "mean"] == pytest.approx(np.mean(tops), abs=1e-4)
        std = np.std(tops, ddof=1) if len(tops) > 1 else 0.0  # one seed: 0 by convention
        assert table.loc[key, "std"] == pytest.approx(std, abs=1e-4)
        assert table.loc[key, "n_seeds"] == len(tops)


def assert_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def assert_svg(path):
    text = path.read_text()
    assert text.startswith("<?xml") or "<svg" in text


def test_report_numbers_come_from_the_metrics_files(tmp_path):
    paths = write_metrics(tmp_path, MAIN)
    tables, plots = tmp_path / "tables", tmp_path / "plots"
    write_report(paths, tables, plots, ["random", "bilaf"], "t")
    table = pd.read_csv(tables / "summary.csv")
    assert (table["finetune_mode"] == "linear").all()
    check_summary(table, MAIN)
    assert table.set_index(["method", "budget"])["best"].to_dict() == {
        ("bilaf", 10): True,
        ("bilaf", 20): False,
        ("random", 10): False,
        ("random", 20): True,
    }
    md = (tables / "summary.md").read_text()
    assert md.startswith("t\n")
    assert "| random | 52.0±2.0 (3) | **72.0±2.0 (3)** |" in md
    assert "| bilaf | **61.0±1.0 (3)** | 66.0±1.0 (3) |" in md
    assert md.index("| random |") < md.index("| bilaf |")  # the given method order
    assert_png(plots / "d_accuracy.png")
    assert_svg(plots / "d_accuracy.svg")


def test_per_dataset_tables_and_plots(tmp_path):
    other = {("random", 10): [30.0], ("bilaf", 10): [35.0]}
    paths = write_metrics(tmp_path, MAIN, "d")
    paths += write_metrics(tmp_path, other, "e", "knn") + write_metrics(tmp_path, other, "e")
    tables, plots = tmp_path / "tables", tmp_path / "plots"
    written = write_report(paths, tables, plots)
    summary = pd.read_csv(tables / "summary.csv")
    assert set(summary["dataset"]) == {"d", "e"}
    for dataset, values in (("d", MAIN), ("e", other)):
        table = pd.read_csv(tables / f"{dataset}.csv")
        assert (table["dataset"] == dataset).all()
        for _, part in table.groupby("finetune_mode"):
            check_summary(part, values)
        pd.testing.assert_frame_equal(
            table, summary[summary["dataset"] == dataset].reset_index(drop=True)
        )
        assert_png(plots / f"{dataset}_accuracy.png")
        assert_svg(plots / f"{dataset}_accuracy.svg")
    md = (tables / "e.md").read_text()
    assert "### e, finetune mode knn" in md and "### e, finetune mode linear" in md
    assert "| bilaf | **35.0±0.0 (1)** |" in md and "### d" not in md
    assert not list(tables.glob("*_sweep.*")) and not list(plots.glob("*_sweep.*"))
    assert set(written) == set(tables.iterdir()) | set(plots.iterdir())


def test_runs_csv_has_one_row_per_run_with_its_file(tmp_path):
    paths = write_metrics(tmp_path, MAIN, manifest=True)
    paths += write_metrics(tmp_path, SWEEP)
    write_report(paths, tmp_path / "tables", tmp_path / "plots")
    runs = pd.read_csv(tmp_path / "tables" / "runs.csv")
    assert len(runs) == len(paths)
    assert list(runs.columns[:6]) == [
        "dataset",
        "finetune_mode",
        "method",
        "budget",
        "seed",
        "top1",
    ]
    assert {"top5", "n_labeled", "device", "train_seconds"} <= set(runs.columns)
    assert "per_class_top1" not in runs.columns  # not a scalar
    for row in runs.itertuples():
        metrics = json.loads(Path(row.metrics_file).read_text())
        assert (row.method, row.budget, row.seed, row.top1, row.top5) == (
            metrics["method"],
            metrics["budget"],
            metrics["seed"],
            metrics["top1"],
            metrics["top5"],
        )
        sweep = "@" in row.method
        assert (
            pd.isna(row.manifest) if sweep else row.manifest == row.metrics_file + ".manifest.json"
        )


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("bilaf", ("bilaf", {})),
        ("bilaf@delta=1.2", ("bilaf", {"delta": 1.2})),
        ("bilaf_reference@delta=1.2,p_rm=0.05", ("bilaf_reference", {"delta": 1.2, "p_rm": 0.05})),
        ("bilaf@k=10,cores=1e-2", ("bilaf", {"k": 10, "cores": 0.01})),
        ("bilaf@core_method=kmeans,cores=20", ("bilaf", {"core_method": "kmeans", "cores": 20})),
    ],
)
def test_parse_method(name, parsed):
    assert parse_method(name) == parsed
    assert list(parse_method(name)[1]) == list(parsed[1])  # parameter order kept


@pytest.mark.parametrize(
    "name",
    [
        "bilaf@",
        "@delta=1",
        "bilaf@delta",
        "bilaf@delta=x",
        "bilaf@k=1,k=2",
        "b@delta=nan",
        "bilaf@dleta=1",
        "bilaf@core_method=typiclust",
    ],
)
def test_parse_method_rejects_bad_sweep_names(name):
    with pytest.raises(ValueError, match="sweep method"):
        parse_method(name)


def test_sweep_points_get_their_own_table_and_heatmap(tmp_path):
    paths = write_metrics(tmp_path, MAIN) + write_metrics(tmp_path, SWEEP)
    # The same point spelt differently joins its cell; another mode gets its own panel.
    paths += write_metrics(tmp_path, {("bilaf@delta=1.20,p_rm=0.050", 10): [65.0]}, first_seed=2)
    paths += write_metrics(tmp_path, {("bilaf@delta=1.1,p_rm=0.1", 20): [40.0]}, mode="knn")
    tables, plots = tmp_path / "tables", tmp_path / "plots"
    written = write_report(paths, tables, plots)
    summary = pd.read_csv(tables / "summary.csv")
    assert set(summary["method"]) == {"random", "bilaf"}  # sweep points stay out
    check_summary(summary, MAIN)

    sweep = pd.read_csv(tables / "d_sweep.csv")
    expected = {**SWEEP, ("bilaf@delta=1.2,p_rm=0.05", 10): [61.0, 63.0, 65.0]}
    check_summary(sweep[sweep["finetune_mode"] == "linear"], expected)
    check_summary(sweep[sweep["finetune_mode"] == "knn"], {("bilaf@delta=1.1,p_rm=0.1", 20): [40]})
    assert (sweep["base"] == "bilaf").all()
    row = sweep.set_index(["finetune_mode", "method"]).loc[("linear", "bilaf@delta=1.2,p_rm=0.05")]
    assert (row["delta"], row["p_rm"], row["best"]) == (1.2, 0.05, True)
    md = (tables / "d_sweep.md").read_text()
    assert "| bilaf@delta=1.2,p_rm=0.05 | **63.0±2.0 (3)** |" in md
    for path in (plots / "d_sweep.png", plots / "d_sweep.svg"):
        assert path in written
    assert_png(plots / "d_sweep.png")
    assert_svg(plots / "d_sweep.svg")


def test_a_sweep_over_core_methods_gets_named_rows(tmp_path):
    """core_method is a named axis: the table keeps the names and the heat-map labels them."""
    points = {
        (f"bilaf@core_method={name},cores={k}", 10): [acc, acc + 2]
        for name, acc in (("activeft", 60.0), ("kmeans", 64.0))
        for k in (5, 8)
    }
    write_report(write_metrics(tmp_path, {**MAIN, **points}), tmp_path / "t", tmp_path / "p")
    sweep = pd.read_csv(tmp_path / "t" / "d_sweep.csv")
    assert sorted(set(sweep["core_method"])) == ["activeft", "kmeans"]
    best = sweep.loc[sweep["mean"].idxmax()]
    assert (best["core_method"], best["mean"]) == ("kmeans", 65.0)
    svg = (tmp_path / "p" / "d_sweep.svg").read_text()
    assert "kmeans" in svg and "core_method" in svg


def test_cli_report_prints_the_files_written(tmp_path, capsys):
    paths = write_metrics(tmp_path, MAIN)
    tables, plots = tmp_path / "tables", tmp_path / "plots"
    args = ["report", "--metrics", *paths, "--tables-dir", str(tables), "--plots-dir", str(plots)]
    assert main([*args, "--method-order", "bilaf", "random", "--title", "T"]) == 0
    printed = capsys.readouterr().out.split()
    assert str(tables / "d.md") in printed and str(plots / "d_accuracy.svg") in printed
    assert all(Path(path).exists() for path in printed)


def test_best_test_shows_the_best_periodic_evaluation_and_says_so(tmp_path):
    """Full finetuning records its best periodic test top-1 beside the final one; a probe is
    evaluated once, so both metrics show its one number. The caption names the metric."""
    probe = write_metrics(tmp_path, MAIN)
    full = write_metrics(tmp_path, {("bilaf", 10): [40.0, 42.0]}, mode="full")
    for path, best in zip(full, [47.0, 45.0], strict=True):
        m = json.loads(Path(path).read_text())
        Path(path).write_text(json.dumps({**m, "best_top1": best, "last_top1": m["top1"]}))
    tables = {}
    for metric in ("last", "best_test"):
        out = tmp_path / metric
        write_report(probe + full, out / "t", out / "p", metric=metric)
        tables[metric] = pd.read_csv(out / "t" / "summary.csv").set_index(
            ["finetune_mode", "method", "budget"]
        )
        assert (tables[metric]["metric"] == metric).all()
    assert tables["last"].loc[("full", "bilaf", 10), "mean"] == pytest.approx(41.0)
    assert tables["best_test"].loc[("full", "bilaf", 10), "mean"] == pytest.approx(46.0)
    probes = [k for k in tables["last"].index if k[0] == "linear"]
    pd.testing.assert_series_equal(
        tables["last"].loc[probes, "mean"], tables["best_test"].loc[probes, "mean"]
    )
    md = (tmp_path / "best_test" / "t" / "summary.md").read_text()
    assert "best test top-1 % over the periodic evaluations" in md
    assert "test top-1 % of the final model" in (tmp_path / "last" / "t" / "summary.md").read_text()
    with pytest.raises(Exception, match="report metric 'best'"):
        write_report(probe, tmp_path / "x", tmp_path / "y", metric="best")
