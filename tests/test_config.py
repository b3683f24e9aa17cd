import copy
from pathlib import Path

import pytest
import yaml

from bilaf.config import ConfigError, budgets, check_config, check_schema, n_cores

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
