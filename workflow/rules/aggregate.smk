# Group tables -> one run table -> one row per cell -> one psi per kind and
# variant, and the residuals of the fitted law per K.


rule merge_runs:
    input:
        tables=group_tables_of_study,
    output:
        runs="results/{study}/runs.parquet",
    log:
        "logs/{study}/merge_runs.log",
    conda:
        "../../envs/deepsea.yaml"
    params:
        study="{study}",
        expected=expected_rows_of_study,
    script:
        "../scripts/merge_runs.py"


rule convergence_table:
    input:
        runs="results/{study}/runs.parquet",
        decisions=decisions_of_study,
    output:
        cells=report(
            "results/{study}/convergence.csv",
            caption="../report/convergence.rst",
            category="Tables",
            subcategory="{study}",
        ),
    log:
        "logs/{study}/convergence_table.log",
    conda:
        "../../envs/deepsea.yaml"
    script:
        "../scripts/convergence_table.py"


rule fit_psi:
    input:
        cells="results/{study}/convergence.csv",
        law_tests="results/{study}/law_tests.csv",
    output:
        fits=report(
            "results/{study}/psi_fit.csv",
            caption="../report/psi_fit.rst",
            category="Tables",
            subcategory="{study}",
        ),
    log:
        "logs/{study}/fit_psi.log",
    conda:
        "../../envs/deepsea.yaml"
    script:
        "../scripts/fit_psi.py"


# psi at a ladder of budgets up to the study's, from the same runs cut to each
# budget (BDQN and RP-BDQN only: their training does not depend on the budget).
rule psi_by_budget:
    input:
        runs="results/{study}/runs.parquet",
        decisions=decisions_of_study,
    output:
        table=report(
            "results/{study}/psi_by_budget.csv",
            caption="../report/psi_by_budget.rst",
            category="Tables",
            subcategory="{study}",
        ),
    log:
        "logs/{study}/psi_by_budget.log",
    conda:
        "../../envs/deepsea.yaml"
    script:
        "../scripts/psi_by_budget.py"


rule compare_kinds:
    input:
        cells="results/{study}/convergence.csv",
    output:
        comparison=report(
            "results/{study}/kind_comparison.csv",
            caption="../report/kind_comparison.rst",
            category="Tables",
            subcategory="{study}",
        ),
    log:
        "logs/{study}/compare_kinds.log",
    conda:
        "../../envs/deepsea.yaml"
    script:
        "../scripts/compare_kinds.py"


rule residuals_table:
    input:
        cells="results/{study}/convergence.csv",
        fits="results/{study}/psi_fit.csv",
    output:
        residuals=report(
            "results/{study}/residuals.csv",
            caption="../report/residuals_table.rst",
            category="Tables",
            subcategory="{study}",
        ),
    log:
        "logs/{study}/residuals_table.log",
    conda:
        "../../envs/deepsea.yaml"
    script:
        "../scripts/residuals_table.py"


rule test_law:
    input:
        cells="results/{study}/convergence.csv",
    output:
        tests=report(
            "results/{study}/law_tests.csv",
            caption="../report/law_tests.rst",
            category="Tables",
            subcategory="{study}",
        ),
    log:
        "logs/{study}/test_law.log",
    conda:
        "../../envs/deepsea.yaml"
    script:
        "../scripts/law_tests.py"


# Sweeps: every variant against the default one (in the ablation study, each
# research-code behaviour toggled back against all of them together).
rule compare_variants:
    input:
        cells="results/{study}/convergence.csv",
        fits="results/{study}/psi_fit.csv",
    output:
        comparison=report(
            "results/{study}/variant_comparison.csv",
            caption="../report/variant_comparison.rst",
            category="Tables",
            subcategory="{study}",
        ),
        table="results/{study}/variant_table.csv",
        markdown="results/{study}/variant_table.md",
    log:
        "logs/{study}/compare_variants.log",
    conda:
        "../../envs/deepsea.yaml"
    script:
        "../scripts/compare_variants.py"
