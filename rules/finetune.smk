rule finetune:
    """Train on the selected samples only (CPU default: linear probe on frozen features)."""
    input:
        features=features_path("pool"),
        selection=lambda w: selection_path(w.method, w.budget, w.seed),
    output:
        run_path("finetune", "{method}", "{budget}", "{seed}", "npz"),
    log:
        log_path("finetune/{method}/B{budget}_s{seed}"),
    conda:
        "../envs/bilaf.yaml"
    threads: 1
    params:
        mode=config["finetune"]["mode"],
        c=config["finetune"]["c"],
        max_iter=config["finetune"]["max_iter"],
    shell:
        "bilaf finetune --features {input.features} --selection {input.selection} "
        "--c {params.c} --max-iter {params.max_iter} --threads {threads} --out {output} "
        "2> {log}"
