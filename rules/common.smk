# Config validation, the grid (datasets x methods x budgets x seeds, plus an optional BiLAF
# sweep), wildcard constraints and the one path helper per artifact.
import os
import re
import shlex
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)

from bilaf.config import (
    BOUNDARY_METHODS,
    PIPELINE_METHODS,
    backbone_tag,
    budgets,
    check_grid,
    coerce_config,
    is_unlabeled,
    load_schema,
    method_cores,
    method_option,
    num_classes,
    parse_method,
    sweep_budgets,
    sweep_methods,
)
from bilaf.backbones import WEIGHT_KEYWORDS
from bilaf.data import get_source
from bilaf.export import EXPORT_FILES
from bilaf.scan import pool_root as scan_root


def put_own_bin_on_path():
    """Put the running interpreter's bin folder first on PATH when it holds `bilaf`.

    Jobs inherit the environment, so every rule's `bilaf ...` runs the project's own command
    even when `.venv/bin/snakemake` is started without the venv activated (`--sdm conda`
    activates its env in front of this).
    """
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if (Path(bin_dir) / "bilaf").exists() and path.split(os.pathsep)[0] != bin_dir:
        os.environ.update(PATH=os.pathsep.join(filter(None, [bin_dir, path])))


put_own_bin_on_path()
# envs/bilaf.yaml installs the project from this folder as `-e ${BILAF_WORKFLOW_DIR}` (pip
# expands it): snakemake creates the env from a copy of the file under .snakemake/conda, so a
# relative path there would not find the project. Jobs and env creation inherit os.environ.
os.environ.update(BILAF_WORKFLOW_DIR=workflow.basedir)

SCHEMA = load_schema(workflow.source_path("../config/schema.yaml"))
# --config gives nested values as YAML strings: type them as the schema says
config.update(coerce_config(config, SCHEMA))
# One pass: the schema (an error names the key) fills its defaults, then the checks it cannot
# express, on the top level and on each dataset of `datasets`. Dataset name -> its whole config.
GRID = check_grid(config, SCHEMA)


# Benchmarks (labeled data: finetune, evaluate, tables) and the user's own unlabeled pools
# (scan, select, export; predictions once labels are given).
BENCHMARKS = [d for d, c in GRID.items() if not is_unlabeled(c)]
OWN_POOLS = [d for d, c in GRID.items() if is_unlabeled(c)]


def every_method():
    return {m for c in GRID.values() for m in c["methods"] + sweep_methods(c)}


wildcard_constraints:
    dataset="|".join(map(re.escape, GRID)),
    method="|".join(map(re.escape, sorted(every_method(), key=len, reverse=True))),
    backbone=r"[^/]+",
    source="|".join(sorted({c["dataset"]["source"] for c in GRID.values()})),
    split="pool|test",
    given="labels|labeled",
    budget=r"\d+",
    seed=r"\d+",
    k=r"\d+",
    mode="linear|knn|full",


def cfg(w):
    """The config of the job's dataset (a wildcards object or a dataset name)."""
    return GRID[w if isinstance(w, str) else w.dataset]


def param(*keys):
    """A params: function reading ``keys`` from the job's dataset config."""

    def get(w):
        value = cfg(w)
        for key in keys:
            value = value[key]
        return value

    return get


def raw_dir(w):
    """The downloaded files' folder, or an unlabeled pool's scan table; none for folder datasets
    (read where the config says)."""
    source = cfg(w)["dataset"]["source"]
    if is_unlabeled(cfg(w)):
        return [scan_path(w.dataset, "images")]
    return [raw_path(source)] if get_source(source).raw_files else []


def raw_flag(w, flag="--raw"):
    return " ".join(f"{flag} {d}" for d in raw_dir(w))


def cli_flags(values):
    """`--flag value ...` for the values that are set (lists become several words), quoted."""
    flags = []
    for flag, value in values.items():
        if value is not None:
            words = value if isinstance(value, list) else [value]
            flags.append(" ".join([flag, *(shlex.quote(str(v)) for v in words)]))
    return " ".join(flags)


def folder_flags(w):
    """`--train-dir/--test-dir` of folder datasets (ImageNet, ImageFolder); "" otherwise."""
    dataset = cfg(w)["dataset"]
    return cli_flags(
        {"--train-dir": dataset["train_dir"], "--test-dir": dataset["test_dir"]}
    )


def weights_file(w):
    """The checkpoint file as an input (a change reruns extraction); none for hub/random/package."""
    weights = cfg(w)["backbone"]["weights"]
    return [] if weights in WEIGHT_KEYWORDS else [weights]


