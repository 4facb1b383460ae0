"""compare_variants: convergence.csv, psi_fit.csv -> each sweep variant's psi tested against the default's.

Writes the tests (variant_comparison.csv) and one table of psi per kind and
variant with intervals beside its test (variant_table.csv and, for a README,
variant_table.md).
"""

from common import log_to_rule_log

log = log_to_rule_log(snakemake)

import pandas as pd

from deepsea_scaling import stats
from deepsea_scaling.io import atomic_path, write_table

cells = pd.read_csv(snakemake.input.cells)
fits = pd.read_csv(snakemake.input.fits)
comparison = stats.compare_variants(cells)
log.info("%d comparisons", len(comparison))
write_table(comparison, snakemake.output.comparison)
table = stats.variant_table(cells, fits, comparison)
write_table(table, snakemake.output.table)
markdown = stats.variant_table_markdown(table)
with atomic_path(snakemake.output.markdown) as tmp:
    tmp.write_text(markdown)
log.info("variant table:\n%s", markdown)
