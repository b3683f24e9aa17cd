"""Config checks the JSON schema cannot express, and the values rules derive from the config.

Budgets and the core count may be counts (integers >= 1) or fractions of the pool (0 < x < 1).
Every error names the config key and the fix, and is raised while Snakemake parses the workflow,
so a bad config fails before any job runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Pipeline method name -> (selection method, fixed options). The two BiLAF entries run the same
# implementation in its two modes so the report shows them side by side.
PIPELINE_METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "random": ("random", {}),
    "activeft": ("activeft", {}),
    "bilaf": ("bilaf", {"mode": "paper"}),
    "bilaf_reference": ("bilaf", {"mode": "reference"}),
    "fds": ("fds", {}),
    "kmeans": ("kmeans", {}),
    "typiclust": ("typiclust", {}),
    "probcover": ("probcover", {}),
}
BOUNDARY_METHODS = ("bilaf", "bilaf_reference")
SPLIT_SIZES = {"fashion_mnist": {"train": 60_000, "test": 10_000}}
NUM_CLASSES = {"fashion_mnist": 10}


class ConfigError(ValueError):
    """The config is inconsistent; the message names the key."""


def pool_size(config: dict[str, Any]) -> int:
    """Number of samples in the unlabeled pool."""
    dataset = config["dataset"]
    return dataset["pool_size"] or SPLIT_SIZES[dataset["source"]]["train"]


def resolve_count(value: float, pool: int, key: str) -> int:
    """A count from a count (int >= 1) or a fraction of the pool (0 < value < 1)."""
    if isinstance(value, float) and not value.is_integer():
        if not 0 < value < 1:
            raise ConfigError(f"{key}: {value} is neither a count >= 1 nor a fraction in (0, 1)")
        count = round(value * pool)
        if count < 1:
            raise ConfigError(f"{key}: fraction {value} of a {pool}-sample pool is < 1 sample")
        return count
    if value < 1:
        raise ConfigError(f"{key}: {value} must be a count >= 1 or a fraction in (0, 1)")
    return int(value)


def budgets(config: dict[str, Any]) -> list[int]:
    pool = pool_size(config)
    return [resolve_count(b, pool, f"budgets[{i}]") for i, b in enumerate(config["budgets"])]


def n_cores(config: dict[str, Any]) -> int:
    return resolve_count(config["cores"], pool_size(config), "cores")


def check_schema(config: dict[str, Any], schema_path: str | Path) -> None:
    """Raise ConfigError naming the first offending key (jsonschema's own message hides it)."""
    import jsonschema
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if errors:
        error = min(errors, key=lambda e: [str(p) for p in e.absolute_path])
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        raise ConfigError(f"config key {key.lstrip('.') or '(top level)'}: {error.message}")


def check_config(config: dict[str, Any]) -> None:
    """Raise ConfigError for what the schema cannot see: sizes, budgets vs pool and cores."""
    dataset = config["dataset"]
    total = SPLIT_SIZES[dataset["source"]]
    for key, split in (("pool_size", "train"), ("test_size", "test")):
        size = dataset[key]
        if size is not None and size > total[split]:
            raise ConfigError(f"dataset.{key}: {size} exceeds the {total[split]} {split} images")
    pool = pool_size(config)
    resolved = budgets(config)
    for i, budget in enumerate(resolved):
        if budget > pool:
            raise ConfigError(f"budgets[{i}]: {budget} exceeds the pool size {pool}")
    cores = n_cores(config)
    if cores > pool:
        raise ConfigError(f"cores: {cores} exceeds the pool size {pool}")
    if any(m in BOUNDARY_METHODS for m in config["methods"]):
        for i, budget in enumerate(resolved):
            if budget < cores:
                raise ConfigError(
                    f"budgets[{i}]: {budget} < {cores} cores for BiLAF: raise the budget or "
                    "lower cores"
                )
