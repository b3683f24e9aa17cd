rule extract:
    """Backbone features of the pool (a seeded train subset) or the test split, into zarr."""
    input:
        raw_files(),
    output:
        directory(features_path("{split}")),
    log:
        log_path("extract/{split}"),
    conda:
        "../envs/bilaf.yaml"
    threads: 8
    params:
        raw=lambda w, input: os.path.dirname(input[0]),
        dataset=DATASET,
        source_split=lambda w: {"pool": "train", "test": "test"}[w.split],
        subset_flag=lambda w: subset_flag(w.split),
        subset_seed=config["dataset"]["pool_seed"],
        backbone=config["backbone"]["name"],
        weights=config["backbone"]["weights"],
        image_size=config["backbone"]["image_size"],
        interpolation=config["backbone"]["interpolation"],
        batch_size=config["backbone"]["batch_size"],
        chunk_rows=config["backbone"]["chunk_rows"],
    shell:
        "bilaf extract --raw {params.raw} --dataset {params.dataset} "
        "--split {params.source_split} {params.subset_flag} --subset-seed {params.subset_seed} "
        "--backbone {params.backbone} --weights {params.weights} "
        "--image-size {params.image_size} --interpolation {params.interpolation} "
        "--batch-size {params.batch_size} --chunk-rows {params.chunk_rows} "
        "--threads {threads} --out {output} 2> {log}"
