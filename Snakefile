# DeepSea scaling study: the (kind, K, n, seed-shard) grid -> run tables ->
# convergence table, psi fit, kind comparison and figures.
#
#   snakemake --cores all                    # the study named by `study` in config.yaml
#   snakemake --config study=paper           # another study
#   snakemake plots/default/residuals.png    # one figure
#   snakemake --report report.html           # self-contained report
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


# The profile's global `gpu` limit (profiles/default) caps the training shards
# that run at once on this machine; "local" keeps it from capping the jobs a
# cluster executor submits (each still asks its scheduler for one GPU).
resource_scopes:
    gpu="local",


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/design.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/plots.smk"


report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        get_final_output(),
    localrule: True
