import copy
import re
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
    coerce_config,
    dataset_configs,
    load_schema,
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


def test_budgets_resolving_to_the_same_count_are_refused(config):
    config["dataset"]["pool_size"] = 400
    config.update(budgets=[0.05, 20], cores=10)
    message = (
        "budgets[0] (0.05) and budgets[1] (20) both resolve to 20 samples of the 400-image "
        "pool: keep one"
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_config(config)
    config.update(budgets=[40])
    config["sweep"] = {"method": "bilaf", "budgets": [40, 0.1], "params": {"delta": [1.2]}}
    with pytest.raises(ConfigError, match=r"sweep.budgets\[0\] \(40\) and sweep.budgets\[1\]"):
        check_grid(config, SCHEMA)


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda c: c.update(budgets=[20, 1.0], methods=["random"]), "budgets[1]"),
        (lambda c: c.update(cores=1.0), "cores"),
        (lambda c: c["sweep"].update(budgets=[1.0]), "sweep.budgets[0]"),
        (lambda c: c["sweep"]["params"].update(cores=[10, 1.0]), "sweep.params.cores[1]"),
    ],
)
def test_a_float_one_is_refused_as_a_count(config, edit, key):
    config["dataset"]["pool_size"] = 400
    config.update(budgets=[1, 250.0], cores=10.0, methods=["random"])
    config["sweep"] = {"method": "bilaf", "budgets": [250.0], "params": {"delta": [1.2]}}
    assert budgets(config) == [1, 250] and n_cores(config) == 10  # integer-valued: counts
    check_grid(config, SCHEMA)
    edit(config)
    message = f"{key}: 1.0 is ambiguous: write 1 for one sample or 400 (the pool size)"
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_grid(config, SCHEMA)


def test_command_line_strings_become_the_schemas_types(config):
    """What `snakemake --config` makes of lists and mappings: YAML strings at every leaf."""
    config.update(budgets=["100", "0.05", "250.0"], sweep="NULL", cores="0.001")
    config["bilaf"].update(delta="1.3", k="10", normalize="True")
    config["dataset"].update(pool_size="~", name="123")
    config["backbone"].update(interpolation="null", mean=["0.5", "0", "1e-1"])
    config["datasets"] = {"a": "null", "b": {"cores": "20", "bilaf": {"normalize": "false"}}}
    coerced = coerce_config(config, load_schema(SCHEMA))
    assert coerced["budgets"] == [100, 0.05, 250.0]
    assert [type(b) for b in coerced["budgets"]] == [int, float, float]
    assert coerced["sweep"] is None and coerced["cores"] == 0.001
    assert coerced["bilaf"] == {**config["bilaf"], "delta": 1.3, "k": 10, "normalize": True}
    assert coerced["dataset"]["pool_size"] is None and coerced["dataset"]["name"] == "123"
    assert coerced["backbone"]["interpolation"] is None
    assert coerced["backbone"]["mean"] == [0.5, 0, 0.1]
    assert coerced["datasets"] == {"a": None, "b": {"cores": 20, "bilaf": {"normalize": False}}}
    assert config["budgets"] == ["100", "0.05", "250.0"]  # the input is left as it was
    check_grid(coerced, SCHEMA)
    assert type(coerce_config({"cores": "1.0"}, load_schema(SCHEMA))["cores"]) is float


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c["bilaf"].update(k="1.5"), r"bilaf.k: '1.5' is not of type 'integer'"),
        (lambda c: c["bilaf"].update(delta="big"), r"bilaf.delta: 'big' is not of type"),
        (lambda c: c["bilaf"].update(normalize="yes"), r"bilaf.normalize: 'yes' is not of"),
        (lambda c: c.update(budgets=["20", "nan"]), r"budgets\[1\]: 'nan' is not of type"),
        (lambda c: c["dataset"].update(source="null"), r"dataset.source: 'null' is not one"),
        (
            lambda c: c.update(datasets={"b": {"bilaf": {"delta": "x"}}}),
            r"datasets.b: config key bilaf.delta: 'x' is not of type",
        ),
    ],
)
def test_strings_that_do_not_convert_stay_for_the_schema_to_name(config, edit, match):
    edit(config)
    with pytest.raises(ConfigError, match=match):
        check_grid(coerce_config(config, load_schema(SCHEMA)), SCHEMA)


def pick_config(tmp_path, **dataset):
    """config/pick.yaml merged over config.yaml, as `make pick` runs it, on a folder of tmp_path."""
    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    pick = yaml.safe_load((ROOT / "config" / "pick.yaml").read_text())
    (tmp_path / "images").mkdir(exist_ok=True)
    pick["dataset"].update({"pool_dir": str(tmp_path / "images"), **dataset})
    config = dataset_configs({**base, **{k: v for k, v in pick.items() if k != "dataset"}})
    config = next(iter(config.values()))
    config["dataset"] = {**base["dataset"], **pick["dataset"]}
    check_schema(config, SCHEMA)
    return config


def test_the_pick_config_is_an_unlabeled_pool_of_unknown_size(tmp_path):
    config = pick_config(tmp_path)
    check_config(config)
    assert budgets(config) == [500] and n_cores(config) == 50


@pytest.mark.parametrize(
    "dataset, edit, match",
    [
        ({"pool_dir": None}, {}, "reads exactly one of pool_dir .* and pool_list"),
        ({"pool_list": "x.txt"}, {}, "reads exactly one of pool_dir"),
        ({"pool_dir": "/no/such/folder"}, {}, r"dataset.pool_dir: /no/such/folder is not a folder"),
        ({"labels": "/no/labels.csv"}, {}, r"dataset.labels: /no/labels.csv is not a file"),
        ({"test_size": 100}, {}, "dataset.test_size: an unlabeled pool has no labeled splits"),
        ({}, {"budgets": [0.05]}, r"budgets\[0\]: 0.05 is a fraction .* give a count"),
        ({}, {"cores": 0.5}, "cores: 0.5 is a fraction"),
        ({}, {"budgets": [20]}, r"budgets\[0\]: 20 < 50 cores for BiLAF"),
        ({"pool_size": 100}, {"budgets": [200]}, r"budgets\[0\]: 200 exceeds the pool size 100"),
        ({}, {"finetune": {"modes": ["full"]}}, "full finetuning needs a labeled train split"),
    ],
)
def test_unlabeled_pool_errors_name_the_key(tmp_path, dataset, edit, match):
    config = pick_config(tmp_path, **dataset)
    config.update(edit)
    with pytest.raises(ConfigError, match=match):
        check_config(config)


@pytest.mark.parametrize("key", ["pool_dir", "pool_list", "labels", "labeled", "label_column"])
def test_unlabeled_keys_are_refused_on_a_labeled_source(config, key):
    config["dataset"][key] = "x"
    check_schema(config, SCHEMA)
    with pytest.raises(ConfigError, match=f"dataset.{key}: only for source unlabeled"):
        check_config(config)


def test_cores_per_budget_grows_the_core_count_with_the_budget(config):
    config["cores_per_budget"] = 0.1
    check_schema(config, SCHEMA)
    check_config(config)
    assert [method_cores(config, "bilaf", b) for b in (100, 250, 1000, 4)] == [10, 25, 100, 1]
    assert method_cores(config, "bilaf") == 50  # no budget: `cores` (other methods' groups)
    assert method_cores(config, "bilaf@cores=20", 1000) == 20  # a sweep point's count wins
    config["cores_per_budget"] = 1.5
    with pytest.raises(ConfigError, match="cores_per_budget"):
        check_schema(config, SCHEMA)
