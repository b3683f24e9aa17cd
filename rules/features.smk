rule extract:
    """Backbone features of the pool (a seeded train subset) or the test split, into zarr."""
    input:
        raw=raw_dir,
        weights=weights_file,
    output:
        features=directory(store_path("{dataset}", "{backbone}", "{split}")),
        samples=store_path("{dataset}", "{backbone}", "{split}", "samples.csv"),
    log:
        log_path("extract/{backbone}_{split}"),
    conda:
        "../envs/bilaf.yaml"
    threads: 8
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=480,
    params:
        source=param("dataset", "source"),
        raw=raw_flag,
        source_split=lambda w: {"pool": "train", "test": "test"}[w.split],
        subset_flag=subset_flag,
        subset_seed=param("dataset", "pool_seed"),
        backbone=param("backbone", "name"),
        weights=param("backbone", "weights"),
        options=extract_options,
        crop_pct=param("backbone", "crop_pct"),
        batch_size=param("backbone", "batch_size"),
        chunk_rows=param("backbone", "chunk_rows"),
    shell:
        "bilaf extract --source {params.source} {params.raw} --dataset {wildcards.dataset} "
        "--split {params.source_split} {params.subset_flag} --subset-seed {params.subset_seed} "
        "--backbone {params.backbone} --weights {params.weights:q} {params.options} "
        "--crop-pct {params.crop_pct} --batch-size {params.batch_size} "
        "--chunk-rows {params.chunk_rows} --workers {threads} --threads {threads} "
        "--out {output.features} --samples {output.samples} 2> {log}"
