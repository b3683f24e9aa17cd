"""The cluster profile plans GPU resources on the GPU rules only (dry run, no cluster needed)."""

import re

import pytest

from tests.workflow_helpers import ROOT, snakemake

GPU_RULES = {"extract", "finetune_full"}


def planned_resources(workdir, *args: str) -> list[tuple[str, str]]:
    """(rule, its `resources:` line) of every job a dry run plans."""
    result = snakemake(workdir, "-n", *args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return re.findall(
        r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", result.stdout, re.M
    )


@pytest.mark.slow
def test_slurm_profile_requests_gpus_for_gpu_rules_only(tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    profile = str(ROOT / "profiles" / "slurm")
    paper = str(ROOT / "config" / "paper.yaml")
    jobs = planned_resources(tmp_path, "--profile", profile, "--configfile", paper)
    rules = {rule for rule, _ in jobs}
    assert GPU_RULES <= rules and {"core", "boundary", "baseline", "evaluate"} <= rules
    for rule, resources in jobs:
        on_gpu = rule in GPU_RULES
        assert ("gpu=1" in resources.split(", ")) == on_gpu, (rule, resources)
        assert ("slurm_partition=gpu" in resources) == on_gpu, (rule, resources)
        if rule != "all":
            assert re.search(r"\bruntime=\d+", resources), (rule, resources)
