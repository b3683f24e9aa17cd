"""Config checks the JSON schema cannot express, and the values rules derive from the config.

Budgets and the core count may be counts (integers >= 1) or fractions of the pool (0 < x < 1);
a float 1.0 is refused as ambiguous, and two budgets resolving to one count as duplicates.
Every error names the config key and the fix, and is raised while Snakemake parses the workflow,
so a bad config fails before any job runs. :func:`coerce_config` first turns the strings that
``snakemake --config`` gives for nested values into the types the schema asks for.
"""

from __future__ import annotations

import copy
import functools
import inspect
import itertools
import math
from pathlib import Path
from typing import Any

from bilaf.data import DATASETS, UNLABELED, DataError, get_source, image_classes
from bilaf.errors import BilafError
from bilaf.selection.base import METHOD_MODULES, get_method
from bilaf.selection.bilaf import CORE_METHODS

# Pipeline methods: every selection method under its own name, plus variants that fix options
# (the official code's BiLAF beside the paper's, so the report shows the two side by side).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "bilaf_reference": ("bilaf", {"mode": "reference"})
}
PIPELINE_METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    **{name: (name, {}) for name in METHOD_MODULES},
    **VARIANTS,
}
# The BiLAF methods: the boundary rule runs them from ActiveFT's cores.
BOUNDARY_METHODS = tuple(m for m, (base, _) in PIPELINE_METHODS.items() if base == "bilaf")
# Classes of the sources with a fixed class list; an imagefolder's are its train subfolders.
NUM_CLASSES = {"fashion_mnist": 10, "cifar10": 10, "cifar100": 100, "imagenet": 1000}


# BiLAF parameters a sweep may vary (the paper's Fig. 4 analogue): a number type, or the names a
# value may take. `cores` changes the core count, `core_method` the core selector (its Table 6).
SWEEP_PARAMS: dict[str, type | tuple[str, ...]] = {
    "delta": float,
    "p_rm": float,
    "p_in": float,
    "k": int,
    "cores": float,
    "core_method": CORE_METHODS,
}


class ConfigError(BilafError):
    """The config is inconsistent; the message names the key."""


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``patch`` merged over it: nested mappings merge, other values replace."""
    merged = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def dataset_configs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The grid's datasets, each with its whole config: ``datasets.<name>`` merged over the rest.

    Without ``datasets`` the grid is the one dataset of the top level.
    """
    base = {key: value for key, value in config.items() if key != "datasets"}
    patches = config.get("datasets") or {base["dataset"]["name"]: {}}
    configs = {}
    for name, patch in patches.items():
        merged = deep_merge(base, patch or {})
        if isinstance(merged.get("dataset"), dict):  # else the schema names dataset
            merged["dataset"]["name"] = name
        configs[name] = merged
    return configs


def method_option(method: str, key: str) -> Any:
    """Option ``key`` of a pipeline method: the variant's fixed value, else the selection
    function's default (declared once, in its signature)."""
    base, fixed = PIPELINE_METHODS[method]
    if key in fixed:
        return fixed[key]
    return inspect.signature(get_method(base)).parameters[key].default


def sweep_point_name(method: str, values: dict[str, Any]) -> str:
    """``bilaf@delta=1.2,p_rm=0.05``: a sweep point as a pipeline method name."""
    return method + "@" + ",".join(f"{key}={point_label(value)}" for key, value in values.items())


def point_label(value: str | float) -> str:
    """A sweep value as names and labels write it: a number in ``g`` format, a name as is."""
    return value if isinstance(value, str) else f"{value:g}"


def parse_method(name: str) -> tuple[str, dict[str, float | int | str]]:
    """A pipeline method name -> (base method, swept BiLAF parameters in order); {} outside sweeps.

    Raises ConfigError on a malformed sweep name, so a typo never becomes a silent extra method.
    """
    base, at, point = name.partition("@")
    if not at:
        return name, {}
    values: dict[str, float | int | str] = {}
    for item in point.split(","):
        key, eq, text = item.partition("=")
        if not (base and eq) or key not in SWEEP_PARAMS or key in values:
            raise ConfigError(
                f"bad sweep method {name!r}: expected base@key=value[,key=value] with keys "
                f"from {sorted(SWEEP_PARAMS)}"
            )
        kind = SWEEP_PARAMS[key]
        if isinstance(kind, tuple):
            if text not in kind:
                raise ConfigError(
                    f"sweep method {name!r}: {key}={text!r} is not one of {', '.join(kind)}"
                )
            values[key] = text
            continue
        try:
            number = float(text)
        except ValueError:
            raise ConfigError(f"sweep method {name!r}: {key}={text!r} is not a number") from None
        if not math.isfinite(number):
            raise ConfigError(f"sweep method {name!r}: {key}={text!r} is not finite")
        values[key] = int(number) if kind is int or number.is_integer() else number
    return base, values


