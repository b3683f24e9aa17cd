"""bilaf-pipeline: BiLAF (NeurIPS 2024) active finetuning as a cached Snakemake DAG."""

__version__ = "0.1.0"
