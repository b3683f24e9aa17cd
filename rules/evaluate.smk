rule evaluate:
    """Top-1 / top-5 / per-class accuracy of the finetuned model on the test split."""
    input:
        model=run_pattern("finetune", "npz"),
        features=features_path("test"),
    output:
        run_pattern("metrics", "json"),
    log:
        run_log("evaluate"),
    conda:
        "../envs/bilaf.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    shell:
        "bilaf evaluate --model {input.model} --features {input.features} "
        "--run dataset={wildcards.dataset} method={wildcards.method:q} "
        "budget={wildcards.budget} seed={wildcards.seed} --out {output} 2> {log}"
