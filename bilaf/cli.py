"""``bilaf`` command line: one thin subcommand per pipeline stage (what the Snakemake rules call).

Heavy imports (torch, timm, zarr) happen inside each subcommand, so a light stage starts fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bilaf.audit import has_manifest, write_with_manifest
from bilaf.data import is_samples_file
from bilaf.errors import BilafError, InputError
from bilaf.finetune import is_model_file
from bilaf.io import (
    Ownership,
    check_outputs_apart,
    check_replaceable,
    is_plain_file,
    read_json,
)
from bilaf.store import is_feature_store, open_store

# Method-specific options of `bilaf select`: (flag, type, help). Defaults live in the functions.
SELECT_OPTIONS: dict[str, list[tuple[str, Any, str]]] = {
    "activeft": [
        ("--iters", int, "optimisation steps (SPEC §2: 300; ImageNet 100)"),
        ("--lr", float, "Adam learning rate (1e-3)"),
        ("--temperature", float, "softmax temperature tau (0.07)"),
        ("--balance", float, "lambda, weight of the diversity term (1.0)"),
        ("--batch-size", int, "rows per iteration; default all rows (ImageNet: 100000)"),
        ("--init-ids", Path, "JSON list of K initial centroid sample ids"),
    ],
    "bilaf": [
        ("--cores", Path, "JSON list of core sample ids, in order; else ActiveFT picks them"),
        ("--n-cores", int, "number of ActiveFT cores when --cores is absent"),
        ("--mode", str, "'paper' (default: the paper's text) or 'reference' (official code)"),
        ("--k", int, "neighbours in the density score (10)"),
        ("--p-in", float, "denoising growth step, fraction of the cluster (0.1)"),
        ("--p-rm", float, "fraction of each cluster removed as noise (0.1; ImageNet 0.2)"),
        ("--delta", float, "opponent penalty factor (1.1)"),
        ("--normalize", bool, "L2-normalise features first (the paper's text)"),
    ],
}
JSON_LIST_OPTIONS = {"cores", "init_ids"}


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the problem and where the help is, no usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def count(minimum: int) -> Any:
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= {minimum}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def named_paths(items: list[str], flag: str) -> dict[str, Path]:
    """``NAME=PATH`` items as {name: path}; InputError on a malformed item or a repeated name."""
    named: dict[str, Path] = {}
    for item in items:
        name, eq, path = item.partition("=")
        if not (name and eq and path) or name in named:
            raise InputError(f"{flag} {item!r}: expected NAME=PATH with a new NAME")
        named[name] = Path(path)
    return named


def _paths(args: argparse.Namespace, names: list[str]) -> list[Path]:
    """The paths the arguments ``names`` hold (unset ones skipped, lists flattened)."""
    found = []
    for name in names:
        value = getattr(args, name, None)
        if name == "selection" and isinstance(value, list):  # map: NAME=PATH items
            value = list(named_paths(value, "--selection").values())
        found += [Path(v) for v in (value if isinstance(value, list) else [value]) if v]
    return found


def check_paths(args: argparse.Namespace) -> None:
    """Before any work: no output touches an input, and each output file or store that exists
    already is an earlier output of this command (OutputError naming it otherwise)."""
    outputs: dict[str, Ownership | None] = getattr(args, "outputs", {})
    check_outputs_apart(_paths(args, list(outputs)), _paths(args, getattr(args, "inputs", [])))
    for name, ours in outputs.items():
        for path in _paths(args, [name]) if ours else []:
            check_replaceable(path, ours)


def read_selection(path: Path, n: int) -> Any:
    """A selection file's pool indices (int64; repeats allowed), checked against a pool of n."""
    from bilaf.selection.base import check_ids

    return check_ids(read_json(path), n, f"selection {path}", unique=False)


