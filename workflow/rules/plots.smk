# The figures of the reference study (docs/SCIENCE.md, "Figures"), one rule and one target each (PNG in the
# report, PDF beside it). Figures of a sweep study show its default variant;
# the sweep figures compare the variants.


rule plot_frontier_and_heatmaps:
    input:
        cells="results/{study}/convergence.csv",
        fits="results/{study}/psi_fit.csv",
    output:
        png=report(
            "plots/{study}/frontier_and_heatmaps.png",
            caption="../report/frontier_and_heatmaps.rst",
            category="Figures",
            subcategory="{study}",
        ),
        pdf="plots/{study}/frontier_and_heatmaps.pdf",
    log:
        "logs/{study}/plot_frontier_and_heatmaps.log",
    conda:
        "../../envs/deepsea.yaml"
    params:
        caption=figure_caption,
        variant=study_lib.DEFAULT_VARIANT,
    script:
        "../scripts/plot_frontier_and_heatmaps.py"


rule plot_residuals:
    input:
        residuals="results/{study}/residuals.csv",
    output:
        png=report(
            "plots/{study}/residuals.png",
            caption="../report/residuals.rst",
            category="Figures",
            subcategory="{study}",
        ),
        pdf="plots/{study}/residuals.pdf",
    log:
        "logs/{study}/plot_residuals.log",
    conda:
        "../../envs/deepsea.yaml"
    params:
        caption=figure_caption,
        variant=study_lib.DEFAULT_VARIANT,
    script:
        "../scripts/plot_residuals.py"


rule plot_collapse:
    input:
        runs="results/{study}/runs.parquet",
    output:
        png=report(
            "plots/{study}/collapse.png",
            caption="../report/collapse.rst",
            category="Figures",
            subcategory="{study}",
        ),
        pdf="plots/{study}/collapse.pdf",
    log:
        "logs/{study}/plot_collapse.log",
    conda:
        "../../envs/deepsea.yaml"
    params:
        caption=figure_caption,
        variant=study_lib.DEFAULT_VARIANT,
        critical_region=critical_region,
    script:
        "../scripts/plot_collapse.py"


rule plot_probability_vs_n:
    input:
        cells="results/{study}/convergence.csv",
        fits="results/{study}/psi_fit.csv",
    output:
        png=report(
            "plots/{study}/probability_vs_n.png",
            caption="../report/probability_vs_n.rst",
            category="Figures",
            subcategory="{study}",
        ),
        pdf="plots/{study}/probability_vs_n.pdf",
    log:
        "logs/{study}/plot_probability_vs_n.log",
    conda:
        "../../envs/deepsea.yaml"
    params:
        caption=figure_caption,
        variant=study_lib.DEFAULT_VARIANT,
    script:
        "../scripts/plot_probability_vs_n.py"


rule plot_hyperparameter_sweep:
    input:
        fits="results/{study}/psi_fit.csv",
    output:
        png=report(
            "plots/{study}/hyperparameter_sweep.png",
            caption="../report/hyperparameter_sweep.rst",
            category="Figures",
            subcategory="{study}",
        ),
        pdf="plots/{study}/hyperparameter_sweep.pdf",
    log:
        "logs/{study}/plot_hyperparameter_sweep.log",
    conda:
        "../../envs/deepsea.yaml"
    params:
        caption=figure_caption,
    script:
        "../scripts/plot_hyperparameter_sweep.py"


rule plot_sweep_frontiers:
    input:
        cells="results/{study}/convergence.csv",
        fits="results/{study}/psi_fit.csv",
    output:
        png=report(
            "plots/{study}/sweep/{variant}/frontier_and_heatmaps.png",
            caption="../report/sweep_frontiers.rst",
            category="Sweep",
            subcategory="{study}",
            labels={"variant": "{variant}"},
        ),
        pdf="plots/{study}/sweep/{variant}/frontier_and_heatmaps.pdf",
    log:
        "logs/{study}/plot_sweep_frontiers/{variant}.log",
    conda:
        "../../envs/deepsea.yaml"
    params:
        caption=figure_caption,
        variant="{variant}",
    script:
        "../scripts/plot_frontier_and_heatmaps.py"


# The README's figure: the frontier figure of a study at a size fit for a web
# page, committed under docs/ (regenerate: snakemake --cores all docs/default_frontier_and_heatmaps.png).
rule docs_figure:
    input:
        cells="results/{study}/convergence.csv",
        fits="results/{study}/psi_fit.csv",
    output:
        png="docs/{study}_frontier_and_heatmaps.png",
    log:
        "logs/{study}/docs_figure.log",
    conda:
        "../../envs/deepsea.yaml"
    params:
        caption=figure_caption,
        variant=study_lib.DEFAULT_VARIANT,
        dpi=80,
        pdf=False,
    script:
        "../scripts/plot_frontier_and_heatmaps.py"


rule plot_law_tests:
    input:
        cells="results/{study}/convergence.csv",
        tests="results/{study}/law_tests.csv",
    output:
        png=report(
            "plots/{study}/law_tests.png",
            caption="../report/plot_law_tests.rst",
            category="Figures",
            subcategory="{study}",
        ),
        pdf="plots/{study}/law_tests.pdf",
    log:
        "logs/{study}/plot_law_tests.log",
    conda:
        "../../envs/deepsea.yaml"
    params:
        caption=figure_caption,
        variant=study_lib.DEFAULT_VARIANT,
    script:
        "../scripts/plot_law_tests.py"


rule plot_psi_by_budget:
    input:
        table="results/{study}/psi_by_budget.csv",
    output:
        png=report(
            "plots/{study}/psi_by_budget.png",
            caption="../report/plot_psi_by_budget.rst",
            category="Figures",
            subcategory="{study}",
        ),
        pdf="plots/{study}/psi_by_budget.pdf",
    log:
        "logs/{study}/plot_psi_by_budget.log",
    conda:
        "../../envs/deepsea.yaml"
    params:
        caption=figure_caption,
        variant=study_lib.DEFAULT_VARIANT,
    script:
        "../scripts/plot_psi_by_budget.py"


# A study's results page with copies of its figures and tables, for committing
# under docs/ (not part of `all`): snakemake --cores all docs/results/paper_check/README.md --config study=paper_check
rule results_page:
    input:
        tables=expand("results/{{study}}/{table}", table=TABLES),
        runs="results/{study}/runs.parquet",
        decisions=decisions_of_study,
        figures=expand("plots/{{study}}/{figure}.png", figure=FIGURES),
    output:
        page="docs/results/{study}/README.md",
        tables=expand("docs/results/{{study}}/{table}", table=TABLES + ["runs.parquet"]),
        figures=expand("docs/results/{{study}}/{figure}.png", figure=FIGURES),
    log:
        "logs/{study}/results_page.log",
    localrule: True
    conda:
        "../../envs/deepsea.yaml"
    params:
        study=lambda w: study_of(w).name,
        episodes=lambda w: study_of(w).num_episodes,
        design=lambda w: study_of(w).design,
        provenance=lambda w: f"results/{w.study}/runs",
    script:
        "../scripts/results_page.py"