def sweep_methods(config: dict[str, Any]) -> list[str]:
    """Every point of the configured sweep as a method name; [] when there is no sweep."""
    sweep = config.get("sweep")
    if not sweep:
        return []
    keys = list(sweep["params"])
    grid = itertools.product(*(sweep["params"][key] for key in keys))
    return [
        sweep_point_name(sweep["method"], dict(zip(keys, point, strict=True))) for point in grid
    ]


def sweep_budgets(config: dict[str, Any]) -> list[int]:
    """The budgets the sweep runs at, as counts."""
    sweep = config.get("sweep")
    if not sweep:
        return []
    return resolve_counts(sweep["budgets"], pool_size(config), "sweep.budgets")


def method_cores(config: dict[str, Any], method: str, budget: int | None = None) -> int:
    """BiLAF's core count for a pipeline method: the sweep point's, else ``cores_per_budget`` of
    the run's ``budget`` (at least 1; the paper's Table 5: more cores for larger budgets), else
    ``cores``. Without a budget (the pseudo-classes of other methods' picks): ``cores``."""
    point = parse_method(method)[1]
    share = config.get("cores_per_budget")
    if "cores" not in point and share is not None and budget is not None:
        return max(1, round(share * budget))
    return resolve_count(point.get("cores", config["cores"]), pool_size(config), "cores")


def split_sizes(config: dict[str, Any]) -> dict[str, int]:
    """Images in the dataset's train and test splits: the registry's, or counted in its folders."""
    dataset = config["dataset"]
    try:
        return _split_sizes(dataset["source"], dataset.get("train_dir"), dataset.get("test_dir"))
    except DataError as err:  # a missing imagefolder; the message names dataset.<split>_dir
        raise ConfigError(str(err)) from err


@functools.cache
def _split_sizes(source: str, train_dir: str | None, test_dir: str | None) -> dict[str, int]:
    return get_source(source).split_sizes({"train": train_dir, "test": test_dir})


def num_classes(config: dict[str, Any]) -> int:
    """Number of classes of the configured dataset."""
    dataset = config["dataset"]
    return NUM_CLASSES.get(dataset["source"]) or len(image_classes(dataset["train_dir"]))


def backbone_tag(config: dict[str, Any]) -> str:
    """``<backbone>_<input side>px``, the feature folder's name (the side resolved from timm)."""
    from bilaf.backbones import resolve_preprocess

    backbone = config["backbone"]
    size = backbone["image_size"] or resolve_preprocess(backbone["name"]).image_size
    return f"{backbone['name']}_{size}px"


def is_unlabeled(config: dict[str, Any]) -> bool:
    """Whether the dataset is the user's own unlabeled images (selection and export only)."""
    return config["dataset"]["source"] == UNLABELED


def pool_size(config: dict[str, Any]) -> int | None:
    """Number of samples in the pool; None for an unlabeled pool, whose size only its scan knows
    (unless ``dataset.pool_size`` takes a subset of it)."""
    if is_unlabeled(config):
        return config["dataset"]["pool_size"]
    return config["dataset"]["pool_size"] or split_sizes(config)["train"]


def resolve_count(value: float, pool: int | None, key: str) -> int:
    """A count from a count (int >= 1, or a float like 250.0) or a fraction of the pool (0 < x < 1).

    A float 1.0 is refused: it reads as one sample and as the whole pool alike. ``pool`` None: the
    pool size is not known yet (an unlabeled pool before its scan), so a fraction is refused.
    """
    if isinstance(value, float) and value == 1:
        whole = "" if pool is None else f" or {pool} (the pool size) for the whole pool"
        raise ConfigError(f"{key}: 1.0 is ambiguous: write 1 for one sample{whole}")
    if isinstance(value, float) and not value.is_integer():
        if not 0 < value < 1:
            raise ConfigError(f"{key}: {value} is neither a count >= 1 nor a fraction in (0, 1)")
        if pool is None:
            raise ConfigError(
                f"{key}: {value} is a fraction of the pool, whose size an unlabeled pool's scan "
                "finds only when it runs: give a count"
            )
        count = round(value * pool)
        if count < 1:
            raise ConfigError(f"{key}: fraction {value} of a {pool}-sample pool is < 1 sample")
        return count
    if value < 1:
        raise ConfigError(f"{key}: {value} must be a count >= 1 or a fraction in (0, 1)")
    return int(value)


