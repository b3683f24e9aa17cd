rule finetune:
    """Train on the selected samples only: a linear or k-NN probe on the frozen features."""
    input:
        features=features_path("pool"),
        selection=lambda w: selection_path(w.method, w.budget, w.seed),
    output:
        run_path("finetune", "{mode}", "{method}", "{budget}", "{seed}", "npz"),
    params:
        n_classes=NUM_CLASSES[config["dataset"]["source"]],
        c=config["finetune"]["c"],
        max_iter=config["finetune"]["max_iter"],
        knn_k=config["finetune"]["knn_k"],
        knn_temperature=config["finetune"]["knn_temperature"],
    threads: 1
    conda:
        "../envs/bilaf.yaml"
    log:
        log_path("finetune/{mode}/{method}/B{budget}_s{seed}"),
    shell:
        "bilaf finetune --features {input.features} --selection {input.selection} "
        "--mode {wildcards.mode} --n-classes {params.n_classes} --c {params.c} "
        "--max-iter {params.max_iter} --knn-k {params.knn_k} "
        "--knn-temperature {params.knn_temperature} --threads {threads} --out {output} 2> {log}"
