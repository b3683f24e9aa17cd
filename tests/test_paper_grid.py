"""The paper configs plan their whole grid offline (dry run: no download, no GPU, no data)."""

import pytest

from tests.workflow_helpers import ROOT, planned_jobs


def dry_run(workdir, *configs: str) -> dict[str, int]:
    """Rule -> job count of `snakemake -n --configfile <configs>` in an empty workdir."""
    return planned_jobs(
        workdir, "--configfile", *(str(ROOT / "config" / f"{c}.yaml") for c in configs)
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("configs", "download", "budgets"),
    [
        (["paper"], 1, 3),
        (["paper", "paper_cifar100"], 1, 4),
        (["paper", "paper_imagenet"], 0, 3),
    ],
)
def test_paper_config_plans_the_whole_grid(tmp_path, configs, download, budgets):
    jobs = dry_run(tmp_path, *configs)
    runs = 5 * budgets * 3  # methods x budgets x seeds
    assert jobs.get("download", 0) == download  # ImageNet: read from its folders, not fetched
    assert jobs["extract"] == 2
    assert jobs["evaluate"] == runs and jobs["finetune_full"] == runs
