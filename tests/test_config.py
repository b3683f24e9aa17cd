import copy
from pathlib import Path

import pytest
import yaml

from bilaf.config import (
    ConfigError,
    backbone_tag,
    budgets,
    check_config,
    check_grid,
    check_schema,
    dataset_configs,
    method_cores,
    n_cores,
    num_classes,
    parse_method,
    split_sizes,
    sweep_methods,
)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "config" / "schema.yaml"


@pytest.fixture
def config():
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_default_config_is_valid(config):
    check_schema(config, SCHEMA)
    check_config(config)
    assert budgets(config) == [100, 250, 500, 1000] and n_cores(config) == 50


def test_fractions_resolve_against_the_pool(config):
    config["budgets"] = [0.01, 0.025, 300]
    config["cores"] = 0.005
    assert budgets(config) == [100, 250, 300] and n_cores(config) == 50


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c.update(budgest=[1]), r"\(top level\).*'budgest' was unexpected"),
        (lambda c: c["bilaf"].update(detla=1.2), r"bilaf: .*'detla' was unexpected"),
        (lambda c: c.update(budgets=[100, -5]), r"budgets\[1\]: -5"),
        (lambda c: c.update(methods=["random", "magic"]), r"methods\[1\]: 'magic'"),
        (lambda c: c["bilaf"].update(delta=0.5), r"bilaf.delta: 0.5"),
        (lambda c: c["dataset"].update(pool_size="big"), r"dataset.pool_size"),
    ],
)
def test_schema_errors_name_the_key(config, edit, match):
    edit(config)
    with pytest.raises(ConfigError, match=match):
        check_schema(config, SCHEMA)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c.update(budgets=[100, 40]), r"budgets\[1\]: 40 < 50 cores"),
        (lambda c: c.update(budgets=[20000]), r"budgets\[0\]: 20000 exceeds the pool size"),
        (lambda c: c.update(budgets=[1.5]), r"budgets\[0\]: 1.5 is neither"),
        (lambda c: c["dataset"].update(pool_size=70000), r"dataset.pool_size: 70000 exceeds"),
    ],
)
def test_semantic_errors_name_the_key(config, edit, match):
    edit(config)
    with pytest.raises(ConfigError, match=match):
        check_config(config)


def test_budget_below_cores_is_fine_without_bilaf(config):
    config = copy.deepcopy(config)
    config.update(budgets=[20], methods=["random", "activeft"])
    check_config(config)


def merged(*names: str) -> dict:
    """config.yaml with config/<name>.yaml files merged over it, as snakemake --configfile does."""
    from snakemake.utils import update_config

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for name in names:
        update_config(config, yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text()))
    return config


@pytest.mark.parametrize(
    ("files", "source", "resolved", "cores"),
    [
        (["paper"], "cifar10", [250, 500, 1000], 50),
        (["paper", "paper_cifar100"], "cifar100", [500, 1000, 2500, 5000], 250),
        (["paper", "paper_imagenet"], "imagenet", [12812, 25623, 64058], 6405),
    ],
)
def test_paper_configs_are_the_papers_grid(files, source, resolved, cores):
    config = merged(*files)
    check_schema(config, SCHEMA)
    check_config(config)
    assert config["dataset"]["source"] == source and config["dataset"]["pool_size"] is None
    assert budgets(config) == resolved and n_cores(config) == cores
    assert config["backbone"]["name"] == "vit_small_patch16_224.dino"
    assert config["seeds"] == [0, 1, 2] and config["finetune"]["modes"] == ["full"]
    assert config["bilaf"]["p_rm"] == (0.2 if source == "imagenet" else 0.1)
    assert backbone_tag(config) == "vit_small_patch16_224.dino_224px"