def _add_select(sub: argparse._SubParsersAction, argv: list[str]) -> None:
    """The `select` subcommand; the parser of each method named in ``argv`` (all for --help)."""
    select = sub.add_parser("select", help="select a budget of pool samples with one method")
    select.set_defaults(
        func=cmd_select,
        inputs=["features", "cores", "init_ids"],
        outputs={"out": has_manifest},
    )
    if "select" not in argv:
        return
    from bilaf.selection import METHOD_MODULES, get_method

    after = argv[argv.index("select") + 1 : argv.index("select") + 2]
    named = [name for name in after if name in METHOD_MODULES]
    methods = select.add_subparsers(dest="method", required=True, metavar="METHOD")
    for name in named or sorted(METHOD_MODULES):  # importing a method's module may load torch
        doc = (get_method(name).__doc__ or "").strip().splitlines()
        p = methods.add_parser(name, help=doc[0] if doc else name)
        p.add_argument("--features", required=True, help=".npy file or zarr store (n, d)")
        p.add_argument("--budget", type=int, required=True, help="number of samples to pick")
        p.add_argument("--seed", type=count(0), default=0)
        p.add_argument("--out", type=Path, required=True, help="JSON list of indices to write")
        p.add_argument("--device", default=None, help="torch device; default cuda if available")
        p.add_argument("--threads", type=count(1), default=None, help="torch CPU threads")
        for flag, kind, text in SELECT_OPTIONS.get(name, []):
            if kind is bool:
                p.add_argument(flag, action="store_true", default=None, help=text)
            else:
                p.add_argument(flag, type=kind, default=None, help=text)
        p.add_argument(
            "--option",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="any other method option (value parsed as JSON, else a string)",
        )


def _option_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def cmd_select(args: argparse.Namespace) -> None:
    from bilaf.selection import select

    named = [flag[2:].replace("-", "_") for flag, _, _ in SELECT_OPTIONS.get(args.method, [])]
    options = {key: getattr(args, key) for key in named if getattr(args, key) is not None}
    for key in JSON_LIST_OPTIONS & options.keys():
        options[key] = read_json(options[key])
    for item in args.option:
        key, eq, value = item.partition("=")
        if not (key and eq):
            raise InputError(f"--option {item!r}: expected KEY=VALUE, e.g. --option clusters=50")
        options[key.replace("-", "_")] = _option_value(value)
    if args.device and args.method != "random":
        options["device"] = args.device
    if "torch" in sys.modules:  # the method's module loaded it; numpy-only methods skip it
        _set_threads(args.threads)
    picked = select(args.method, args.features, args.budget, args.seed, **options)
    inputs = {"features": args.features}
    inputs.update(
        {key: getattr(args, key) for key in JSON_LIST_OPTIONS if getattr(args, key, None)}
    )
    rerun_options = {k: v for k, v in options.items() if k != "device"}
    write_with_manifest(
        args.out,
        [int(i) for i in picked],
        inputs,
        rerun_options,
        args.seed,
        _device_used(args.device),
        rerun={
            "method": args.method,
            "budget": args.budget,
            "seed": args.seed,
            "options": rerun_options,
        },
    )


def _device_used(requested: str | None) -> str:
    """The device a command ran on: as requested, else CUDA if torch was loaded and sees one."""
    torch = sys.modules.get("torch")
    return requested or ("cuda" if torch is not None and torch.cuda.is_available() else "cpu")


def cmd_download(args: argparse.Namespace) -> None:
    from bilaf.data import get_source

    source = get_source(args.source)
    urls = [] if args.no_url else args.url or list(source.urls)
    source.fetch(args.out, urls, args.local_dir or source.local_dir, args.timeout)


def cmd_extract(args: argparse.Namespace) -> None:
    from bilaf.backbones import build_backbone, resolve_preprocess
    from bilaf.data import get_source, subset_indices, write_samples
    from bilaf.features import extract_to_zarr

    _set_threads(args.threads)
    folders = {"train": args.train_dir, "test": args.test_dir}
    images = get_source(args.source).load(args.split, args.raw, folders)
    rows = subset_indices(len(images), args.subset_size, args.subset_seed)
    images = images.take(rows)
    prep = resolve_preprocess(
        args.backbone, args.image_size, args.interpolation, args.mean, args.std, args.crop_pct
    )
    attrs = {
        "dataset": args.dataset,
        "source": args.source,
        "split": args.split,
        "backbone": args.backbone,
        "weights": args.weights,
        "subset_size": args.subset_size,
        "subset_seed": args.subset_seed,
        "classes": list(images.classes),
        "samples_sha256": images.digest(),
    }
    extract_to_zarr(
        args.out,
        images,
        rows,
        build_backbone(args.backbone, args.weights),
        prep,
        attrs,
        args.batch_size,
        args.chunk_rows,
        args.workers,
        args.device,
    )
    write_samples(args.samples or args.out.with_suffix(".samples.csv"), images, rows)


