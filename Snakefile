# BiLAF pipeline: download (or scan your own images) -> extract -> core select -> boundary select
# -> finetune -> evaluate -> report; an unlabeled pool: select -> export (-> labels -> predict).
# Each rule is a thin call of the `bilaf` CLI; every hyperparameter goes through params:, so
# changing one reruns only the stages downstream of it.
from snakemake.utils import min_version

min_version("9.0")


# The offline default is the base; a --configfile or --config given by the user overrides it.
configfile: f"{workflow.basedir}/config/config.yaml"


include: "rules/common.smk"
include: "rules/download.smk"
include: "rules/features.smk"
include: "rules/select.smk"
include: "rules/export.smk"
include: "rules/finetune.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        get_targets(),
