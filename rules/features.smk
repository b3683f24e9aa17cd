rule extract:
    """Backbone features of the pool (a seeded train subset) or the test split, into zarr."""
    input:
        raw=raw_files(),
        weights=weights_file(),
    output:
        features=directory(features_path("{split}")),
        samples=samples_path("{split}"),
    log:
        log_path("extract/{split}"),
    conda:
        "../envs/bilaf.yaml"
    threads: 8
    params:
        source=config["dataset"]["source"],
        raw=lambda w, input: raw_flag(input.raw),
        dataset=DATASET,
        source_split=lambda w: {"pool": "train", "test": "test"}[w.split],
        subset_flag=lambda w: subset_flag(w.split),
        subset_seed=config["dataset"]["pool_seed"],
        backbone=config["backbone"]["name"],
        weights=config["backbone"]["weights"],
        options=extract_options(),
        crop_pct=config["backbone"]["crop_pct"],
        batch_size=config["backbone"]["batch_size"],
        chunk_rows=config["backbone"]["chunk_rows"],
    shell:
        "bilaf extract --source {params.source} {params.raw} --dataset {params.dataset} "
        "--split {params.source_split} {params.subset_flag} --subset-seed {params.subset_seed} "
        "--backbone {params.backbone} --weights {params.weights:q} {params.options} "
        "--crop-pct {params.crop_pct} --batch-size {params.batch_size} "
        "--chunk-rows {params.chunk_rows} --workers {threads} --threads {threads} "
        "--out {output.features} --samples {output.samples} 2> {log}"
