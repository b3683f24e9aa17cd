rule evaluate:
    """Top-1 / top-5 / per-class accuracy of the finetuned head on the test split."""
    input:
        head=run_path("finetune", "{method}", "{budget}", "{seed}", "npz"),
        features=features_path("test"),
    output:
        run_path("metrics", "{method}", "{budget}", "{seed}", "json"),
    log:
        log_path("evaluate/{method}/B{budget}_s{seed}"),
    conda:
        "../envs/bilaf.yaml"
    threads: 1
    params:
        dataset=DATASET,
    shell:
        "bilaf evaluate --head {input.head} --features {input.features} "
        "--run dataset={params.dataset} method={wildcards.method} budget={wildcards.budget} "
        "seed={wildcards.seed} --out {output} 2> {log}"
