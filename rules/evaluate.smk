rule evaluate:
    """Top-1 / top-5 / per-class accuracy of the finetuned model on the test split."""
    input:
        model=run_path("finetune", "{mode}", "{method}", "{budget}", "{seed}", "npz"),
        features=features_path("test"),
    output:
        run_path("metrics", "{mode}", "{method}", "{budget}", "{seed}", "json"),
    log:
        log_path("evaluate/{mode}/{method}/B{budget}_s{seed}"),
    conda:
        "../envs/bilaf.yaml"
    threads: 1
    params:
        dataset=DATASET,
    shell:
        "bilaf evaluate --model {input.model} --features {input.features} "
        "--run dataset={params.dataset} method={wildcards.method} budget={wildcards.budget} "
        "seed={wildcards.seed} --out {output} 2> {log}"