# Paths: one helper per artifact. Given wildcard names ("{dataset}", "{method}", ...) a helper
# returns the rule's pattern; given values, the file.
RESULTS = "results"
TABLES_DIR = f"{RESULTS}/tables"
PLOTS_DIR = f"{RESULTS}/plots"
TABLE_FORMATS = ("csv", "md")
PLOT_FORMATS = ("png", "svg")


def raw_path(source):
    """A source's downloaded files (a folder)."""
    return f"resources/{source}"


def scan_path(dataset, table):
    """An unlabeled pool's scan: table "images" (the pool's files) or "skipped" (the rest)."""
    return f"{RESULTS}/{dataset}/pool/{table}.csv"


def store_path(dataset, backbone, split, ext="zarr"):
    """A split's feature store (ext zarr) or the table of its samples (ext samples.csv)."""
    return f"{RESULTS}/{dataset}/features/{backbone}/{split}.{ext}"


def features_path(split, ext="zarr"):
    """The zarr store of a split (or, ext samples.csv, its samples table) as an input function:
    the job's dataset, its backbone's tag."""
    return lambda w: store_path(w.dataset, backbone_tag(cfg(w)), split, ext)


def core_name(k, seed):
    return f"K{k}_s{seed}"


def cell_name(method, budget, seed):
    """A run's name below its stage (and mode) folder."""
    return f"{method}/B{budget}_s{seed}"


# The patterns of a core set's and a run's wildcards, for the rules' logs
CORE = core_name("{k}", "{seed}")
CELL = cell_name("{method}", "{budget}", "{seed}")


def cores_path(dataset, k, seed):
    return f"{RESULTS}/{dataset}/cores/{core_name(k, seed)}.json"


def selection_path(dataset, method, budget, seed):
    """ActiveFT at budget B is its K=B core set; every other method has its own file."""
    if method == "activeft":
        return cores_path(dataset, budget, seed)
    return f"{RESULTS}/{dataset}/selection/{cell_name(method, budget, seed)}.json"


def boundary_cores_path(dataset, method, seed, budget):
    """The cores a BiLAF run starts from: K picked by bilaf.core_method (ActiveFT, the paper's;
    or K-Means, FDS, random, as in its Table 6; a sweep point's own): that method's selection at
    budget K, so each core method's cores are cached apart and shared with its own runs at K.
    """
    c = GRID[dataset]
    core_method = parse_method(method)[1].get("core_method", c["bilaf"]["core_method"])
    return selection_path(
        dataset, core_method, method_cores(c, method, int(budget)), seed
    )


def scores_path(dataset, method, budget, seed):
    """A BiLAF run's boundary score of each pick (null for a core), beside its selection."""
    return (
        f"{RESULTS}/{dataset}/selection/{cell_name(method, budget, seed)}.scores.json"
    )


def run_path(stage, dataset, mode, method, budget, seed, ext):
    """Per-run artifact of a finetune mode (linear, knn, full): model or metrics."""
    return f"{RESULTS}/{dataset}/{stage}/{mode}/{cell_name(method, budget, seed)}.{ext}"


def run_pattern(stage, ext):
    return run_path(stage, "{dataset}", "{mode}", "{method}", "{budget}", "{seed}", ext)


def export_path(dataset, method, budget, seed, name):
    """A file of a run's export (an unlabeled pool's picks): one of bilaf.export.EXPORT_FILES."""
    return f"{RESULTS}/{dataset}/export/{cell_name(method, budget, seed)}/{name}"


def export_files(dataset, method, budget, seed):
    return {
        key: export_path(dataset, method, budget, seed, name)
        for key, name in EXPORT_FILES.items()
    }


def labels_path(dataset, given="labels"):
    """Labels given for an unlabeled pool (dataset.labels: of the picks; dataset.labeled: of
    images labeled before), checked and keyed by pool row."""
    return f"{RESULTS}/{dataset}/{given}.csv"


def labeled_input(w):
    """The table of the images labeled before selection, when dataset.labeled names some."""
    return [labels_path(w.dataset, "labeled")] if cfg(w)["dataset"]["labeled"] else []


def labeled_flag(w, input):
    return f"--labeled {input.labeled}" if input.labeled else ""


def checkpoints_path(dataset):
    """The folder of full finetuning's checkpoints (resumable runs)."""
    return f"{RESULTS}/{dataset}/checkpoints"


def log_path(name, dataset="{dataset}"):
    """A job's log, in its dataset's log folder; dataset None: a job of no one dataset."""
    folder = f"{RESULTS}/logs" if dataset is None else f"{RESULTS}/logs/{dataset}"
    return f"{folder}/{name}.log"


