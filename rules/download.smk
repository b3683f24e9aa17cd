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
