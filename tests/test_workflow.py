"""The whole DAG on the tiny config (.test/config.yaml), then what reruns after a change."""

import json
import subprocess
import sys
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


def jobs_after(workdir: Path, override: str) -> dict[str, int]:
    """Rule -> job count a dry run plans after merging YAML ``override`` over the tiny config."""
    return planned_jobs(workdir, "--configfile", str(TINY), extra_config(workdir, override))


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
    for plot in ("tiny_accuracy.png", "tiny_accuracy.svg", "tiny_map.png", "tiny_map.svg"):
        assert (finished_run / "results/plots" / plot).stat().st_size > 10_000
    runs = pd.read_csv(finished_run / "results/tables/runs.csv")
    assert len(runs) == 3 * 2 * 2  # methods x budgets x probes, one seed
    for run in runs.itertuples():  # every row is its metrics file's numbers
        metrics = json.loads((finished_run / run.metrics_file).read_text())
        assert metrics["top1"] == pytest.approx(run.top1)
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
    jobs = jobs_after(finished_run, "bilaf: {delta: 1.3}\n")
    # 2 probes each; the pool map shows BiLAF's picks
    assert jobs == {"boundary": 2, "finetune": 4, "evaluate": 4, "report": 1, "pool_map": 1}


def test_adding_a_seed_runs_only_the_new_cells(finished_run):
    jobs = jobs_after(finished_run, "seeds: [0, 1]\n")
    # seed 1: cores K10 (BiLAF) + K20, K40 (ActiveFT), 2 random, 2 bilaf; 6 runs x 2 probes
    new = {"core": 3, "baseline": 2, "boundary": 2, "finetune": 12, "evaluate": 12}
    assert jobs == {**new, "report": 1}


def test_adding_a_budget_runs_only_the_new_cells(finished_run):
    jobs = jobs_after(finished_run, "budgets: [20, 40, 60]\n")
    # B=60: ActiveFT's K60 cores, random, bilaf; 3 runs x 2 probes (the map stays at B=20)
    new = {"core": 1, "baseline": 1, "boundary": 1, "finetune": 6, "evaluate": 6}
    assert jobs == {**new, "report": 1}


def test_sweep_and_second_dataset_plan_only_their_cells(finished_run):
    jobs = jobs_after(
        finished_run,
        "datasets: {tiny: {}, tiny2: {dataset: {pool_seed: 1}}}\n"
        "sweep: {method: bilaf, budgets: [40], params: {delta: [1.0, 1.3], p_rm: [0.1, 0.2]}}\n",
    )
    # tiny: 4 new sweep points at B=40 (none equals the plain bilaf run, whose delta is 1.1);
    # tiny2: its own pool (2 extracts, K10/K20/K40 cores) with 3 methods x 2 budgets + 4 points
    assert jobs == {
        "extract": 2,
        "core": 3,
        "baseline": 2,
        "boundary": 4 + 2 + 4,
        "finetune": 2 * (4 + 6 + 4),
        "evaluate": 2 * (4 + 6 + 4),
        "pool_map": 1,
        "report": 1,
    }


def test_bad_config_fails_before_any_job(tmp_path):
    override = extra_config(tmp_path, "budgets: [20, 5]\n")
    result = snakemake(tmp_path, "--configfile", str(TINY), override)  # TINY, then override
    assert result.returncode != 0
    assert "budgets[1]: 5 < 10 cores" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "resources").exists()


def test_a_list_on_the_command_line_plans_those_budgets(tmp_path):
    result = snakemake(tmp_path, "-n", "--config", "budgets=[20,30]")  # YAML gives ['20', '30']
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "selection/random/B30_s0.json" in result.stdout and "B40_s0" not in result.stdout


def test_a_nested_key_on_the_command_line_reaches_the_boundary_rule(tmp_path):
    result = snakemake(tmp_path, "-n", "--printshellcmds", "--config", 'bilaf={"delta": 1.3}')
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "--delta 1.3 " in result.stdout and "--delta 1.1" not in result.stdout


def test_a_scalar_on_the_command_line_turns_a_sweep_off(tmp_path):
    sweep = extra_config(tmp_path, "sweep: {method: bilaf, budgets: [40], params: {k: [5]}}\n")
    without_sweep = planned_jobs(tmp_path, "--configfile", str(TINY))
    assert planned_jobs(tmp_path, "--configfile", str(TINY), sweep) != without_sweep
    jobs = planned_jobs(tmp_path, "--configfile", str(TINY), sweep, "--config", "sweep=null")
    assert jobs == without_sweep


def test_jobs_find_bilaf_when_the_venv_is_not_on_path(tmp_path):
    """`.venv/bin/snakemake ...` from a shell without the venv: the rules still run `bilaf`."""
    result = run_workflow(
        tmp_path, "resources/fashion_mnist", "--configfile", str(TINY), path="/usr/bin:/bin"
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "resources/fashion_mnist/train-images-idx3-ubyte").is_file()


@pytest.fixture(scope="module")
def second_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dag2")
    result = snakemake(workdir)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


def test_two_runs_give_byte_identical_selections_and_tables(finished_run, second_run):
    kept = [
        *(finished_run / "results/tiny").glob("*/**/B*_s*.json"),  # selections and metrics
        *(finished_run / "results/tiny/cores").glob("*.json"),
        *(finished_run / "results/tables").glob("*.md"),
        *(finished_run / "results/tables").glob("summary.csv"),
        *(finished_run / "results/tables").glob("tiny.csv"),
    ]
    files = [p.relative_to(finished_run) for p in kept if "/metrics/" not in str(p)]
    assert len(files) > 12
    for rel in files:
        assert (finished_run / rel).read_bytes() == (second_run / rel).read_bytes(), rel


def audit(workdir: Path, *args: str):
    return subprocess.run(
        [sys.executable, "-m", "bilaf.cli", "audit", "results", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
    )


def test_audit_passes_then_names_a_changed_feature_chunk(second_run):
    result = audit(second_run, "--rerun", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    store = next((second_run / "results/tiny/features").glob("*/pool.zarr"))
    chunk = next(
        p for p in sorted((store / "features").rglob("*")) if p.is_file() and "c" in p.parts
    )
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01
    chunk.write_bytes(bytes(data))
    result = audit(second_run)
    assert result.returncode != 0
    assert "pool.zarr" in result.stdout and "FAIL" in result.stdout