def test_schema_sources_are_the_registry():
    from bilaf.data import DATASETS

    schema = yaml.safe_load(SCHEMA.read_text())
    assert schema["properties"]["dataset"]["properties"]["source"]["enum"] == list(DATASETS)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            lambda c: c["dataset"].update(source="imagenet", train_dir=None, pool_size=None),
            r"dataset.train_dir: required for source imagenet",
        ),
        (lambda c: c["dataset"].update(test_dir="x"), r"dataset.test_dir: only for the folder"),
        (
            lambda c: c["dataset"].update(source="imagefolder", train_dir="/nope", test_dir="/n"),
            r"dataset.train_dir: /nope is not a folder",
        ),
    ],
)
def test_dataset_folder_keys(config, edit, match):
    edit(config)
    with pytest.raises(ConfigError, match=match):
        check_config(config)


def test_imagefolder_sizes_and_classes_are_counted(config, tmp_path):
    for rel in ("train/a/1.png", "train/a/2.png", "train/b/3.jpg", "test/b/4.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    config["dataset"].update(
        source="imagefolder",
        train_dir=str(tmp_path / "train"),
        test_dir=str(tmp_path / "test"),
        pool_size=None,
    )
    config.update(budgets=[0.5], cores=1)
    check_config(config)
    assert split_sizes(config) == {"train": 3, "test": 1}
    assert budgets(config) == [2] and num_classes(config) == 2


def test_datasets_merge_over_the_top_level(config):
    config["datasets"] = {"a": None, "b": {"dataset": {"pool_size": 2000}, "cores": 20}}
    grid = check_grid(config, SCHEMA)
    assert list(grid) == ["a", "b"]
    assert grid["a"]["dataset"]["pool_size"] == 10000 and grid["a"]["cores"] == 50
    assert grid["b"]["dataset"] == {**config["dataset"], "name": "b", "pool_size": 2000}
    assert grid["b"]["cores"] == 20 and grid["b"]["budgets"] == config["budgets"]
    assert "datasets" not in grid["a"] and config["dataset"]["name"] == "fmnist10k"  # no aliasing


def test_without_datasets_the_grid_is_the_top_level(config):
    assert dataset_configs(config) == {"fmnist10k": config}


def test_an_error_in_one_dataset_names_it(config):
    config["datasets"] = {"a": {}, "b": {"budgets": [30]}}
    with pytest.raises(ConfigError, match=r"^datasets\.b: budgets\[0\]: 30 < 50 cores"):
        check_grid(config, SCHEMA)
    config["datasets"] = {"a": {}, "b": {"bilaf": {"dleta": 1.2}}}
    with pytest.raises(ConfigError, match=r"^datasets\.b: config key bilaf"):
        check_grid(config, SCHEMA)


def test_sweep_points_are_method_names_that_parse_back(config):
    config["sweep"] = {"method": "bilaf", "budgets": [500], "params": {"delta": [1.0, 1.25]}}
    config["sweep"]["params"]["cores"] = [0.005, 100]
    names = sweep_methods(config)
    assert names == [
        "bilaf@delta=1,cores=0.005",
        "bilaf@delta=1,cores=100",
        "bilaf@delta=1.25,cores=0.005",
        "bilaf@delta=1.25,cores=100",
    ]
    assert parse_method(names[2]) == ("bilaf", {"delta": 1.25, "cores": 0.005})
    assert parse_method("kmeans") == ("kmeans", {})
    assert [method_cores(config, m) for m in names[:2]] == [50, 100]  # 0.5 % of 10,000
    check_grid(config, SCHEMA)


@pytest.mark.parametrize(
    ("sweep", "match"),
    [
        ({"method": "bilaf", "budgets": [500], "params": {"dleta": [1.2]}}, "sweep.params"),
        ({"method": "fds", "budgets": [500], "params": {"delta": [1.2]}}, "sweep.method"),
        (
            {"method": "bilaf", "budgets": [500], "params": {"p_rm": [1.5]}},
            r"sweep.params.p_rm\[0\]",
        ),
        (
            {"method": "bilaf", "budgets": [30], "params": {"delta": [1.2]}},
            r"sweep.budgets\[0\]: 30",
        ),
    ],
)
def test_bad_sweeps_name_the_key(config, sweep, match):
    config["sweep"] = sweep
    with pytest.raises(ConfigError, match=match):
        check_grid(config, SCHEMA)
