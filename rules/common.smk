# Config validation, derived values, wildcard constraints and the one path helper per artifact.
import os
import re
import shlex
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)

from snakemake.utils import validate

from bilaf.config import (
    BOUNDARY_METHODS,
    PIPELINE_METHODS,
    backbone_tag,
    budgets,
    check_config,
    check_schema,
    n_cores,
    num_classes,
)
from bilaf.backbones import WEIGHT_KEYWORDS
from bilaf.data import get_source

check_schema(config, workflow.source_path("../config/schema.yaml"))  # names the bad key
validate(config, schema="../config/schema.yaml")
check_config(config)

DATASET = config["dataset"]["name"]
SOURCE = get_source(config["dataset"]["source"])
BACKBONE_TAG = backbone_tag(config)
BUDGETS = budgets(config)
CORES = n_cores(config)
SEEDS = config["seeds"]
METHODS = config["methods"]
FINETUNE_MODES = config["finetune"]["modes"]
RESULTS = f"results/{DATASET}"


wildcard_constraints:
    dataset=re.escape(DATASET),
    method="|".join(PIPELINE_METHODS),
    split="pool|test",
    budget=r"\d+",
    seed=r"\d+",
    k=r"\d+",
    mode="|".join(FINETUNE_MODES),


def raw_dir():
    return f"resources/{config['dataset']['source']}"


def raw_files():
    """What the download rule fetches; none for folder datasets (read where the config says)."""
    return [f"{raw_dir()}/{name}" for name in SOURCE.raw_files]


def raw_flag(files, flag="--raw"):
    """`<flag> <dir>`: the folder the raw files are fetched into, from their paths; "" for none."""
    if not files:
        return ""
    # raw files may sit in a subfolder of it (CIFAR's unpacked tarball)
    depth = len(SOURCE.raw_files[0].split("/"))
    return f"{flag} {Path(files[0]).parents[depth - 1]}"


def download_flags():
    """Sources from the config: dataset.urls (null: the official, []: none) and local_dir."""
    dataset = config["dataset"]
    urls = dataset["urls"]
    flags = (
        ["--no-url"] if urls == [] else [f"--url {shlex.quote(u)}" for u in urls or []]
    )
    if dataset["local_dir"]:
        flags.append(f"--local-dir {shlex.quote(dataset['local_dir'])}")
    return " ".join(flags)


def cli_flags(values):
    """`--flag value ...` for the values that are set (lists become several words), quoted."""
    flags = []
    for flag, value in values.items():
        if value is not None:
            words = value if isinstance(value, list) else [value]
            flags.append(" ".join([flag, *(shlex.quote(str(v)) for v in words)]))
    return " ".join(flags)


def folder_flags():
    """`--train-dir/--test-dir` of folder datasets (ImageNet, ImageFolder); "" otherwise."""
    dataset = config["dataset"]
    return cli_flags(
        {"--train-dir": dataset["train_dir"], "--test-dir": dataset["test_dir"]}
    )


def extract_options():
    """Optional `bilaf extract` flags: dataset folders and preprocessing set in the config."""
    backbone = config["backbone"]
    values = {
        "--image-size": backbone["image_size"],
        "--interpolation": backbone["interpolation"],
        "--mean": backbone["mean"],
        "--std": backbone["std"],
    }
    return f"{folder_flags()} {cli_flags(values)}"


def weights_file():
    """The checkpoint file as an input (a change reruns extraction); none for hub/random/package."""
    weights = config["backbone"]["weights"]
    return [] if weights in WEIGHT_KEYWORDS else [weights]


def features_path(split):
    return f"{RESULTS}/features/{BACKBONE_TAG}/{split}.zarr"


def samples_path(split):
    """The CSV naming the image behind each feature row (stable order across machines)."""
    return f"{RESULTS}/features/{BACKBONE_TAG}/{split}.samples.csv"


def subset_flag(split):
    """The CLI flag choosing the pool's (or test set's) seeded subset; empty for all rows."""
    size = config["dataset"]["pool_size" if split == "pool" else "test_size"]
    return f"--subset-size {size}" if size else ""


def cores_path(k, seed):
    return f"{RESULTS}/cores/K{k}_s{seed}.json"


def selection_path(method, budget, seed):
    """ActiveFT at budget B is its K=B core set; every other method has its own file."""
    if method == "activeft":
        return cores_path(budget, seed)
    return f"{RESULTS}/selection/{method}/B{budget}_s{seed}.json"


def run_path(stage, mode, method, budget, seed, ext):
    """Per-run artifact of a finetune mode (linear, knn, ...): model or metrics."""
    return f"{RESULTS}/{stage}/{mode}/{method}/B{budget}_s{seed}.{ext}"


def log_path(name):
    return f"results/logs/{DATASET}/{name}.log"


def all_metrics():
    return [
        run_path("metrics", mode, m, b, s, "json")
        for mode in FINETUNE_MODES
        for m in METHODS
        for b in BUDGETS
        for s in SEEDS
    ]


def get_targets():
    return [
        "results/tables/summary.csv",
        "results/tables/summary.md",
        "results/plots/accuracy_vs_budget.png",
    ]
