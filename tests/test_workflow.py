"""The whole DAG on the tiny config (.test/config.yaml), then what reruns after a change."""

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.workflow_helpers import ROOT, planned_jobs
from tests.workflow_helpers import snakemake as run_workflow

TINY = ROOT / ".test" / "config.yaml"
LOCAL_DATA = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not LOCAL_DATA.exists(),
        reason="needs Debian's dataset-fashion-mnist (make test installs it)",
    ),
]


def snakemake(workdir: Path, *args: str):
    return run_workflow(workdir, "--configfile", str(TINY), *args)


def extra_config(workdir: Path, text: str) -> str:
    path = workdir / "override.yaml"
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dag")
    result = snakemake(workdir)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


def test_whole_dag_writes_table_and_plot(finished_run):
    summary = pd.read_csv(finished_run / "results/tables/summary.csv")
    assert set(summary["method"]) == {"random", "activeft", "bilaf"}
    assert set(summary["finetune_mode"]) == {"linear", "knn"}
    assert sorted(summary["budget"].unique()) == [20, 40]
    assert (summary["n_seeds"] == 1).all()
    assert summary["mean"].between(10, 100).all()  # above chance on 10 classes
    assert (finished_run / "results/plots/accuracy_vs_budget.png").stat().st_size > 10_000
    metrics = json.loads(
        (finished_run / "results/tiny/metrics/linear/bilaf/B40_s0.json").read_text()
    )
    assert metrics["n_labeled"] == 40 and metrics["n_test"] == 300
    assert sum(metrics["labeled_class_histogram"]) == 40
    picked = json.loads((finished_run / "results/tiny/selection/bilaf/B40_s0.json").read_text())
    cores = json.loads((finished_run / "results/tiny/cores/K10_s0.json").read_text())
    assert len(set(picked)) == 40 and set(cores) <= set(picked)


def test_second_run_has_nothing_to_do(finished_run):
    assert planned_jobs(finished_run, "--configfile", str(TINY)) == {}


def test_changing_delta_reruns_only_downstream_of_boundary(finished_run):
    override = extra_config(finished_run, "bilaf: {delta: 1.3}\n")
    jobs = planned_jobs(finished_run, "--configfile", str(TINY), override)
    assert jobs == {"boundary": 2, "finetune": 4, "evaluate": 4, "report": 1}  # 2 probes each


def test_adding_a_seed_runs_only_the_new_cells(finished_run):
    override = extra_config(finished_run, "seeds: [0, 1]\n")
    jobs = planned_jobs(finished_run, "--configfile", str(TINY), override)
    # seed 1: cores K10 (BiLAF) + K20, K40 (ActiveFT), 2 random, 2 bilaf; 6 runs x 2 probes
    assert jobs == {
        "core": 3,
        "baseline": 2,
        "boundary": 2,
        "finetune": 12,
        "evaluate": 12,
        "report": 1,
    }


def test_bad_config_fails_before_any_job(tmp_path):
    override = extra_config(tmp_path, "budgets: [20, 5]\n")
    result = snakemake(tmp_path, "--configfile", str(TINY), override)  # TINY, then override
    assert result.returncode != 0
    assert "budgets[1]: 5 < 10 cores" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "resources").exists()
