"""The rules take every path from rules/common.smk's helpers; the config is checked in one pass."""

import re

import pytest
import yaml

from bilaf.config import ConfigError, check_grid, load_schema
from tests.workflow_helpers import ROOT, snakemake

SCHEMA = load_schema(ROOT / "config" / "schema.yaml")


@pytest.fixture
def config():
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


@pytest.mark.parametrize(
    "path",
    sorted(p for p in (ROOT / "rules").glob("*.smk") if p.name != "common.smk"),
    ids=lambda p: p.name,
)
def test_rule_files_write_no_path_of_their_own(path):
    literals = re.findall(r'"[^"\n]*\b(?:results|resources)/[^"\n]*"', path.read_text())
    assert not literals, f"{path.name}: build these with a helper of common.smk: {literals}"


def test_defaults_fill_each_dataset_config_once(config):
    del config["activeft"]["lr"]  # config.yaml sets no dataset.urls either
    config["datasets"] = {"a": None, "b": {"bilaf": {"k": 5}}}
    grid = check_grid(config, SCHEMA)
    assert config["activeft"]["lr"] == 0.001 and config["sweep"] is None  # the top level
    for name in ("a", "b"):
        assert grid[name]["activeft"]["lr"] == 0.001 and grid[name]["dataset"]["urls"] is None
    assert grid["b"]["bilaf"] == {**config["bilaf"], "k": 5}
    grid["a"]["finetune"]["modes"].append("full")  # no default is shared between datasets
    assert grid["b"]["finetune"]["modes"] == config["finetune"]["modes"] == ["linear", "knn"]


def test_a_top_level_error_has_no_dataset_prefix(config):
    config["datasets"] = {"a": {}, "b": {}}
    config["budgest"] = [20]
    with pytest.raises(ConfigError, match=r"^config key \(top level\): .*'budgest'"):
        check_grid(config, SCHEMA)


def test_a_patch_of_the_wrong_type_is_named(config):
    config["datasets"] = {"b": {"dataset": "cifar10"}}
    with pytest.raises(ConfigError, match=r"^datasets\.b: config key dataset: 'cifar10' is not"):
        check_grid(config, SCHEMA)


def test_a_dry_run_names_the_bad_key(tmp_path):
    result = snakemake(tmp_path, "-n", "--config", "budgets=[20,-5]")
    assert result.returncode != 0
    assert "config key budgets[1]: -5 is less than or equal to" in result.stdout + result.stderr


def test_probcover_gets_the_class_count_as_its_k(tmp_path):
    """ProbCover's δ comes from k-means with k = the number of classes (its paper), not the
    budget, which makes δ so small at large budgets that every ball holds its own point only.
    A grid without BiLAF plans too (the boundary rule's pattern once matched every method)."""
    result = snakemake(tmp_path, "-n", "-p", "--config", "methods=[probcover]", "budgets=[100,250]")
    assert result.returncode == 0, result.stderr[-2000:]
    commands = [line for line in result.stdout.splitlines() if "select probcover" in line]
    assert commands and all("--option clusters=10 " in line for line in commands)


def commands(result, text):
    """The shell commands of a dry run (-p) that contain ``text``."""
    return [line for line in result.stdout.splitlines() if text in line]


def test_core_method_changes_only_the_boundary_cores(tmp_path):
    """bilaf.core_method=kmeans: the boundary rule reads K-Means' selection of K (a baseline job
    of its own, cached apart from ActiveFT's cores, which no job plans for BiLAF any more)."""
    args = ("-n", "-p", "--config", "methods=[bilaf,random]", "budgets=[100]")
    plain = snakemake(tmp_path, *args)
    kmeans = snakemake(tmp_path, *args, 'bilaf={"core_method": "kmeans"}')
    assert plain.returncode == 0 and kmeans.returncode == 0, kmeans.stderr[-2000:]
    for result, cores in ((plain, "cores/K50_s"), (kmeans, "selection/kmeans/B50_s")):
        boundary = commands(result, "select bilaf ")
        assert boundary and all(f"--cores results/fmnist10k/{cores}" in line for line in boundary)
    assert "select activeft" in plain.stdout and "select activeft" not in kmeans.stdout
    assert "select kmeans" in kmeans.stdout
    assert commands(kmeans, "select random") == commands(plain, "select random")


def test_core_method_sweep_reads_each_point_its_own_cores(tmp_path):
    """A sweep over bilaf.core_method: each point's boundary job reads its core method's
    selection of K, and the grid's own BiLAF keeps ActiveFT's cores."""
    sweep = (
        'sweep={"method": "bilaf", "budgets": [100], "params": {"core_method": ["kmeans", "fds"]}}'
    )
    args = ("-n", "-p", "--config", "methods=[bilaf]", "budgets=[100]", "seeds=[0]", sweep)
    result = snakemake(tmp_path, *args)
    assert result.returncode == 0, result.stderr[-2000:]
    boundary = commands(result, "select bilaf ")
    for name, cores in (
        ("bilaf", "cores/K50_s0"),
        ("bilaf@core_method=kmeans", "selection/kmeans/B50_s0"),
        ("bilaf@core_method=fds", "selection/fds/B50_s0"),
    ):
        out = f"--out results/fmnist10k/selection/{name}/B100_s0.json"
        assert [c for c in boundary if out in c and f"--cores results/fmnist10k/{cores}" in c]


def test_cores_per_budget_gives_each_budget_its_own_cores(tmp_path):
    result = snakemake(
        tmp_path,
        "-n",
        "-p",
        "--config",
        "methods=[bilaf]",
        "budgets=[100,250]",
        "seeds=[0]",
        "cores_per_budget=0.1",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    boundary = commands(result, "select bilaf ")
    assert any("--budget 100 " in c and "cores/K10_s0.json" in c for c in boundary)
    assert any("--budget 250 " in c and "cores/K25_s0.json" in c for c in boundary)
    assert {c.split("--budget ")[1].split()[0] for c in commands(result, "select activeft")} == {
        "10",
        "25",
    }