def cmd_finetune(args: argparse.Namespace) -> None:
    import time

    import numpy as np

    from bilaf.features import open_features
    from bilaf.finetune import fit_knn, fit_linear, labeled_subset, save_model

    start = time.perf_counter()
    features, labels = open_features(args.features)
    x, y = labeled_subset(features, labels, read_selection(args.selection, labels.size))
    histogram = np.bincount(y, minlength=args.n_classes)
    missing = np.flatnonzero(histogram == 0).tolist()
    if missing:
        print(
            f"warning: classes {missing} have no labeled sample in {args.selection}",
            file=sys.stderr,
        )
    if args.mode == "linear":
        _set_threads(args.threads)
        model = fit_linear(x, y, args.n_classes, args.c, args.max_iter)
        recipe = {
            "optimizer": "lbfgs",
            "effective_batch_size": int(y.size),
            "lr": None,
            "c": args.c,
            "max_iter": args.max_iter,
        }
    else:
        model = fit_knn(x, y, args.knn_k, args.knn_temperature)
        recipe = {"k": args.knn_k, "temperature": args.knn_temperature, "similarity": "cosine"}
    save_model(
        args.out,
        model,
        {
            "finetune_mode": args.mode,
            **recipe,
            "n_classes": args.n_classes,
            "device": "cpu",
            "n_labeled": int(y.size),
            "labeled_class_histogram": histogram.tolist(),
            "classes_missing_from_labeled": missing,
            "train_seconds": round(time.perf_counter() - start, 3),
        },
    )


def cmd_finetune_full(args: argparse.Namespace) -> None:
    import hashlib

    import numpy as np

    from bilaf.backbones import Preprocess
    from bilaf.data import get_source
    from bilaf.features import pick_device
    from bilaf.finetune import labeled_subset, save_model
    from bilaf.finetune_full import DecodedImages, Recipe, build_classifier, train_full

    _set_threads(args.threads)
    pool, test = (open_store(p) for p in (args.features, args.test_features))
    pool_labels = pool["labels"][:]
    selection = read_selection(args.selection, pool_labels.size)
    _, y = labeled_subset(np.zeros((pool_labels.size, 1)), pool_labels, selection)
    prep = Preprocess(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in pool.attrs["preprocess"].items()}
    )
    source, folders = get_source(args.source), {"train": args.train_dir, "test": args.test_dir}

    def images(split: str, rows: np.ndarray) -> Any:
        table = source.load(split, args.raw, folders).take(rows)
        return table.pixels if table.pixels is not None else DecodedImages(table, prep)

    test_rows = test["source_index"][:]
    test_labels = test["labels"][:]
    recipe = Recipe(
        epochs=args.epochs,
        total_batch=args.total_batch,
        base_lr=args.base_lr,
        warmup_epochs=args.warmup_epochs,
        eval_every=args.eval_every,
        label_smoothing=args.label_smoothing,
        drop_path=args.drop_path,
        seed=args.seed,
    )
    # The checkpoint belongs to exactly this (architecture, recipe, selection): a changed
    # selection or recipe starts afresh instead of resuming someone else's training.
    key = json.dumps([args.backbone, args.weights, vars(recipe), selection.tolist()])
    checkpoint = args.checkpoint_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
    device = pick_device(args.device)
    model = build_classifier(args.backbone, args.weights, args.n_classes, recipe.drop_path)
    out = train_full(
        model,
        args.backbone,
        images("train", pool["source_index"][:][selection]),
        y,
        images("test", test_rows),
        test_labels,
        recipe,
        prep,
        checkpoint,
        device,
    )
    histogram = np.bincount(y, minlength=args.n_classes)
    meta = {k: v for k, v in out.items() if k != "test_logits"}
    save_model(
        args.out,
        {"mode": np.array("full"), "test_logits": out["test_logits"]},
        {
            "finetune_mode": "full",
            **meta,
            "table_uses": "last_top1",
            "checkpoint": str(checkpoint),
            "n_classes": args.n_classes,
            "n_labeled": int(y.size),
            "labeled_class_histogram": histogram.tolist(),
            "classes_missing_from_labeled": np.flatnonzero(histogram == 0).tolist(),
        },
    )


def cmd_evaluate(args: argparse.Namespace) -> None:
    from bilaf.evaluate import classification_metrics
    from bilaf.features import open_features
    from bilaf.finetune import load_model, predict_logits

    model, meta = load_model(args.model)
    features, labels = open_features(args.features)
    logits = predict_logits(model, features[:], meta["n_classes"])
    run = dict(item.split("=", 1) for item in args.run)
    metrics = {
        **run,
        "budget": int(run["budget"]),
        "seed": int(run["seed"]),
        **classification_metrics(logits, labels),
        **meta,
    }
    inputs = {"model": args.model, "features": args.features}
    write_with_manifest(args.out, metrics, inputs, run, int(run["seed"]), meta.get("device", "cpu"))


