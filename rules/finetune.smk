rule finetune:
    """Train on the selected samples only: a linear or k-NN probe on the frozen features."""
    input:
        features=features_path("pool"),
        selection=selection_input,
    output:
        run_pattern("finetune", "npz"),
    log:
        run_log("finetune"),
    wildcard_constraints:
        mode="linear|knn",
    conda:
        "../envs/bilaf.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        n_classes=n_classes,
        c=param("finetune", "c"),
        max_iter=param("finetune", "max_iter"),
        knn_k=param("finetune", "knn_k"),
        knn_temperature=param("finetune", "knn_temperature"),
    shell:
        "bilaf finetune --features {input.features} --selection {input.selection} "
        "--mode {wildcards.mode} --n-classes {params.n_classes} --c {params.c} "
        "--max-iter {params.max_iter} --knn-k {params.knn_k} "
        "--knn-temperature {params.knn_temperature} --threads {threads} --out {output} 2> {log}"


rule finetune_full:
    """Finetune the whole backbone on the selected images (paper recipe, SPEC §5; GPU)."""
    input:
        raw=raw_dir,
        features=features_path("pool"),
        test_features=features_path("test"),
        selection=selection_input,
    output:
        run_pattern("finetune", "npz"),
    log:
        run_log("finetune"),
    wildcard_constraints:
        mode="full",
    conda:
        "../envs/bilaf.yaml"
    threads: 4
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=1440,
    params:
        source=param("dataset", "source"),
        raw=raw_flag,
        folders=folder_flags,
        backbone=param("backbone", "name"),
        weights=param("backbone", "weights"),
        n_classes=n_classes,
        epochs=full_param("epochs"),
        total_batch=full_param("total_batch"),
        base_lr=full_param("base_lr"),
        warmup_epochs=full_param("warmup_epochs"),
        eval_every=full_param("eval_every"),
        label_smoothing=full_param("label_smoothing"),
        drop_path=full_param("drop_path"),
        checkpoint_dir=lambda w: checkpoints_path(w.dataset),
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
