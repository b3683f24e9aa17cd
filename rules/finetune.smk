rule finetune:
    """Train on the selected samples only: a linear or k-NN probe on the frozen features."""
    input:
        features=features_path("pool"),
        selection=lambda w: selection_path(w.method, w.budget, w.seed),
    output:
        run_path("finetune", "{mode}", "{method}", "{budget}", "{seed}", "npz"),
    log:
        log_path("finetune/{mode}/{method}/B{budget}_s{seed}"),
    wildcard_constraints:
        mode="linear|knn",
    conda:
        "../envs/bilaf.yaml"
    threads: 1
    params:
        n_classes=num_classes(config),
        c=config["finetune"]["c"],
        max_iter=config["finetune"]["max_iter"],
        knn_k=config["finetune"]["knn_k"],
        knn_temperature=config["finetune"]["knn_temperature"],
    shell:
        "bilaf finetune --features {input.features} --selection {input.selection} "
        "--mode {wildcards.mode} --n-classes {params.n_classes} --c {params.c} "
        "--max-iter {params.max_iter} --knn-k {params.knn_k} "
        "--knn-temperature {params.knn_temperature} --threads {threads} --out {output} 2> {log}"


rule finetune_full:
    """Finetune the whole backbone on the selected images (paper recipe, SPEC §5; GPU)."""
    input:
        raw=raw_files(),
        features=features_path("pool"),
        test_features=features_path("test"),
        selection=lambda w: selection_path(w.method, w.budget, w.seed),
    output:
        run_path("finetune", "{mode}", "{method}", "{budget}", "{seed}", "npz"),
    log:
        log_path("finetune/{mode}/{method}/B{budget}_s{seed}"),
    wildcard_constraints:
        mode="full",
    conda:
        "../envs/bilaf.yaml"
    threads: 4
    resources:
        gpu=1,
    params:
        source=config["dataset"]["source"],
        raw=lambda w, input: raw_flag(input.raw),
        folders=folder_flags(),
        backbone=config["backbone"]["name"],
        weights=config["backbone"]["weights"],
        n_classes=num_classes(config),
        epochs=config["finetune"]["full"]["epochs"],
        total_batch=config["finetune"]["full"]["total_batch"],
        base_lr=config["finetune"]["full"]["base_lr"],
        warmup_epochs=config["finetune"]["full"]["warmup_epochs"],
        eval_every=config["finetune"]["full"]["eval_every"],
        label_smoothing=config["finetune"]["full"]["label_smoothing"],
        drop_path=config["finetune"]["full"]["drop_path"],
        checkpoint_dir=f"{RESULTS}/checkpoints",
    shell:
        "bilaf finetune-full --source {params.source} {params.raw} {params.folders} "
        "--features {input.features} "
        "--test-features {input.test_features} --selection {input.selection} "
        "--backbone {params.backbone} --weights {params.weights} "
        "--n-classes {params.n_classes} --epochs {params.epochs} "
        "--total-batch {params.total_batch} --base-lr {params.base_lr} "
        "--warmup-epochs {params.warmup_epochs} --eval-every {params.eval_every} "
        "--label-smoothing {params.label_smoothing} --drop-path {params.drop_path} "
        "--seed {wildcards.seed} --checkpoint-dir {params.checkpoint_dir} "
        "--threads {threads} --out {output} 2> {log}"
