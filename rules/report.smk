rule report:
    """Summary table (method x budget, mean±std over seeds) and accuracy-vs-budget plot."""
    input:
        all_metrics(),
    output:
        csv="results/tables/summary.csv",
        md="results/tables/summary.md",
        plot=report(
            "results/plots/accuracy_vs_budget.png",
            caption="../report/accuracy_vs_budget.rst",
            category="Accuracy",
        ),
    log:
        log_path("report"),
    conda:
        "../envs/bilaf.yaml"
    params:
        methods=" ".join(METHODS),
        title=f"{DATASET}, {BACKBONE_TAG} features",
    shell:
        "bilaf report --metrics {input} --csv {output.csv} --md {output.md} "
        "--plot {output.plot} --method-order {params.methods} --title '{params.title}' 2> {log}"
