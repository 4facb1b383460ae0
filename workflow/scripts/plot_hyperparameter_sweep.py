"""plot_hyperparameter_sweep: fitted psi with its interval per sweep value and kind."""

from common import log_to_rule_log

log = log_to_rule_log(snakemake)

import pandas as pd

from deepsea_scaling import plots

fits = pd.read_csv(snakemake.input.fits)
ax = plots.plot_hyperparameter_sweep(fits, caption=snakemake.params.caption)
plots.save_figure(ax.figure, snakemake.output.png, pdf=True)
