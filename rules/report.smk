rule report:
    """Per-dataset tables in the paper's Table 1 layout (mean±std over seeds), every run in
    long format, accuracy-vs-budget plots and, when configured, the sweep heat-maps."""
    input:
        all_metrics(),
    output:
        summary_csv=summary_files()["summary_csv"],
        summary_md=report(
            summary_files()["summary_md"],
            caption="../report/table.rst",
            category="Tables",
        ),
        runs=summary_files()["runs"],
        tables=annotated(tables, "../report/table.rst", "Tables"),
        plots=annotated(accuracy_plots, "../report/accuracy_vs_budget.rst", "Accuracy"),
        sweeps=annotated(sweep_files, "../report/sweep.rst", "Sweep"),
    log:
        log_path("report", dataset=None),
    conda:
        "../envs/bilaf.yaml"
    params:
        tables_dir=lambda w, output: os.path.dirname(output.summary_csv),
        plots_dir=lambda w, output: os.path.dirname(output.plots[0]),
        methods=" ".join(map(shlex.quote, method_order())),
        metric=config["report"]["metric"],
    shell:
        "bilaf report --metrics {input} --tables-dir {params.tables_dir} "
        "--plots-dir {params.plots_dir} --metric {params.metric} "
        "--method-order {params.methods} 2> {log}"


rule pool_map:
    """PCA map of the pool with each method's picks; BiLAF's cores vs boundary picks marked."""
    input:
        features=features_path("pool"),
        selections=lambda w: list(map_cells(w).values()),
        cores=map_cores,
    output:
        png=report(
            map_path("{dataset}", "png"),
            caption="../report/pool_map.rst",
            category="Pool map",
            subcategory="{dataset}",
        ),
        svg=map_path("{dataset}", "svg"),
    log:
        log_path("pool_map"),
    conda:
        "../envs/bilaf.yaml"
    params:
        selections=lambda w: " ".join(f"{m}={p}" for m, p in map_cells(w).items()),
        cores=lambda w, input: f"--cores {input.cores}" if input.cores else "",
        title=lambda w: f"{w.dataset}: picks at B={budgets(cfg(w))[0]}, seed {cfg(w)['seeds'][0]}",
    shell:
        "bilaf map --features {input.features} --selection {params.selections} "
        "{params.cores} --title {params.title:q} --out {output.png} {output.svg} 2> {log}"
