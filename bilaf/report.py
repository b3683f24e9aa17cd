"""Collect per-run metrics into tables (method x budget, mean±std over seeds) and a plot."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from bilaf.io import atomic_path, read_json

RUN_KEYS = ("dataset", "finetune_mode", "method", "budget", "seed")
CELL_KEYS = ["dataset", "finetune_mode", "method", "budget"]


def collect(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run: its keys and top-1, from metrics JSON files."""
    rows = []
    for path in paths:
        m = read_json(path)
        rows.append({**{k: m[k] for k in RUN_KEYS}, "top1": m["top1"], "metrics_file": str(path)})
    if not rows:
        raise ValueError("no metrics files to report on")
    return pd.DataFrame(rows).sort_values(list(RUN_KEYS), ignore_index=True)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (ddof=1; 0 for one seed) and seed count per table cell."""
    grouped = runs.groupby(CELL_KEYS, sort=True)["top1"]
    table = grouped.agg(mean="mean", std="std", n_seeds="count").reset_index()
    table["std"] = table["std"].fillna(0.0)
    return table


def markdown_table(summary: pd.DataFrame, method_order: list[str] | None = None) -> str:
    """Rows = methods, columns = budgets, cells 'mean±std (n)'; the best mean per column in bold."""
    blocks = []
    for (dataset, mode), part in summary.groupby(["dataset", "finetune_mode"], sort=True):
        budgets = sorted(part["budget"].unique())
        methods = [
            m for m in (method_order or sorted(part["method"].unique())) if m in set(part["method"])
        ]
        best = part.loc[part.groupby("budget")["mean"].idxmax()].set_index("budget")["method"]
        lines = [
            f"### {dataset}, {mode} probe: test top-1 % (mean±std over seeds, n seeds)",
            "",
            "| method | " + " | ".join(f"B={b}" for b in budgets) + " |",
            "|---|" + "---|" * len(budgets),
        ]
        cells = part.set_index(["method", "budget"])
        for method in methods:
            row = []
            for budget in budgets:
                if (method, budget) not in cells.index:
                    row.append("")
                    continue
                r = cells.loc[(method, budget)]
                text = f"{r['mean']:.1f}±{r['std']:.1f} ({int(r['n_seeds'])})"
                row.append(f"**{text}**" if best[budget] == method else text)
            lines.append(f"| {method} | " + " | ".join(row) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def plot_accuracy(summary: pd.DataFrame, out: str | Path, title: str = "") -> None:
    """Accuracy vs budget, one panel per finetune mode, one line per method with a ±std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = sorted(summary["finetune_mode"].unique())
    fig, axes = plt.subplots(1, len(modes), figsize=(5.6 * len(modes), 4.2), dpi=120, squeeze=False)
    budgets = sorted(summary["budget"].unique())
    for ax, mode in zip(axes[0], modes, strict=True):
        for method, part in summary[summary["finetune_mode"] == mode].groupby("method"):
            part = part.sort_values("budget")
            ax.plot(part["budget"], part["mean"], marker="o", label=method)
            ax.fill_between(
                part["budget"], part["mean"] - part["std"], part["mean"] + part["std"], alpha=0.2
            )
        ax.set_xscale("log")
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.minorticks_off()
        ax.set_xlabel("labeling budget B (images)")
        ax.set_ylabel("test top-1 accuracy (%)")
        ax.set_title(f"{mode} probe")
        ax.grid(alpha=0.3)
        ax.legend(title="method")
    fig.suptitle(title or "accuracy vs budget (mean ± std over seeds)")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=Path(out).suffix.lstrip("."))
    plt.close(fig)


def write_report(
    metrics: list[str],
    csv: str | Path,
    md: str | Path,
    plot: str | Path,
    method_order: list[str] | None = None,
    title: str = "",
) -> pd.DataFrame:
    """Write the summary CSV, the Markdown table and the plot; return the summary."""
    summary = summarise(collect(metrics))
    with atomic_path(csv) as tmp:
        summary.to_csv(tmp, index=False, float_format="%.4f")
    with atomic_path(md) as tmp:
        tmp.write_text((f"{title}\n\n" if title else "") + markdown_table(summary, method_order))
    plot_accuracy(summary, plot, title)
    return summary
