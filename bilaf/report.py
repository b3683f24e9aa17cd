"""Collect per-run metrics into paper-style tables and plots.

Tables: method x budget, mean±std over seeds, one block per dataset x finetune mode (the paper's
Table 1 layout), plus a long one-row-per-run CSV. Plots: accuracy vs budget per dataset, and for
parameter sweeps (methods named ``base@k1=v1,k2=v2``) a heat-map per dataset (the paper's Fig. 4).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bilaf.audit import MANIFEST_SUFFIX
from bilaf.config import parse_method, point_label
from bilaf.errors import InputError
from bilaf.io import atomic_path, read_json

if TYPE_CHECKING:  # pandas loads when a table is made, not with the CLI's parser
    import pandas as pd

RUN_KEYS = ("dataset", "finetune_mode", "method", "budget", "seed")
CELL_KEYS = ["dataset", "finetune_mode", "method", "budget"]
# Scalar metrics-file keys copied to runs.csv when present (plus every ``*_seconds`` key).
SCALAR_KEYS = (
    "top1",
    "top5",
    "best_top1",
    "last_top1",
    "n_labeled",
    "n_test",
    "n_classes",
    "device",
)
SUMMARY_COLUMNS = ["mean", "std", "n_seeds", "best", "metric"]
# The number a table shows: metric -> (metrics-file key, what it is). A probe is evaluated once,
# so its best is its last; full finetuning evaluates every eval_every epochs.
METRICS = {
    "last": ("top1", "test top-1 % of the final model"),
    "best_test": (
        "best_top1",
        "best test top-1 % over the periodic evaluations (the paper's protocol: a choice made on "
        "the test set; a probe's one evaluation)",
    ),
}
ACCURACY_LABEL = "test top-1 accuracy (%)"


def collect(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run (every run, sweep points included): its keys and scalar metrics."""
    keep = (*RUN_KEYS, *SCALAR_KEYS)
    rows = []
    for path in paths:
        m = read_json(path)
        missing = [k for k in (*RUN_KEYS, "top1") if k not in m]
        if missing:
            raise InputError(f"metrics file {path} lacks {missing}")
        manifest = Path(f"{path}{MANIFEST_SUFFIX}")
        rows.append(
            {
                **{k: v for k, v in m.items() if k in keep or k.endswith("_seconds")},
                "metrics_file": str(path),
                "manifest": str(manifest) if manifest.exists() else None,
            }
        )
    if not rows:
        raise InputError("no metrics files to report on")
    import pandas as pd

    runs = pd.DataFrame(rows)
    seconds = sorted(c for c in runs.columns if c.endswith("_seconds"))
    columns = [c for c in keep if c in runs.columns] + seconds + ["metrics_file", "manifest"]
    return runs[columns].sort_values(list(RUN_KEYS), ignore_index=True)


def summarise(runs: pd.DataFrame, metric: str = "last") -> pd.DataFrame:
    """Mean, sample std (ddof=1; 0 for one seed), seed count and best-in-column flag per cell
    of the ``metric`` (:data:`METRICS`), named in the ``metric`` column.

    ``best``: the highest mean of its (dataset, finetune mode, budget) column; ties all count.
    """
    if metric not in METRICS:
        raise InputError(f"report metric {metric!r}: use one of {list(METRICS)}")
    key = METRICS[metric][0]
    value = runs[key].fillna(runs["top1"]) if key in runs else runs["top1"]
    grouped = runs.assign(value=value).groupby(CELL_KEYS, sort=True)["value"]
    table = grouped.agg(mean="mean", std="std", n_seeds="count").reset_index()
    table["std"] = table["std"].fillna(0.0)
    column_max = table.groupby(["dataset", "finetune_mode", "budget"])["mean"].transform("max")
    table["best"] = table["mean"] == column_max
    table["metric"] = metric
    return table


