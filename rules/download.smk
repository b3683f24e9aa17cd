rule download:
    """Fashion-MNIST from the official URL (checksummed), else the packaged local copy."""
    output:
        raw_files(),
    log:
        log_path("download"),
    conda:
        "../envs/bilaf.yaml"
    params:
        out_dir=lambda w, output: os.path.dirname(output[0]),
        urls=" ".join(f"--url {u}" for u in config["dataset"]["urls"]),
        local_dir=config["dataset"]["local_dir"],
    shell:
        "bilaf download --out {params.out_dir} {params.urls} --local-dir {params.local_dir} "
        "2> {log}"