def resolve_counts(values: list[float], pool: int, key: str) -> list[int]:
    """Each entry of the list at ``key`` as a count; two entries of the same count are refused.

    Duplicates would run the same cells twice and count their metrics twice in the tables.
    """
    counts = [resolve_count(value, pool, f"{key}[{i}]") for i, value in enumerate(values)]
    first: dict[int, int] = {}
    for i, count in enumerate(counts):
        j = first.setdefault(count, i)
        if j != i:
            raise ConfigError(
                f"{key}[{j}] ({values[j]}) and {key}[{i}] ({values[i]}) both resolve to {count} "
                f"samples of the {pool}-image pool: keep one"
            )
    return counts


def budgets(config: dict[str, Any]) -> list[int]:
    """The budgets as counts."""
    return resolve_counts(config["budgets"], pool_size(config), "budgets")


def n_cores(config: dict[str, Any]) -> int:
    """BiLAF's core count."""
    return resolve_count(config["cores"], pool_size(config), "cores")


def load_schema(schema_path: str | Path) -> dict[str, Any]:
    """The JSON schema of the config (config/schema.yaml) as a mapping."""
    import yaml

    return yaml.safe_load(Path(schema_path).read_text())


def coerce_config(config: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """``config`` with each string turned into the number, boolean or null the schema wants there.

    ``snakemake --config`` reads a list or mapping with YAML's BaseLoader, so every leaf is a
    string (``budgets=[20,30]`` gives ['20', '30']). A string that does not convert stays, for
    the schema to name. The patches of ``datasets`` are partial top-level configs, coerced so.
    """
    coerced = _coerce(config, schema)
    patches = coerced.get("datasets")
    if isinstance(patches, dict):
        coerced["datasets"] = {
            name: _coerce(patch, schema) if isinstance(patch, dict) else patch
            for name, patch in patches.items()
        }
    return coerced


# Python type of an enum value -> its JSON schema type.
_JSON_TYPES = {type(None): "null", bool: "boolean", int: "integer", float: "number", str: "string"}


def _coerce(value: Any, schema: dict[str, Any]) -> Any:
    """``value`` coerced where ``schema`` (type, properties, items, additionalProperties) says."""
    if isinstance(value, str):
        return _coerce_text(value, _schema_types(schema))
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_coerce(item, schema["items"]) for item in value]
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        extra = extra if isinstance(extra, dict) else {}
        return {key: _coerce(item, properties.get(key, extra)) for key, item in value.items()}
    return value


def _schema_types(schema: dict[str, Any]) -> set[str]:
    """The JSON types a schema allows: its ``type``, and those of its ``enum`` values."""
    declared = schema.get("type", [])
    types = {declared} if isinstance(declared, str) else set(declared)
    return types | {_JSON_TYPES.get(type(value), "") for value in schema.get("enum", [])}


def _coerce_text(text: str, types: set[str]) -> Any:
    """The null (null, ~), boolean (true, false: any case) or number ``text`` spells, where
    ``types`` allows it; else ``text`` unchanged."""
    word = text.strip().lower()
    if "null" in types and word in ("null", "~"):
        return None
    if "boolean" in types and word in ("true", "false"):
        return word == "true"
    number = _number(word)
    if number is not None and ("number" in types or ("integer" in types and type(number) is int)):
        return number
    return text


def _number(text: str) -> int | float | None:
    """``text`` as an int ("20"), else a finite float ("0.05", "1.0" stays 1.0); else None."""
    for parse in (int, float):
        try:
            number = parse(text)
        except ValueError:
            continue
        return number if math.isfinite(number) else None
    return None


def check_schema(config: dict[str, Any], schema: str | Path | dict[str, Any]) -> None:
    """Check ``config`` against the JSON schema and fill in the schema's ``default:`` values.

    ``schema`` is the schema file or its loaded mapping. One pass does both, as
    ``snakemake.utils.validate`` does, but the ConfigError names the first offending key
    (jsonschema's own message hides it). A default fills a key only where its mapping is there.
    """
    import jsonschema

    schema = schema if isinstance(schema, dict) else load_schema(schema)
    check_properties = jsonschema.Draft202012Validator.VALIDATORS["properties"]

    def fill_then_check(validator, properties, instance, subschema):
        if validator.is_type(instance, "object"):
            for key, rule in properties.items():
                if "default" in rule:
                    instance.setdefault(key, copy.deepcopy(rule["default"]))
        yield from check_properties(validator, properties, instance, subschema)

    validator = jsonschema.validators.extend(
        jsonschema.Draft202012Validator, {"properties": fill_then_check}
    )(schema)
    errors = list(validator.iter_errors(config))
    if errors:
        error = min(errors, key=lambda e: [str(p) for p in e.absolute_path])
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        raise ConfigError(f"config key {key.lstrip('.') or '(top level)'}: {error.message}")