def cmd_audit(args: argparse.Namespace) -> None:
    from bilaf.audit import audit

    problems = audit(args.root, args.rerun, args.seed)
    for problem in problems:
        print(f"FAIL {problem}")
    if problems:
        raise AuditFailed(f"{len(problems)} problem(s) under {args.root}")
    print(f"audit of {args.root}: every manifest matches its files; reruns agree")


class AuditFailed(BilafError):
    """The audit found differences (listed on stdout)."""


def cmd_report(args: argparse.Namespace) -> None:
    from bilaf.report import write_report

    written = write_report(
        args.metrics, args.tables_dir, args.plots_dir, args.method_order, args.title
    )
    print("\n".join(map(str, written)))


def cmd_map(args: argparse.Namespace) -> None:
    from bilaf.features import open_features
    from bilaf.pool_map import plot_pool_map

    selections = {
        name: read_json(path) for name, path in named_paths(args.selection, "--selection").items()
    }
    cores = read_json(args.cores) if args.cores else None
    features, labels = open_features(args.features)
    written = plot_pool_map(features, labels, selections, cores, args.out, args.title)
    print("\n".join(map(str, written)))


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def build_parser(argv: list[str] = ("select",)) -> argparse.ArgumentParser:
    """The CLI; of `select`, only the parsers of the methods ``argv`` names (all when none)."""
    from bilaf.finetune_full import Recipe

    parser = Parser(prog="bilaf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("download", help="fetch and verify a dataset's official files")
    p.add_argument("--source", required=True, help="dataset registry entry (bilaf.data)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--url", action="append", default=[], help="base URL; default the official")
    p.add_argument("--no-url", action="store_true", help="skip URLs: the local copy only")
    p.add_argument("--local-dir", default=None, help="folder with a copy of the official files")
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(func=cmd_download, outputs={"out": None})

    p = sub.add_parser("extract", help="backbone features of one split into a zarr store")
    p.add_argument("--source", required=True, help="dataset registry entry (bilaf.data)")
    p.add_argument("--raw", type=Path, default=None, help="folder of the downloaded files")
    p.add_argument("--train-dir", default=None, help="folder sources: the train ImageFolder")
    p.add_argument("--test-dir", default=None, help="folder sources: the test ImageFolder")
    p.add_argument("--dataset", required=True, help="dataset name recorded in the attrs")
    p.add_argument("--split", choices=["train", "test"], required=True)
    p.add_argument("--subset-size", type=count(1), default=None, help="seeded subset; default all")
    p.add_argument("--subset-seed", type=count(0), default=0)
    p.add_argument("--backbone", required=True, help="timm model name")
    p.add_argument(
        "--weights", default="hub", help="hub, random, efficientnet_lite0_package or a path"
    )
    p.add_argument("--image-size", type=count(1), default=None, help="default: the model's")
    p.add_argument("--interpolation", default=None, help="default: the model's")
    p.add_argument("--mean", type=float, nargs=3, default=None, help="default: the model's")
    p.add_argument("--std", type=float, nargs=3, default=None, help="default: the model's")
    p.add_argument("--crop-pct", type=float, default=1.0, help="centre crop (1 = whole image)")
    p.add_argument("--batch-size", type=count(1), default=128)
    p.add_argument("--chunk-rows", type=count(1), default=2048)
    p.add_argument("--workers", type=count(0), default=0, help="DataLoader worker processes")
    p.add_argument("--device", default=None, help="torch device; default cuda if available")
    p.add_argument("--threads", type=count(1), default=None)
    p.add_argument("--out", type=Path, required=True, help="the zarr store to write")
    p.add_argument("--samples", type=Path, default=None, help="default: <out>.samples.csv")
    p.set_defaults(
        func=cmd_extract,
        inputs=["raw", "train_dir", "test_dir"],
        outputs={"out": is_feature_store, "samples": is_samples_file},
    )

    _add_select(sub, list(argv))

    p = sub.add_parser("finetune", help="train a probe on the selected samples' features")
    p.add_argument("--features", type=Path, required=True, help="pool feature store")
    p.add_argument("--selection", type=Path, required=True, help="JSON list of pool indices")
    p.add_argument("--mode", choices=["linear", "knn"], default="linear")
    p.add_argument("--n-classes", type=count(2), required=True)
    p.add_argument("--c", type=float, default=1.0, help="linear: inverse L2 strength (sklearn C)")
    p.add_argument("--max-iter", type=count(1), default=100, help="linear: L-BFGS iterations")
    p.add_argument("--knn-k", type=count(1), default=20, help="knn: neighbours")
    p.add_argument("--knn-temperature", type=float, default=0.07, help="knn: vote temperature")
    p.add_argument("--threads", type=count(1), default=None)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(
        func=cmd_finetune, inputs=["features", "selection"], outputs={"out": is_model_file}
    )

    p = sub.add_parser("finetune-full", help="finetune the whole backbone (paper recipe)")
    p.add_argument("--source", required=True, help="dataset registry entry (bilaf.data)")
    p.add_argument("--raw", type=Path, default=None, help="folder of the downloaded files")
    p.add_argument("--train-dir", default=None, help="folder sources: the train ImageFolder")
    p.add_argument("--test-dir", default=None, help="folder sources: the test ImageFolder")
    p.add_argument("--features", type=Path, required=True, help="pool store (its row order)")
    p.add_argument("--test-features", type=Path, required=True, help="test store (its rows)")
    p.add_argument("--selection", type=Path, required=True)
    p.add_argument("--backbone", required=True)
    p.add_argument("--weights", default=None)
    p.add_argument("--n-classes", type=count(2), required=True)
    for flag, kind in (
        ("--epochs", int),
        ("--total-batch", int),
        ("--base-lr", float),
        ("--warmup-epochs", int),
        ("--eval-every", int),
        ("--label-smoothing", float),
        ("--drop-path", float),
        ("--seed", count(0)),
    ):
        default = getattr(Recipe(), flag[2:].replace("-", "_"))
        p.add_argument(flag, type=kind, default=default, help=f"default {default}")
    p.add_argument("--checkpoint-dir", type=Path, required=True)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=count(1), default=None)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(
        func=cmd_finetune_full,
        inputs=["features", "test_features", "selection", "raw", "train_dir", "test_dir"],
        outputs={"out": is_model_file, "checkpoint_dir": None},
    )

    p = sub.add_parser("evaluate", help="top-1/top-5 of a finetuned model on the test store")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--features", type=Path, required=True, help="test feature store")
    p.add_argument(
        "--run",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="run keys recorded in the metrics (dataset, method, budget, seed)",
    )
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_evaluate, inputs=["model", "features"], outputs={"out": has_manifest})

    p = sub.add_parser("audit", help="verify manifests against files; rerun some selections")
    p.add_argument("root", type=Path, nargs="?", default=Path("results"))
    p.add_argument("--rerun", type=count(0), default=3, help="selections to rerun (seeded sample)")
    p.add_argument("--seed", type=count(0), default=0, help="seed of the rerun sample")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("report", help="paper-style tables (CSV, Markdown) and plots (PNG, SVG)")
    p.add_argument("--metrics", nargs="+", required=True, help="metrics JSON files of the runs")
    p.add_argument("--tables-dir", type=Path, required=True, help="folder for the tables")
    p.add_argument("--plots-dir", type=Path, required=True, help="folder for the plots")
    p.add_argument("--method-order", nargs="*", default=None, help="row / legend order")
    p.add_argument("--title", default="", help="headline of every table and plot")
    p.set_defaults(
        func=cmd_report, inputs=["metrics"], outputs={"tables_dir": None, "plots_dir": None}
    )

    p = sub.add_parser("map", help="2-D PCA map of the pool with each method's picks")
    p.add_argument("--features", type=Path, required=True, help="pool feature store (zarr)")
    p.add_argument(
        "--selection",
        nargs="+",
        required=True,
        metavar="NAME=PATH",
        help="a method's picks: JSON list of pool indices; one panel each",
    )
    p.add_argument("--cores", type=Path, default=None, help="JSON list of BiLAF core ids")
    p.add_argument("--title", required=True, help="headline of the figure")
    p.add_argument("--out", type=Path, nargs="+", required=True, help=".png and/or .svg files")
    p.set_defaults(
        func=cmd_map, inputs=["features", "selection", "cores"], outputs={"out": is_plain_file}
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        check_paths(args)
        args.func(args)
    except BilafError as err:  # bad input: one line; anything else is a bug and keeps its trace
        print(f"bilaf {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
