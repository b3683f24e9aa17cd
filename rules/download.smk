rule download:
    """A dataset's official files by URL (checksummed), else a local copy. Folder datasets
    (imagenet, imagefolder) have nothing to download: they are read where the config says.
    """
    output:
        directory(raw_path("{source}")),
    log:
        log_path("download/{source}", dataset=None),
    conda:
        "../envs/bilaf.yaml"
    params:
        sources=download_flags,
    shell:
        "bilaf download --source {wildcards.source} --out {output} {params.sources} 2> {log}"


rule scan:
    """An unlabeled pool's files: the readable, distinct images in path order (the pool), and
    every other file with the reason it is left out."""
    input:
        pool_input,
    output:
        images=scan_path("{dataset}", "images"),
        skipped=scan_path("{dataset}", "skipped"),
    log:
        log_path("scan"),
    conda:
        "../envs/bilaf.yaml"
    threads: 4
    params:
        pool=pool_flag,
        on_bad_image=param("dataset", "on_bad_image"),
        min_images=largest_count,
    shell:
        "bilaf scan {params.pool} --on-bad-image {params.on_bad_image} --workers {threads} "
        "--min-images {params.min_images} --out {output.images} --skipped {output.skipped} "
        "2> {log}"
