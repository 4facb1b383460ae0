"""Shared by the workflow's scripts: send everything a script prints to its rule's log."""

import logging
import sys
import warnings
from pathlib import Path

# The package beside the scripts (workflow/deepsea_scaling), also without
# `pip install -e .`; Snakemake sets __file__ to the script's real path.
PACKAGE_DIR = str(Path(__file__).resolve().parents[1])
if PACKAGE_DIR not in sys.path:
    sys.path.insert(0, PACKAGE_DIR)


def log_to_rule_log(snakemake) -> logging.Logger:
    """Redirect stdout, stderr, warnings and `logging` to the rule's `log:` file."""
    stream = open(snakemake.log[0], "w", buffering=1)
    sys.stdout = sys.stderr = stream
    logging.basicConfig(
        stream=stream,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    return logging.getLogger(f"rule {snakemake.rule}")


def select_variant(table, variant):
    """Rows of one variant of a study table (all rows if it has no `variant` column)."""
    if "variant" not in table.columns:
        return table
    return table[table["variant"] == variant].reset_index(drop=True)
