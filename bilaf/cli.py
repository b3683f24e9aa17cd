"""``bilaf`` command line: one thin subcommand per pipeline stage (what the Snakemake rules call).

Heavy imports (torch, timm, zarr) happen inside each subcommand, so a light stage starts fast.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
from pathlib import Path
from typing import Any

from bilaf.audit import has_manifest, write_with_manifest
from bilaf.data import DOWNLOAD_TIMEOUT, is_samples_file
from bilaf.devices import device_used, set_threads
from bilaf.errors import BilafError, InputError
from bilaf.finetune import PROBE_MODES, PROBE_OPTIONS, is_model_file
from bilaf.io import (
    Ownership,
    check_outputs_apart,
    check_replaceable,
    is_plain_file,
    read_json,
)
from bilaf.scan import is_pool_table, is_skipped_table
from bilaf.store import is_feature_store

# Method-specific options of `bilaf select`: (flag, type, help). Defaults live in the functions.
SELECT_OPTIONS: dict[str, list[tuple[str, Any, str]]] = {
    "activeft": [
        ("--iters", int, "optimisation steps (SPEC §2; ImageNet: 100)"),
        ("--lr", float, "Adam learning rate"),
        ("--temperature", float, "softmax temperature tau"),
        ("--balance", float, "lambda, weight of the diversity term"),
        ("--batch-size", int, "rows per iteration; unset: all rows (ImageNet: 100000)"),
        ("--init-ids", Path, "JSON list of K initial centroid sample ids"),
    ],
    "bilaf": [
        ("--cores", Path, "JSON list of core sample ids, in order; else ActiveFT picks them"),
        ("--n-cores", int, "number of cores to pick when --cores is absent"),
        ("--core-method", str, "how --n-cores are picked: activeft, kmeans, fds or random"),
        ("--mode", str, "'paper' (the paper's text) or 'reference' (the official code)"),
        ("--k", int, "neighbours in the density score"),
        ("--p-in", float, "denoising growth step, fraction of the cluster"),
        ("--p-rm", float, "fraction of each cluster removed as noise (ImageNet: 0.2)"),
        ("--delta", float, "opponent penalty factor"),
        ("--normalize", bool, "L2-normalise features first (the paper's text)"),
    ],
}
JSON_LIST_OPTIONS = {"cores", "init_ids", "labeled"}


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


# `bilaf finetune-full` flags of the bilaf.finetune_full.Recipe fields: (flag, type, help).
RECIPE_OPTIONS: list[tuple[str, Any, str]] = [
    ("--epochs", int, "training epochs"),
    ("--total-batch", int, "batch over all processes; the lr scales with it"),
    ("--base-lr", float, "SGD learning rate before the batch scaling (SPEC §5)"),
    ("--warmup-epochs", int, "epochs of linear lr warm-up before the cosine decay"),
    ("--eval-every", int, "test top-1 every this many epochs (recorded in the history)"),
    ("--label-smoothing", float, "cross-entropy label smoothing"),
    ("--drop-path", float, "stochastic depth rate of the backbone"),
    ("--seed", count(0), "seed of the data order, augmentation and drop-path"),
]


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


def _add_select(sub: argparse._SubParsersAction, argv: list[str]) -> None:
    """The `select` subcommand; the parser of each method named in ``argv`` (all for --help)."""
    parser = sub.add_parser("select", help="select a budget of pool samples with one method")
    parser.set_defaults(
        func=cmd_select,
        inputs=["features", "cores", "init_ids", "labeled"],
        outputs={"out": has_manifest, "scores_out": has_manifest},
    )
    if "select" not in argv:
        return
    from bilaf.selection import METHOD_MODULES, get_method, select

    after = argv[argv.index("select") + 1 : argv.index("select") + 2]
    named = [name for name in after if name in METHOD_MODULES]
    methods = parser.add_subparsers(dest="method", required=True, metavar="METHOD")
    for name in named or sorted(METHOD_MODULES):  # importing a method's module may load torch
        doc = (get_method(name).__doc__ or "").strip().splitlines()
        p = methods.add_parser(name, help=doc[0] if doc else name)
        p.add_argument("--features", required=True, help=".npy file or zarr store (n, d)")
        p.add_argument("--budget", type=int, required=True, help="number of samples to pick")
        p.add_argument("--seed", type=count(0), default=signature_default(select, "seed"))
        p.add_argument("--out", type=Path, required=True, help="JSON list of indices to write")
        p.add_argument(
            "--scores-out",
            type=Path,
            default=argparse.SUPPRESS,
            help="JSON list of each pick's score (BiLAF: its boundary score; null: none)",
        )
        p.add_argument("--device", default=None, help="torch device; default cuda if available")
        p.add_argument("--threads", type=count(1), default=None, help="torch CPU threads")
        p.add_argument(
            "--labeled",
            type=Path,
            default=argparse.SUPPRESS,
            help="JSON list of pool ids already labeled: never picked, the budget is new picks",
        )
        for flag, kind, text in SELECT_OPTIONS.get(name, []):
            kind_args = {"action": "store_true"} if kind is bool else {"type": kind}
            add_defaulted(p, flag, get_method(name), text, **kind_args)
        p.add_argument(
            "--option",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="any other method option (value parsed as JSON, else a string)",
        )


def read_ids(path: Path) -> Any:
    """Sample ids from a JSON list, or the rows of a labels table (``bilaf labels``' output)."""
    from bilaf.labels import is_pool_labels, read_pool_labels

    return read_pool_labels(path)[0].tolist() if is_pool_labels(path) else read_json(path)


def run_keys(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` run keys; a value that reads as JSON (a budget, a seed) as that."""
    return {key: _option_value(value) for key, _, value in (i.partition("=") for i in items)}


def _option_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def cmd_select(args: argparse.Namespace) -> None:
    from bilaf.selection import get_method, select

    named = [_dest(flag) for flag, _, _ in SELECT_OPTIONS.get(args.method, [])] + ["labeled"]
    options = {key: getattr(args, key) for key in named if hasattr(args, key)}
    for key in JSON_LIST_OPTIONS & options.keys():
        options[key] = read_ids(options[key])
    for item in args.option:
        key, eq, value = item.partition("=")
        if not (key and eq):
            raise InputError(f"--option {item!r}: expected KEY=VALUE, e.g. --option clusters=50")
        options[key.replace("-", "_")] = _option_value(value)
    if args.device and "device" in inspect.signature(get_method(args.method)).parameters:
        options["device"] = args.device
    if "torch" in sys.modules:  # the method's module loaded it; numpy-only methods skip it
        set_threads(args.threads)
    scores_out = getattr(args, "scores_out", None)
    picked, scores = select(
        args.method, args.features, args.budget, args.seed, with_scores=True, **options
    )
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
        device_used(options.get("device")),
        rerun={
            "method": args.method,
            "budget": args.budget,
            "seed": args.seed,
            "options": rerun_options,
        },
    )
    if scores_out:  # NaN (a core, or a method without scores) as null
        values = [None if math.isnan(v) else float(v) for v in scores]
        write_with_manifest(
            scores_out, values, inputs, rerun_options, args.seed, device_used(options.get("device"))
        )


def cmd_download(args: argparse.Namespace) -> None:
    from bilaf.data import get_source

    source = get_source(args.source)
    urls = [] if args.no_url else args.url or list(source.urls)
    source.fetch(args.out, urls, args.local_dir or source.local_dir, args.timeout)


def cmd_scan(args: argparse.Namespace) -> None:
    from bilaf.scan import scan_pool, write_scan

    _, images, skipped = _call(scan_pool, args)
    write_scan(args.out, args.skipped, images, skipped)
    print(f"[scan] {len(images)} images in the pool, {len(skipped)} files skipped", file=sys.stderr)


def cmd_export(args: argparse.Namespace) -> None:
    from bilaf.export import export

    written = _call(export, args, run=run_keys(args.run))
    print("\n".join(map(str, written.values())))


def cmd_labels(args: argparse.Namespace) -> None:
    from bilaf.labels import label_pool, write_pool_labels

    table = _call(label_pool, args)
    write_pool_labels(args.out, table)
    print(
        f"[labels] {len(table)} pool images labeled, {table['label'].nunique()} classes",
        file=sys.stderr,
    )


def cmd_predict(args: argparse.Namespace) -> None:
    from bilaf.labels import predict, write_predictions

    set_threads(args.threads)
    probe = {key: getattr(args, key) for key in PROBE_OPTIONS if hasattr(args, key)}
    predictions, metrics, names = _call(predict, args, **probe)
    metrics = {**run_keys(args.run), **metrics}
    write_predictions(args.out, predictions, names, args.root)
    keys = ("features", "samples", "selection", "labels", "labeled")
    inputs = {key: getattr(args, key) for key in keys if getattr(args, key)}
    write_with_manifest(args.metrics, metrics, inputs, {"mode": args.mode}, args.seed, "cpu")
    print(f"[predict] {metrics['note']}: {metrics['crossval_top1']:.1f} %", file=sys.stderr)


def cmd_extract(args: argparse.Namespace) -> None:
    from bilaf.features import extract

    set_threads(args.threads)
    _call(extract, args, folders=_folders(args))


def cmd_finetune(args: argparse.Namespace) -> None:
    from bilaf.finetune import finetune, save_model

    save_model(args.out, *_call(finetune, args))


def cmd_finetune_full(args: argparse.Namespace) -> None:
    from bilaf.finetune import save_model
    from bilaf.finetune_full import Recipe, finetune_full

    set_threads(args.threads)
    given = [_dest(flag) for flag, _, _ in RECIPE_OPTIONS if hasattr(args, _dest(flag))]
    recipe = Recipe(**{name: getattr(args, name) for name in given})
    save_model(args.out, *_call(finetune_full, args, recipe=recipe, folders=_folders(args)))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from bilaf.evaluate import evaluate

    scores = evaluate(args.model, args.features)
    run = dict(item.split("=", 1) for item in args.run)
    metrics = {**run, "budget": int(run["budget"]), "seed": int(run["seed"]), **scores}
    inputs = {"model": args.model, "features": args.features}
    device = scores.get("device", "cpu")
    write_with_manifest(args.out, metrics, inputs, run, int(run["seed"]), device)


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

    written = _call(write_report, args)
    print("\n".join(map(str, written)))


def cmd_pick_report(args: argparse.Namespace) -> None:
    from bilaf.report import write_pick_report

    print("\n".join(map(str, write_pick_report(args.stats, args.predictions, *args.out))))


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


def _call(fn: Any, args: argparse.Namespace, **given: Any) -> Any:
    """``fn(**given)`` plus, for each other parameter of ``fn``, the argument of that name."""
    named = [p for p in inspect.signature(fn).parameters if p not in given and hasattr(args, p)]
    return fn(**given, **{name: getattr(args, name) for name in named})


def _add_pool_run(p: argparse.ArgumentParser) -> None:
    """The inputs of a stage on one run of an unlabeled pool: its store, rows and selection,
    and the run's keys to record (method, budget, seed)."""
    p.add_argument("--features", type=Path, required=True, help="pool feature store")
    p.add_argument("--samples", type=Path, required=True, help="the pool store's samples CSV")
    p.add_argument("--selection", type=Path, required=True, help="JSON list of pool indices")
    p.add_argument("--run", nargs="+", default=[], metavar="KEY=VALUE", help="run keys recorded")


def _add_images(p: argparse.ArgumentParser) -> None:
    """The flags that say where a dataset's images are (see :func:`_folders`)."""
    p.add_argument("--source", required=True, help="dataset registry entry (bilaf.data)")
    p.add_argument("--raw", type=Path, default=None, help="folder of the downloaded files")
    p.add_argument("--train-dir", default=None, help="folder sources: the train ImageFolder")
    p.add_argument("--test-dir", default=None, help="folder sources: the test ImageFolder")


def _folders(args: argparse.Namespace) -> dict[str, str | None]:
    """The ImageFolder of each split (folder sources; the others read ``--raw``)."""
    return {"train": args.train_dir, "test": args.test_dir}


def _dest(flag: str) -> str:
    """The argparse attribute of ``flag``: ``--base-lr`` -> ``base_lr``."""
    return flag[2:].replace("-", "_")


def signature_default(fn: Any, name: str) -> Any:
    """The default of parameter ``name`` of ``fn``: where each default is declared."""
    return inspect.signature(fn).parameters[name].default


def add_defaulted(p: argparse.ArgumentParser, flag: str, fn: Any, text: str, **kw: Any) -> None:
    """``flag`` for the parameter of ``fn`` it names: unset, it is left out of the call, so the
    default is the one in ``fn``'s signature (shown in the help, never repeated here)."""
    default = signature_default(fn, _dest(flag))
    shown = "" if default in (None, inspect.Parameter.empty) else f" (default: {default})"
    p.add_argument(flag, default=argparse.SUPPRESS, help=text + shown, **kw)


def add_probe_options(p: argparse.ArgumentParser, finetune: Any) -> None:
    """The probes' flags (bilaf.finetune.PROBE_OPTIONS), defaults from ``finetune``."""
    add_defaulted(p, "--c", finetune, "linear: inverse L2 strength (sklearn C)", type=float)
    add_defaulted(p, "--max-iter", finetune, "linear: L-BFGS iterations", type=count(1))
    add_defaulted(p, "--knn-k", finetune, "knn: neighbours", type=count(1))
    add_defaulted(p, "--knn-temperature", finetune, "knn: vote temperature", type=float)


def build_parser(argv: list[str] = ("select",)) -> argparse.ArgumentParser:
    """The CLI; of `select`, only the parsers of the methods ``argv`` names (all when none)."""
    from bilaf.audit import audit
    from bilaf.export import METHOD_KINDS, export, is_export_dir
    from bilaf.features import extract
    from bilaf.finetune import finetune
    from bilaf.finetune_full import Recipe
    from bilaf.labels import is_pool_labels, label_pool, predict
    from bilaf.report import METRICS, write_report
    from bilaf.scan import BAD_IMAGE_ACTIONS as BAD
    from bilaf.scan import scan_pool

    parser = Parser(prog="bilaf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("download", help="fetch and verify a dataset's official files")
    p.add_argument("--source", required=True, help="dataset registry entry (bilaf.data)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--url", action="append", default=[], help="base URL; default the official")
    p.add_argument("--no-url", action="store_true", help="skip URLs: the local copy only")
    p.add_argument("--local-dir", default=None, help="folder with a copy of the official files")
    p.add_argument("--timeout", type=float, default=DOWNLOAD_TIMEOUT, help="seconds per URL")
    p.set_defaults(func=cmd_download, outputs={"out": None})

    p = sub.add_parser("scan", help="list an unlabeled pool's readable, distinct images")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--pool-dir", type=Path, help="a folder tree of images")
    where.add_argument("--pool-list", type=Path, help="a file of image paths (text or CSV)")
    add_defaulted(p, "--on-bad-image", scan_pool, "a bad file: skip it, or fail", choices=BAD)
    add_defaulted(p, "--workers", scan_pool, "threads reading files", type=count(1))
    add_defaulted(p, "--min-images", scan_pool, "the largest budget", type=count(1))
    p.add_argument("--out", type=Path, required=True, help="CSV of the pool's images")
    p.add_argument("--skipped", type=Path, required=True, help="CSV of the files left out")
    p.set_defaults(
        func=cmd_scan,
        inputs=["pool_dir", "pool_list"],
        outputs={"out": is_pool_table, "skipped": is_skipped_table},
    )

    p = sub.add_parser("extract", help="backbone features of one split into a zarr store")
    _add_images(p)
    p.add_argument("--dataset", required=True, help="dataset name recorded in the attrs")
    p.add_argument("--split", choices=["train", "test"], required=True)
    p.add_argument("--subset-size", type=count(1), default=None, help="seeded subset; default all")
    add_defaulted(p, "--subset-seed", extract, "seed of the subset", type=count(0))
    p.add_argument("--backbone", required=True, help="timm model name")
    add_defaulted(p, "--weights", extract, "hub, random, efficientnet_lite0_package or a path")
    p.add_argument("--image-size", type=count(1), default=None, help="default: the model's")
    p.add_argument("--interpolation", default=None, help="default: the model's")
    p.add_argument("--mean", type=float, nargs=3, default=None, help="default: the model's")
    p.add_argument("--std", type=float, nargs=3, default=None, help="default: the model's")
    add_defaulted(p, "--crop-pct", extract, "centre crop (1 = whole image)", type=float)
    add_defaulted(p, "--batch-size", extract, "images per forward pass", type=count(1))
    add_defaulted(p, "--chunk-rows", extract, "rows per zarr chunk", type=count(1))
    add_defaulted(p, "--workers", extract, "DataLoader worker processes", type=count(0))
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

    p = sub.add_parser("export", help="an unlabeled pool's picks for annotation; contact sheet")
    _add_pool_run(p)
    p.add_argument("--cores", type=Path, required=True, help="JSON list: the pseudo-classes")
    p.add_argument("--kind", choices=METHOD_KINDS, required=True, help="roles of the picks")
    p.add_argument("--scores", type=Path, default=None, help="JSON list: each pick's score")
    add_defaulted(p, "--url-prefix", export, "before each path in labelstudio.json")
    add_defaulted(p, "--tile", export, "contact sheet thumbnail side (pixels)", type=count(16))
    add_defaulted(p, "--title", export, "headline of the contact sheet")
    add_defaulted(p, "--workers", export, "threads decoding thumbnails", type=count(1))
    p.add_argument("--out-dir", type=Path, required=True, help="folder of the export files")
    p.set_defaults(
        func=cmd_export,
        inputs=["features", "samples", "selection", "cores", "scores"],
        outputs={"out_dir": is_export_dir},
    )

    p = sub.add_parser("labels", help="an unlabeled pool's labels file, checked, by pool row")
    p.add_argument("--labels", type=Path, required=True, help="CSV path,label or Label Studio")
    p.add_argument("--samples", type=Path, required=True, help="the pool store's samples CSV")
    p.add_argument("--root", type=Path, required=True, help="the folder the pool's names are in")
    add_defaulted(p, "--url-prefix", label_pool, "stripped from Label Studio image URLs")
    p.add_argument("--label-column", default=None, help="default: label, choice or class")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_labels, inputs=["labels", "samples"], outputs={"out": is_pool_labels})

    p = sub.add_parser("predict", help="a probe on a selection's labeled picks labels the rest")
    _add_pool_run(p)
    p.add_argument("--labels", type=Path, required=True, help="bilaf labels' table")
    p.add_argument("--labeled", type=Path, default=None, help="labeled before: train on them too")
    p.add_argument("--root", type=Path, required=True, help="the folder the pool's names are in")
    add_defaulted(p, "--mode", predict, "the probe", choices=PROBE_MODES)
    add_defaulted(p, "--seed", predict, "seed of the cross-validation folds", type=count(0))
    add_probe_options(p, finetune)
    p.add_argument("--threads", type=count(1), default=None)
    p.add_argument("--out", type=Path, required=True, help="predictions CSV")
    p.add_argument("--metrics", type=Path, required=True, help="cross-validation JSON")
    p.set_defaults(
        func=cmd_predict,
        inputs=["features", "samples", "selection", "labels", "labeled"],
        outputs={"out": is_plain_file, "metrics": has_manifest},
    )

    p = sub.add_parser("finetune", help="train a probe on the selected samples' features")
    p.add_argument("--features", type=Path, required=True, help="pool feature store")
    p.add_argument("--selection", type=Path, required=True, help="JSON list of pool indices")
    add_defaulted(p, "--mode", finetune, "the probe", choices=PROBE_MODES)
    p.add_argument("--n-classes", type=count(2), required=True)
    add_probe_options(p, finetune)
    p.add_argument("--threads", type=count(1), default=None)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(
        func=cmd_finetune, inputs=["features", "selection"], outputs={"out": is_model_file}
    )

    p = sub.add_parser("finetune-full", help="finetune the whole backbone (paper recipe)")
    _add_images(p)
    p.add_argument("--features", type=Path, required=True, help="pool store (its row order)")
    p.add_argument("--test-features", type=Path, required=True, help="test store (its rows)")
    p.add_argument("--selection", type=Path, required=True)
    p.add_argument("--backbone", required=True)
    p.add_argument("--weights", default=None)
    p.add_argument("--n-classes", type=count(2), required=True)
    for flag, kind, text in RECIPE_OPTIONS:
        add_defaulted(p, flag, Recipe, text, type=kind)
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
    rerun, seed = (signature_default(audit, name) for name in ("rerun_sample", "seed"))
    p.add_argument("--rerun", type=count(0), default=rerun, help="selections to rerun (a sample)")
    p.add_argument("--seed", type=count(0), default=seed, help="seed of the rerun sample")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("report", help="paper-style tables (CSV, Markdown) and plots (PNG, SVG)")
    p.add_argument("--metrics", nargs="+", required=True, help="metrics JSON files of the runs")
    p.add_argument("--tables-dir", type=Path, required=True, help="folder for the tables")
    p.add_argument("--plots-dir", type=Path, required=True, help="folder for the plots")
    p.add_argument("--method-order", nargs="*", default=None, help="row / legend order")
    p.add_argument("--title", default="", help="headline of every table and plot")
    add_defaulted(p, "--metric", write_report, "the number shown", choices=list(METRICS))
    p.set_defaults(
        func=cmd_report, inputs=["metrics"], outputs={"tables_dir": None, "plots_dir": None}
    )

    p = sub.add_parser("pick-report", help="an unlabeled pool's runs side by side, no labels")
    p.add_argument("--stats", nargs="+", required=True, help="the exports' stats.json files")
    p.add_argument("--predictions", nargs="*", default=[], help="the probes' metrics JSON")
    p.add_argument("--out", type=Path, nargs=2, required=True, metavar=("CSV", "MD"))
    p.set_defaults(
        func=cmd_pick_report, inputs=["stats", "predictions"], outputs={"out": is_plain_file}
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
