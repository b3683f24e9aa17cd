# Folder datasets (imagenet, imagefolder) have nothing to download.
if raw_files():

    rule download:
        """The dataset's official files by URL (checksummed), else a local copy."""
        output:
            raw_files(),
        log:
            log_path("download"),
        conda:
            "../envs/bilaf.yaml"
        params:
            source=config["dataset"]["source"],
            out=lambda w, output: raw_flag(output, "--out"),
            sources=download_flags(),
        shell:
            "bilaf download --source {params.source} {params.out} {params.sources} 2> {log}"
