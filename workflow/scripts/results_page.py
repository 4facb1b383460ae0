"""results_page: a study's tables, figures and jobs' provenance -> docs/results/<study>/ (page and copies)."""

from common import log_to_rule_log

log = log_to_rule_log(snakemake)

import json
import shutil
from pathlib import Path

import pandas as pd

from deepsea_scaling import results_page

tables = {Path(p).name: p for p in snakemake.input.tables}
runs = pd.read_parquet(snakemake.input.runs)
hashes = set(runs["config_hash"])
# Provenance of the jobs whose runs the merged table holds (a table of an old config is left out).
provenance = []
for path in sorted(Path(snakemake.params.provenance).glob("*.json")):
    prov = json.loads(path.read_text())
    if any(e["config_hash"] in hashes for e in prov.get("entries", [])):
        provenance.append(prov)
decisions = pd.read_csv(snakemake.input.decisions[0]) if snakemake.input.decisions else None
out = Path(snakemake.output.page).parent
for src, dst in zip(list(snakemake.input.tables) + [snakemake.input.runs], snakemake.output.tables):
    shutil.copyfile(src, dst)
for src, dst in zip(snakemake.input.figures, snakemake.output.figures):
    shutil.copyfile(src, dst)
page = results_page.results_markdown(
    snakemake.params.study,
    episodes=snakemake.params.episodes,
    fidelity=", ".join(sorted(runs["fidelity"].astype(str).unique())) if "fidelity" in runs else "default",
    design=snakemake.params.design,
    fits=pd.read_csv(tables["psi_fit.csv"]),
    comparison=pd.read_csv(tables["kind_comparison.csv"]),
    law_tests=pd.read_csv(tables["law_tests.csv"]),
    by_budget=pd.read_csv(tables["psi_by_budget.csv"]),
    cells=pd.read_csv(tables["convergence.csv"]),
    decisions=decisions,
    provenance=provenance,
    figures=[Path(p).name for p in snakemake.output.figures],
    tables=[Path(p).name for p in snakemake.output.tables],
)
Path(snakemake.output.page).write_text(page + "\n")
log.info("%d jobs' provenance; page %s", len(provenance), snakemake.output.page)
