# Sequential study designs (design: reference | frontier): each round is a
# checkpoint. Round r reads the run tables of every unit trained so far (the
# groups its predecessor planned), asks the design which cells' seed shards to
# train next, and writes its plan; Snakemake then re-evaluates the DAG and
# trains those groups with train_group. A rerun after an interruption finds the
# finished rounds' plans and tables and trains nothing that exists. The inputs
# are ancient: a plan is a function of what its tables hold, and a table's
# name is its content's (config hashes and seeds, trained deterministically),
# so tables and plans brought by a git clone (checkout times, no .snakemake/)
# are not planned again; a missing plan or table still is.
checkpoint plan_round:
    input:
        previous=lambda wildcards: ancient(previous_plan(wildcards)),
        tables=lambda wildcards: ancient(tables_before_round(wildcards)),
    output:
        plan="results/{study}/design/round_{round}.json",
    log:
        "logs/{study}/design/round_{round}.log",
    wildcard_constraints:
        round=r"\d+",
    localrule: True
    conda:
        "../../envs/deepsea.yaml"
    params:
        round="{round}",
        design=design_settings,
        study=study_of,
    script:
        "../scripts/plan_round.py"


rule design_decisions:
    input:
        plan=final_plan,
    output:
        decisions=report(
            "results/{study}/design/decisions.csv",
            caption="../report/decisions.rst",
            category="Tables",
            subcategory="{study}",
        ),
    log:
        "logs/{study}/design/decisions.log",
    localrule: True
    conda:
        "../../envs/deepsea.yaml"
    script:
        "../scripts/design_decisions.py"
