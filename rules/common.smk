# Config validation, derived values, wildcard constraints and the one path helper per artifact.
import os
import re
import sys

sys.path.insert(0, workflow.basedir)

from snakemake.utils import validate

from bilaf.config import (
    BOUNDARY_METHODS,
    NUM_CLASSES,
    PIPELINE_METHODS,
    budgets,
    check_config,
    check_schema,
    n_cores,
)
from bilaf.data import FASHION_MNIST_FILES

check_schema(config, workflow.source_path("../config/schema.yaml"))  # names the bad key
validate(config, schema="../config/schema.yaml")
check_config(config)

DATASET = config["dataset"]["name"]
BACKBONE_TAG = f"{config['backbone']['name']}_{config['backbone']['image_size']}px"
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
    return [f"{raw_dir()}/{raw.name}" for raw in FASHION_MNIST_FILES]


def features_path(split):
    return f"{RESULTS}/features/{BACKBONE_TAG}/{split}.zarr"


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