def run_log(stage):
    """The log of a per-run job of a finetune mode (finetune, evaluate)."""
    return log_path(f"{stage}/{{mode}}/{CELL}")


def table_path(name, ext):
    return f"{TABLES_DIR}/{name}.{ext}"


def plot_path(name, ext):
    return f"{PLOTS_DIR}/{name}.{ext}"


def map_path(dataset, ext):
    """The PCA pool map of a dataset."""
    return plot_path(f"{dataset}_map", ext)


def summary_files():
    """The report's files over every dataset: Table 1 as csv and markdown, every run (csv)."""
    return {
        "summary_csv": table_path("summary", "csv"),
        "summary_md": table_path("summary", "md"),
        "runs": table_path("runs", "csv"),
    }


def cells(dataset):
    """(method, budget, seed) of every run of a dataset: the grid, then the sweep's points."""
    c = GRID[dataset]
    grid = [(m, b, s) for m in c["methods"] for b in budgets(c) for s in c["seeds"]]
    sweep = [
        (m, b, s)
        for m in sweep_methods(c)
        for b in sweep_budgets(c)
        for s in c["seeds"]
    ]
    return grid + sweep


def all_metrics():
    return [
        run_path("metrics", d, mode, m, b, s, "json")
        for d in BENCHMARKS
        for mode in GRID[d]["finetune"]["modes"]
        for m, b, s in cells(d)
    ]


def prediction_files(dataset, ext):
    """Every run's and mode's predictions (csv) or cross-validation (json); none without labels."""
    c = GRID[dataset]
    if not c["dataset"]["labels"]:
        return []
    return [
        run_path("predictions", dataset, mode, m, b, s, ext)
        for mode in c["finetune"]["modes"]
        for m, b, s in cells(dataset)
    ]


def pick_tables(dataset):
    """An unlabeled pool's table of runs (csv, markdown)."""
    return [table_path(f"{dataset}_picks", ext) for ext in TABLE_FORMATS]


def pool_outputs(dataset):
    """What an unlabeled pool's DAG ends in: every run's export, the table of runs and, with
    labels, the probes' predictions of every run and mode."""
    exports = [
        f for m, b, s in cells(dataset) for f in export_files(dataset, m, b, s).values()
    ]
    return exports + pick_tables(dataset) + prediction_files(dataset, "csv")


def tables(dataset):
    """A dataset's Table 1 layout (csv, markdown)."""
    return [table_path(dataset, ext) for ext in TABLE_FORMATS]


def accuracy_plots(dataset):
    return [plot_path(f"{dataset}_accuracy", ext) for ext in PLOT_FORMATS]


def sweep_files(dataset):
    """The sweep's table (csv, markdown) and heat-map of a dataset; none without a sweep."""
    if not sweep_methods(GRID[dataset]):
        return []
    name = f"{dataset}_sweep"
    return [table_path(name, ext) for ext in TABLE_FORMATS] + [
        plot_path(name, ext) for ext in PLOT_FORMATS
    ]


def table_files(dataset):
    return tables(dataset) + accuracy_plots(dataset) + sweep_files(dataset)


def map_files(dataset):
    return [map_path(dataset, ext) for ext in PLOT_FORMATS]


def get_targets():
    benchmarks = [*summary_files().values()] if BENCHMARKS else []
    return [
        *benchmarks,
        *(f for d in BENCHMARKS for f in table_files(d)),
        *(f for d in OWN_POOLS for f in pool_outputs(d)),
        *(f for d in GRID for f in map_files(d)),
    ]


# Helpers of rules/download.smk
def source_config(source):
    """The dataset block of the first grid dataset read from ``source`` (its URLs, local copy)."""
    return next(c for c in GRID.values() if c["dataset"]["source"] == source)["dataset"]


def download_flags(w):
    """Sources from the config: dataset.urls (null: the official, []: none) and local_dir."""
    dataset = source_config(w.source)
    urls = dataset["urls"]
    flags = (
        ["--no-url"] if urls == [] else [f"--url {shlex.quote(u)}" for u in urls or []]
    )
    if dataset["local_dir"]:
        flags.append(f"--local-dir {shlex.quote(dataset['local_dir'])}")
    return " ".join(flags)


# Helpers of rules/features.smk
def subset_flag(w):
    """The CLI flag choosing the pool's (or test set's) seeded subset; empty for all rows."""
    size = cfg(w)["dataset"]["pool_size" if w.split == "pool" else "test_size"]
    return f"--subset-size {size}" if size else ""


def extract_options(w):
    """Optional `bilaf extract` flags: dataset folders and preprocessing set in the config."""
    backbone = cfg(w)["backbone"]
    values = {
        "--image-size": backbone["image_size"],
        "--interpolation": backbone["interpolation"],
        "--mean": backbone["mean"],
        "--std": backbone["std"],
    }
    return f"{folder_flags(w)} {cli_flags(values)}"


