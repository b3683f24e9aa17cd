rule download:
    """Fashion-MNIST from the official URL (checksummed), else the packaged local copy."""
    output:
        raw_files(),
    params:
        out_dir=raw_dir(),
        urls=" ".join(f"--url {u}" for u in config["dataset"]["urls"]),
        local_dir=config["dataset"]["local_dir"],
    log:
        log_path("download"),
    shell:
        "bilaf download --out {params.out_dir} {params.urls} --local-dir {params.local_dir} "
        "2> {log}"