def check_grid(
    config: dict[str, Any], schema: str | Path | dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Check the config in one pass and complete it; return dataset name -> its whole config.

    The top level is checked against the schema with its defaults filled in (:func:`check_schema`,
    in place); without ``datasets`` it is the grid's one config. Each dataset of ``datasets`` is
    its patch merged over that (:func:`dataset_configs`), checked against the schema in turn.
    Then :func:`check_config` runs on each. An error in a dataset of ``datasets`` is prefixed
    with ``datasets.<name>:``.
    """
    schema = schema if isinstance(schema, dict) else load_schema(schema)
    check_schema(config, schema)
    patched = bool(config.get("datasets"))
    grid = dataset_configs(config)
    for name, dataset_config in grid.items():
        try:
            if patched:
                check_schema(dataset_config, schema)
            check_config(dataset_config)
        except ConfigError as err:
            if not patched:
                raise
            raise ConfigError(f"datasets.{name}: {err}") from None
    return grid


def check_config(config: dict[str, Any]) -> None:
    """Raise ConfigError for what the schema cannot see: folders, sizes, budgets vs pool, cores."""
    dataset = config["dataset"]
    if is_unlabeled(config):
        check_unlabeled(config)
        return
    for key in ("pool_dir", "pool_list", "labels", "labeled", "label_column"):
        if dataset.get(key) is not None:
            source = dataset["source"]
            raise ConfigError(f"dataset.{key}: only for source {UNLABELED}, not {source}")
    folders = get_source(dataset["source"]).needs_folders
    for key in ("train_dir", "test_dir"):
        if folders and not dataset.get(key):
            raise ConfigError(
                f"dataset.{key}: required for source {dataset['source']}: the labeled "
                "<class>/<image> folder of that split"
            )
        if not folders and dataset.get(key):
            raise ConfigError(
                f"dataset.{key}: only for the folder sources "
                f"{[n for n, s in DATASETS.items() if s.needs_folders]}, not "
                f"{dataset['source']}: remove it"
            )
    total = split_sizes(config)
    for key, split in (("pool_size", "train"), ("test_size", "test")):
        size = dataset[key]
        if size is not None and size > total[split]:
            raise ConfigError(f"dataset.{key}: {size} exceeds the {total[split]} {split} images")
    check_selection_counts(config)


def check_unlabeled(config: dict[str, Any]) -> None:
    """The checks of an unlabeled pool that can run before its scan: where the images are, what
    is given for them, and counts (not fractions) for the budgets and cores."""
    dataset = config["dataset"]
    if (dataset["pool_dir"] is None) == (dataset["pool_list"] is None):
        raise ConfigError(
            f"dataset: source {UNLABELED} reads exactly one of pool_dir (a folder of images) "
            "and pool_list (a file of image paths)"
        )
    for key in ("pool_dir", "pool_list", "labels", "labeled"):
        path = dataset[key]
        exists = Path(path).is_dir() if key == "pool_dir" else Path(path or "").is_file()
        if path is not None and not exists:
            kind = "folder" if key == "pool_dir" else "file"
            raise ConfigError(f"dataset.{key}: {path} is not a {kind}")
    for key in ("train_dir", "test_dir", "test_size"):
        if dataset[key] is not None:
            raise ConfigError(f"dataset.{key}: an unlabeled pool has no labeled splits: remove it")
    if "full" in config["finetune"]["modes"]:
        raise ConfigError(
            "finetune.modes: full finetuning needs a labeled train split; an unlabeled pool's "
            "labeled picks train the probes (linear, knn)"
        )
    check_selection_counts(config)


def check_selection_counts(config: dict[str, Any]) -> None:
    """Budgets and cores against the pool size (where it is known) and each other, and the
    sweep's budgets and core counts. An unlabeled pool's scan checks the largest budget."""
    pool = pool_size(config)
    resolved = budgets(config)
    cores = n_cores(config)
    for key, count in [*((f"budgets[{i}]", b) for i, b in enumerate(resolved)), ("cores", cores)]:
        if pool is not None and count > pool:
            raise ConfigError(f"{key}: {count} exceeds the pool size {pool}")
    if any(m in BOUNDARY_METHODS for m in config["methods"]):
        for i, budget in enumerate(resolved):
            if budget < method_cores(config, "bilaf", budget):
                raise ConfigError(
                    f"budgets[{i}]: {budget} < {cores} cores for BiLAF: raise the budget or "
                    "lower cores"
                )
    sweep_cores = (config.get("sweep") or {}).get("params", {}).get("cores", [])
    resolve_counts(sweep_cores, pool, "sweep.params.cores")  # point names write 1.0 as 1
    for i, budget in enumerate(sweep_budgets(config)):
        for method in sweep_methods(config):
            k = method_cores(config, method, budget)
            if not k <= budget <= (pool or budget):
                raise ConfigError(
                    f"sweep.budgets[{i}]: {budget} must lie between the {k} cores of {method} "
                    f"and the pool size {pool}"
                )