# Helpers of rules/select.smk
def bilaf_option(key):
    """A BiLAF option of the job: the sweep point's value, else the dataset config's."""
    return lambda w: parse_method(w.method)[1].get(key, cfg(w)["bilaf"][key])


def boundary_method_pattern():
    """The boundary rule's method names: BiLAF's, with the grid's sweep points. Never empty: an
    empty pattern would match every method (a grid without BiLAF made them ambiguous).
    """
    names = {
        *BOUNDARY_METHODS,
        *(m for m in every_method() if parse_method(m)[0] in BOUNDARY_METHODS),
    }
    return "|".join(map(re.escape, sorted(names, key=len, reverse=True)))


def baseline_options(w):
    """Options the pipeline sets for a baseline: ProbCover's k-means k is the class count, as in
    its paper (an unlabeled pool's: its BiLAF core count, the pseudo-classes)."""
    if PIPELINE_METHODS[w.method][0] != "probcover":
        return ""
    c = cfg(w)
    k = method_cores(c, "bilaf") if is_unlabeled(c) else num_classes(c)
    return f"--option clusters={k}"


# Helpers of rules/finetune.smk
def selection_input(w):
    return selection_path(w.dataset, w.method, w.budget, w.seed)


def n_classes(w):
    return num_classes(cfg(w))


def full_param(key):
    return param("finetune", "full", key)


# Helpers of rules/report.smk
def method_order():
    """Every method of the grid in config order (sweep points last): the tables' row order."""
    order = [m for c in GRID.values() for m in c["methods"] + sweep_methods(c)]
    return list(dict.fromkeys(order))


def annotated(files, caption, category):
    """``files`` marked for `snakemake --report`, one subcategory per dataset."""
    marked = []
    for d in BENCHMARKS:
        for f in files(d):
            marked.append(report(f, caption=caption, category=category, subcategory=d))
    return marked


def map_cells(w):
    """The selections the map shows: each method at the dataset's first budget and seed."""
    c = cfg(w)
    budget, seed = budgets(c)[0], c["seeds"][0]
    return {m: selection_path(w.dataset, m, budget, seed) for m in c["methods"]}


def map_cores(w):
    """BiLAF's core file of that seed, when BiLAF is in the grid (its map marks the cores) or
    the pool is unlabeled (its map is coloured by pseudo-class: the nearest core)."""
    c = cfg(w)
    if not (set(c["methods"]) & set(BOUNDARY_METHODS) or is_unlabeled(c)):
        return []
    return [boundary_cores_path(w.dataset, "bilaf", c["seeds"][0], budgets(c)[0])]


# Helpers of rules/download.smk (the scan of an unlabeled pool)
def pool_input(w):
    """The folder or list an unlabeled pool is read from (its mtime reruns the scan)."""
    dataset = cfg(w)["dataset"]
    return dataset["pool_dir"] or dataset["pool_list"]


def pool_root(w):
    """The folder an unlabeled pool's image names are relative to."""
    dataset = cfg(w)["dataset"]
    return str(scan_root(dataset["pool_dir"], dataset["pool_list"]))


def pool_flag(w):
    dataset = cfg(w)["dataset"]
    return cli_flags(
        {"--pool-dir": dataset["pool_dir"], "--pool-list": dataset["pool_list"]}
    )


def largest_count(w):
    """The most images a selection of the dataset picks (the scan checks that many are there)."""
    c = cfg(w)
    methods = c["methods"] + sweep_methods(c)
    counts = budgets(c) + sweep_budgets(c)
    return max(counts + [method_cores(c, m, b) for m in methods for b in counts])


# Helpers of rules/export.smk
def method_kind(w):
    """How an export names a method's picks: boundary (BiLAF: core or boundary), core (ActiveFT)
    or baseline."""
    base = parse_method(w.method)[0]
    return (
        "boundary"
        if base in BOUNDARY_METHODS
        else "core" if base == "activeft" else "baseline"
    )


def run_scores(w):
    """A run's pick scores where its method has them (BiLAF); none otherwise."""
    if parse_method(w.method)[0] not in BOUNDARY_METHODS:
        return []
    return [scores_path(w.dataset, w.method, w.budget, w.seed)]


def run_cores(w):
    """The cores a run's picks are grouped by (their pseudo-class: the nearest one): a BiLAF
    run's own cores; the dataset's BiLAF cores of that seed for every other method."""
    return boundary_cores_path(w.dataset, w.method, w.seed, w.budget)
