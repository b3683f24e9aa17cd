rule export:
    """An unlabeled pool's picks as files an annotation tool imports (picks.csv, picks.txt,
    labelstudio.json) and a contact sheet of them by pseudo-class, to look at before labeling.
    """
    input:
        features=features_path("pool"),
        samples=features_path("pool", "samples.csv"),
        selection=selection_input,
        cores=run_cores,
        scores=run_scores,
    output:
        **export_files("{dataset}", "{method}", "{budget}", "{seed}"),
    log:
        log_path(f"export/{CELL}"),
    conda:
        "../envs/bilaf.yaml"
    threads: 2
    params:
        kind=method_kind,
        url_prefix=param("export", "url_prefix"),
        tile=param("export", "tile"),
        title=lambda w: f"{w.dataset}: {w.method}, B={w.budget}, seed {w.seed}",
        scores=lambda w, input: f"--scores {input.scores}" if input.scores else "",
    shell:
        "bilaf export --features {input.features} --samples {input.samples} "
        "--selection {input.selection} --cores {input.cores} {params.scores} "
        "--kind {params.kind} --run method={wildcards.method:q} budget={wildcards.budget} "
        "seed={wildcards.seed} "
        "--url-prefix {params.url_prefix:q} --tile {params.tile} --title {params.title:q} "
        "--workers {threads} --out-dir $(dirname {output.picks_csv}) 2> {log}"


rule labels:
    """Labels given for an unlabeled pool (of its picks, or of images labeled before; a CSV or
    a Label Studio export), checked against the pool once and keyed by pool row."""
    input:
        labels=lambda w: cfg(w)["dataset"][w.given],
        samples=features_path("pool", "samples.csv"),
    output:
        labels_path("{dataset}", "{given}"),
    log:
        log_path("{given}"),
    conda:
        "../envs/bilaf.yaml"
    params:
        root=pool_root,
        url_prefix=param("export", "url_prefix"),
        label_column=lambda w: cli_flags(
            {"--label-column": cfg(w)["dataset"]["label_column"]}
        ),
    shell:
        "bilaf labels --labels {input.labels:q} --samples {input.samples} --root {params.root:q} "
        "--url-prefix {params.url_prefix:q} {params.label_column} --out {output} 2> {log}"


rule predict:
    """A probe trained on exactly a run's labeled picks: the rest of the pool predicted (path,
    label, confidence), and its k-fold cross-validated accuracy on the picks (no test split).
    """
    input:
        features=features_path("pool"),
        samples=features_path("pool", "samples.csv"),
        selection=selection_input,
        labels=lambda w: labels_path(w.dataset),
        labeled=labeled_input,
    output:
        predictions=run_pattern("predictions", "csv"),
        metrics=run_pattern("predictions", "json"),
    log:
        run_log("predict"),
    wildcard_constraints:
        mode="linear|knn",
    conda:
        "../envs/bilaf.yaml"
    threads: 1
    params:
        root=pool_root,
        c=param("finetune", "c"),
        max_iter=param("finetune", "max_iter"),
        knn_k=param("finetune", "knn_k"),
        knn_temperature=param("finetune", "knn_temperature"),
        labeled=labeled_flag,
    shell:
        "bilaf predict --features {input.features} --samples {input.samples} "
        "--selection {input.selection} --labels {input.labels} {params.labeled} "
        "--root {params.root:q} "
        "--mode {wildcards.mode} "
        "--c {params.c} --max-iter {params.max_iter} --knn-k {params.knn_k} "
        "--knn-temperature {params.knn_temperature} --seed {wildcards.seed} "
        "--run method={wildcards.method:q} budget={wildcards.budget} seed={wildcards.seed} "
        "--threads {threads} --out {output.predictions} --metrics {output.metrics} 2> {log}"


rule pick_report:
    """An unlabeled pool's runs side by side without labels: roles, pseudo-classes reached and
    how well the picks cover the pool; with labels, each probe's k-fold top-1 on the picks.
    """
    input:
        stats=lambda w: [
            export_path(w.dataset, m, b, s, EXPORT_FILES["stats"])
            for m, b, s in cells(w.dataset)
        ],
        predictions=lambda w: prediction_files(w.dataset, "json"),
    output:
        csv=table_path("{dataset}_picks", "csv"),
        md=table_path("{dataset}_picks", "md"),
    log:
        log_path("pick_report"),
    conda:
        "../envs/bilaf.yaml"
    params:
        predictions=lambda w, input: (
            " ".join(["--predictions", *input.predictions])
            if input.predictions
            else ""
        ),
    shell:
        "bilaf pick-report --stats {input.stats} {params.predictions} "
        "--out {output.csv} {output.md} 2> {log}"