def split_sweep(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(main runs, sweep runs); sweep methods renamed canonically (``1.20`` and ``1.2`` agree)."""
    parsed = {name: parse_method(name) for name in runs["method"].unique()}
    canonical = {
        name: f"{base}@" + ",".join(f"{k}={v}" for k, v in params.items())
        for name, (base, params) in parsed.items()
        if params
    }
    is_sweep = runs["method"].isin(list(canonical))
    sweep = runs[is_sweep].assign(method=runs.loc[is_sweep, "method"].map(canonical))
    return runs[~is_sweep], sweep


def sweep_summary(sweep_runs: pd.DataFrame, metric: str = "last") -> pd.DataFrame:
    """The summary of sweep runs with their base method and one column per parameter."""
    table = summarise(sweep_runs, metric)
    parsed = [parse_method(name) for name in table["method"]]
    import pandas as pd

    params = pd.DataFrame([p for _, p in parsed], index=table.index)
    clash = set(params.columns) & set(table.columns)
    if clash:
        raise InputError(f"sweep parameter names {sorted(clash)} clash with table columns")
    table.insert(3, "base", [base for base, _ in parsed])
    for i, column in enumerate(params.columns):
        table.insert(4 + i, column, params[column])
    return table.sort_values(
        ["dataset", "finetune_mode", "base", *params.columns, "budget"], ignore_index=True
    )


def markdown_table(summary: pd.DataFrame, method_order: list[str] | None = None) -> str:
    """Rows = methods, columns = budgets, cells 'mean±std (n)'; the best mean per column in bold."""
    blocks = []
    for (dataset, mode), part in summary.groupby(["dataset", "finetune_mode"], sort=True):
        budgets = sorted(part["budget"].unique())
        methods = _ordered(part["method"], method_order)
        cells = part.set_index(["method", "budget"])
        text = (
            cells["mean"].map("{:.1f}".format)
            + "±"
            + cells["std"].map("{:.1f}".format)
            + cells["n_seeds"].map(" ({})".format)
        )
        text = text.where(~cells["best"], "**" + text + "**")
        grid = text.unstack("budget").reindex(index=methods, columns=budgets).fillna("")
        what = METRICS[part["metric"].iloc[0]][1]
        lines = [
            f"### {dataset}, finetune mode {mode}: {what} (mean±std over seeds, n seeds)",
            "",
            "| method | " + " | ".join(f"B={b}" for b in budgets) + " |",
            "|---|" + "---|" * len(budgets),
            *(
                f"| {m} | " + " | ".join(row) + " |"
                for m, row in zip(methods, grid.values, strict=True)
            ),
        ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _ordered(methods: pd.Series, order: list[str] | None) -> list[str]:
    """The distinct methods: those in ``order`` first, in that order, then the rest sorted."""
    present = set(methods)
    first = [m for m in order or [] if m in present]
    return first + sorted(present - set(first))


def pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend (jobs run without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_paths(outs: Iterable[str | Path]) -> list[Path]:
    """``outs`` as paths, or InputError unless each ends in .png or .svg (the formats written)."""
    paths = [Path(out) for out in outs]
    bad = [str(p) for p in paths if p.suffix not in (".png", ".svg")]
    if bad or not paths:
        raise InputError(f"plot paths must be given and end in .png or .svg: {bad}")
    return paths


def save_figure(fig: Any, outs: Iterable[str | Path]) -> list[Path]:
    """Save ``fig`` atomically to every path (format from the suffix: png or svg); close it."""
    outs = plot_paths(outs)
    for out in outs:
        fmt = out.suffix[1:]
        with atomic_path(out) as tmp:  # no date in the SVG: reruns give the same file
            fig.savefig(tmp, format=fmt, metadata={"Date": None} if fmt == "svg" else None)
    pyplot().close(fig)
    return outs


def plot_accuracy(
    summary: pd.DataFrame,
    outs: Iterable[str | Path],
    title: str = "",
    method_order: list[str] | None = None,
) -> list[Path]:
    """Accuracy vs budget of one dataset: a panel per finetune mode, a line per method ± std.

    Each method keeps its colour and marker in every panel.
    """
    plt = pyplot()
    modes = sorted(summary["finetune_mode"].unique())
    methods = _ordered(summary["method"], method_order)
    style = {
        m: (plt.get_cmap("tab10")(i % 10), "osD^v<>ph*"[i % 10]) for i, m in enumerate(methods)
    }
    budgets = sorted(summary["budget"].unique())
    fig, axes = plt.subplots(1, len(modes), figsize=(5.6 * len(modes), 4.4), dpi=120, squeeze=False)
    for ax, mode in zip(axes[0], modes, strict=True):
        part = summary[summary["finetune_mode"] == mode]
        for method in _ordered(part["method"], methods):
            line = part[part["method"] == method].sort_values("budget")
            colour, marker = style[method]
            ax.plot(line["budget"], line["mean"], marker=marker, color=colour, label=method)
            low, high = line["mean"] - line["std"], line["mean"] + line["std"]
            ax.fill_between(line["budget"], low, high, color=colour, alpha=0.15, linewidth=0)
        ax.set_xscale("log")
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.minorticks_off()
        ax.set_xlabel("labeling budget B (images, log scale)")
        best = part["metric"].iloc[0] == "best_test"
        ax.set_ylabel(f"best periodic {ACCURACY_LABEL}" if best else ACCURACY_LABEL)
        ax.set_title(f"finetune mode: {mode}")
        ax.grid(alpha=0.3)
        ax.legend(title="method", fontsize="small")
    dataset = summary["dataset"].iloc[0]
    heading = f"{dataset}: accuracy vs labeling budget (mean ± std over seeds)"
    fig.suptitle(f"{heading}\n{title}" if title else heading)
    fig.tight_layout()
    return save_figure(fig, outs)


def plot_sweep(table: pd.DataFrame, outs: Iterable[str | Path], title: str = "") -> list[Path]:
    """Heat-maps of one dataset's sweep: a panel per (base method, finetune mode) x budget.

    Rows = values of the first parameter, columns = values of the second (or of the rest;
    one row when there is a single parameter); cells = mean top-1, annotated.
    """
    plt = pyplot()
    fixed = {"dataset", "finetune_mode", "method", "base", "budget", *SUMMARY_COLUMNS}
    params = [c for c in table.columns if c not in fixed]
    budgets = sorted(table["budget"].unique())
    panels = [
        (base, mode, [p for p in params if part[p].notna().all()], part)
        for (base, mode), part in table.groupby(["base", "finetune_mode"], sort=True)
    ]
    # Panel size grows with the grid it shows, so the annotations stay legible.
    grid_rows = table[params[0]].nunique() if len(params) > 1 else 1
    grid_cols = max(table[p].nunique() for p in params[1:] or params)
    width, height = 2.2 + 0.8 * grid_cols, 1.6 + 0.55 * grid_rows
    fig, axes = plt.subplots(
        len(panels),
        len(budgets),
        figsize=(max(6.4, width * len(budgets)), height * len(panels) + 0.6),
        dpi=120,
        squeeze=False,
    )
    for row_axes, (base, mode, names, part) in zip(axes, panels, strict=True):
        rows, cols = (names[:1], names[1:]) if len(names) > 1 else ([], names)
        for ax, budget in zip(row_axes, budgets, strict=True):
            cell = part[part["budget"] == budget]
            if cell.empty:
                ax.set_axis_off()
                continue
            grid = cell.assign(_all="").pivot(index=rows or ["_all"], columns=cols, values="mean")
            _heatmap(ax, fig, grid, rows, cols)
            ax.set_title(f"{base}, {mode}, B={budget}", fontsize="medium")
    dataset = table["dataset"].iloc[0]
    heading = f"{dataset}: parameter sweep, mean test top-1 (%) over seeds"
    fig.suptitle(f"{heading}\n{title}" if title else heading)
    fig.tight_layout()
    return save_figure(fig, outs)


def _heatmap(ax: Any, fig: Any, grid: pd.DataFrame, rows: list[str], cols: list[str]) -> None:
    """One annotated heat-map of ``grid`` (NaN = not run) with a labelled colourbar."""
    values = grid.to_numpy(dtype=float)
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto")
    col_labels = [
        ",".join(map(point_label, np.atleast_1d(key))) for key in grid.columns.to_flat_index()
    ]
    ax.set_xticks(range(len(col_labels)), col_labels)
    ax.set_xlabel(",".join(cols))
    if rows:
        ax.set_yticks(range(len(grid.index)), [point_label(v) for v in grid.index])
        ax.set_ylabel(rows[0])
    else:
        ax.set_yticks([])
    low, high = np.nanmin(values), np.nanmax(values)
    middle = (low + high) / 2
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            colour = "black" if v > middle else "white"  # viridis is light at the top
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", color=colour, fontsize="small")
    fig.colorbar(image, ax=ax, label=ACCURACY_LABEL, shrink=0.9)


def _write_table(
    summary: pd.DataFrame, csv: Path, md: Path, heading: str, order: list[str] | None
) -> list[Path]:
    """One summary as CSV and as Markdown (``heading`` first, when given)."""
    with atomic_path(csv) as tmp:
        summary.to_csv(tmp, index=False, float_format="%.4f")
    with atomic_path(md) as tmp:
        tmp.write_text((f"{heading}\n\n" if heading else "") + markdown_table(summary, order))
    return [csv, md]


def write_report(
    metrics: list[str | Path],
    tables_dir: str | Path,
    plots_dir: str | Path,
    method_order: list[str] | None = None,
    title: str = "",
    metric: str = "last",
) -> list[Path]:
    """Write every table and plot of the report (see the module docstring); return their paths.
    ``metric``: the number the tables and plots show (:data:`METRICS`; runs.csv has both).

    ``tables_dir``: summary.csv/.md (all datasets), runs.csv, ``<dataset>.csv/.md`` and, for
    datasets with sweep points, ``<dataset>_sweep.csv/.md``. ``plots_dir``:
    ``<dataset>_accuracy.png/.svg`` and ``<dataset>_sweep.png/.svg``.
    """
    tables, plots = Path(tables_dir), Path(plots_dir)
    runs = collect(metrics)
    main, sweep = split_sweep(runs)
    summary = summarise(main, metric)
    with atomic_path(tables / "runs.csv") as tmp:
        runs.to_csv(tmp, index=False)
    written = [tables / "runs.csv"]
    written += _write_table(
        summary, tables / "summary.csv", tables / "summary.md", title, method_order
    )
    for dataset, part in summary.groupby("dataset", sort=True):
        written += _write_table(
            part, tables / f"{dataset}.csv", tables / f"{dataset}.md", title, method_order
        )
        outs = [plots / f"{dataset}_accuracy.{fmt}" for fmt in ("png", "svg")]
        written += plot_accuracy(part, outs, title, method_order)
    if not sweep.empty:
        for dataset, part in sweep_summary(sweep, metric).groupby("dataset", sort=True):
            part = part.dropna(axis="columns", how="all")  # other datasets' parameters
            order = list(dict.fromkeys(part["method"]))  # numeric parameter order
            csv, md = tables / f"{dataset}_sweep.csv", tables / f"{dataset}_sweep.md"
            written += _write_table(part, csv, md, title, order)
            outs = [plots / f"{dataset}_sweep.{fmt}" for fmt in ("png", "svg")]
            written += plot_sweep(part, outs, title)
    return written


def pick_summary(
    stats: Iterable[str | Path], predictions: Iterable[str | Path] = ()
) -> pd.DataFrame:
    """An unlabeled pool's runs, one row each (method, budget, seed order): the exports'
    label-free stats and, where labels came back, each probe's k-fold top-1 on the picks."""
    import pandas as pd

    rows = pd.DataFrame([read_json(path) for path in stats])
    for path in predictions:
        m = read_json(path)
        at = (rows["method"] == m["method"]) & (rows["budget"] == m["budget"])
        at &= rows["seed"] == m["seed"]
        rows.loc[at, f"{m['mode']}_crossval_top1"] = m["crossval_top1"]
        rows.loc[at, f"{m['mode']}_crossval_std"] = m["crossval_top1_std"]
    from bilaf.export import STAT_COLUMNS

    first = ["method", "budget", "seed", *STAT_COLUMNS]
    rows = rows[first + [c for c in rows.columns if c not in first]]
    return rows.sort_values(["method", "budget", "seed"], ignore_index=True)


def write_pick_report(
    stats: Iterable[str | Path], predictions: Iterable[str | Path], csv: Path, md: Path
) -> list[Path]:
    """:func:`pick_summary` as CSV and as a Markdown table with what each column means."""
    table = pick_summary(stats, predictions)
    with atomic_path(csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    shown = table.copy()
    shown["pseudo-classes reached"] = [
        f"{a} / {b}"
        for a, b in zip(
            shown.pop("pseudo_classes_reached"), shown.pop("pseudo_classes"), strict=True
        )
    ]
    for mode in ("linear", "knn"):
        if f"{mode}_crossval_top1" in shown:
            top1, std = shown.pop(f"{mode}_crossval_top1"), shown.pop(f"{mode}_crossval_std")
            shown[f"{mode} k-fold top-1 %"] = [
                f"{a:.1f}±{b:.1f}" for a, b in zip(top1, std, strict=True)
            ]
    header = "| " + " | ".join(map(str, shown.columns)) + " |"
    lines = [
        "Picks of an unlabeled pool: roles, pseudo-classes (nearest core) reached, and coverage:",
        "each pool image's feature distance to its nearest pick (mean, 95th percentile, max; lower",
        "covers better). k-fold top-1: the probe cross-validated on the labeled picks (no test",
        "split), once labels came back.",
        "",
        header,
        "|" + "---|" * len(shown.columns),
        *(
            "| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |"
            for row in shown.itertuples(index=False)
        ),
    ]
    with atomic_path(md) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return [csv, md]
