"""law_tests (rule test_law): convergence.csv -> the law and its nested alternatives per (study, variant, kind), with LRT and quasi-F tests."""

from common import log_to_rule_log

log = log_to_rule_log(snakemake)

import pandas as pd

from deepsea_scaling import law
from deepsea_scaling.io import write_table

cells = pd.read_csv(snakemake.input.cells)
tests = law.law_tests(cells)
log.info("%d cells -> %d model fits", len(cells), len(tests))
write_table(tests, snakemake.output.tests)
