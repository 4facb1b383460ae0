"""Every figure of deepsea_scaling.plots draws on simulated tables and on edge cases."""

import warnings

import matplotlib
import matplotlib.image as mpimg
import matplotlib.text
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from deepsea_scaling import plots
from deepsea_scaling.simulate import simulate_cells, simulate_runs
from deepsea_scaling.stats import AnalysisWarning, convergence_table, fit_psi_table, residuals_by_k

DPI = 50
KS, NS = (1, 2, 4, 8, 16), (3, 5, 8, 12, 16, 24, 32)
REGION = {"n_min": 8, "n_max": 12, "k_min": 2, "k_max": 8}
CAPTION = "simulated: budget 3,000 episodes per run, 8 seeds per cell"


@pytest.fixture(autouse=True)
def closed():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def runs():
    return simulate_runs({"boot": 0.8, "bootrp": 0.87, "eps": 0.6}, KS, NS, trials=8, seed=0,
                         num_log_points=20, diverged_rate=0.02)


def _tables(cells):
    """cells and their fits; the fits' AnalysisWarnings (tested in test_stats.py) are not the subject here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnalysisWarning)
        return cells, fit_psi_table(cells)


def _edge_cases(runs):
    """name -> (cells, fits, runs) of each edge case of the issue."""
    with pytest.warns(AnalysisWarning, match="diverged"):  # the simulated runs have 2% diverged
        cells = convergence_table(runs)
    all_fail = cells.assign(successes=0, p_hat=0.0)
    single = cells[(cells["kind"] == "boot") & (cells["ensemble_size"] == 4) & (cells["hardness"] == 8)]
    zero_trials = cells.assign(trials=np.where(cells["hardness"] > 12, 0, cells["trials"]))
    boot_only = cells[cells["kind"] == "boot"]
    nan_fits = _tables(cells)[1].assign(psi=np.nan, psi_wald_low=np.nan, psi_wald_high=np.nan,
                                           psi_quasi_low=np.nan, psi_quasi_high=np.nan, status="no estimate")
    no_runs = runs.iloc[:0]
    all_fail_runs = runs.assign(discovered=False)
    return {
        "all_fail": (*_tables(all_fail), all_fail_runs),
        "single_cell": (*_tables(single), runs[runs.index.isin(runs.index[(runs["kind"] == "boot")
                                                                        & (runs["ensemble_size"] == 4)
                                                                        & (runs["hardness"] == 8)])]),
        "zero_trials": (*_tables(zero_trials), runs),
        "kind_absent": (*_tables(boot_only), runs[runs["kind"] == "boot"]),
        "nan_fits": (cells, nan_fits, runs),
        "empty": (cells.iloc[:0], _tables(cells.iloc[:0])[1], no_runs),
    }


def _sweep_fits(cells):
    parts = []
    for i, (variant, psis) in enumerate({"default": (0.8, 0.87), "learning_rate=0.0005": (0.78, 0.85),
                                         "prior_scale=10": (None, 0.9)}.items()):
        law = {k: p for k, p in zip(("boot", "bootrp"), psis) if p}
        c = simulate_cells(law, KS, NS, trials=8, seed=i)
        c["variant"] = variant
        parts.append(c)
    return fit_psi_table(pd.concat(parts, ignore_index=True))


def _residuals(cells, fits):
    return residuals_by_k(cells, fits) if len(cells) and len(fits) else pd.DataFrame()


def _draw_all(cells, fits, runs, sweep_fits, kinds=None):
    """figure name -> Figure, one per plot function."""
    return {
        "frontier": plots.plot_frontier_and_heatmaps(cells, fits, kinds=kinds, caption=CAPTION),
        "residuals": plots.plot_residuals(_residuals(cells, fits), caption=CAPTION).figure,
        "collapse": plots.plot_collapse(runs, REGION, caption=CAPTION),
        "sweep": plots.plot_hyperparameter_sweep(sweep_fits, caption=CAPTION).figure,
        "p_vs_n": plots.plot_probability_vs_n(cells, fits, caption=CAPTION),
    }


def _assert_written(fig, path):
    written = plots.save_figure(fig, path, dpi=DPI)
    assert written == [path, path.with_suffix(".pdf")]
    width, height = fig.get_size_inches()
    image = mpimg.imread(path)
    assert image.shape[:2] == (round(height * DPI), round(width * DPI))
    assert path.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
    assert not [p for p in path.parent.iterdir() if ".tmp-" in p.name]  # io.atomic_path's temporaries


def test_figures_on_simulated_tables(runs, tmp_path):
    cells, fits = _tables(convergence_table(runs))
    figures = _draw_all(cells, fits, runs, _sweep_fits(cells))
    for name, fig in figures.items():
        _assert_written(fig, tmp_path / f"{name}.png")
    # The frontier figure has a heatmap and a frontier panel per kind with K > 1, plus a colour bar.
    assert len(figures["frontier"].axes) == 2 * 2 + 1
    titles = [ax.get_title() for ax in figures["frontier"].axes]
    assert any("BDQN" in t and "ψ = 0.8" in t for t in titles)
    assert figures["collapse"].axes[0].get_yscale() == "log"


def test_figure_sizes_are_the_ones_asked_for(runs, tmp_path):
    cells, fits = _tables(convergence_table(runs))
    fig = plt.figure(figsize=(3.4, 2.0))
    ax = fig.subplots()
    assert plots.plot_residuals(_residuals(cells, fits), ax=ax) is ax
    _assert_written(fig, tmp_path / "residuals_column.png")
    assert mpimg.imread(tmp_path / "residuals_column.png").shape[:2] == (100, 170)


def _texts(fig) -> list[str]:
    """Every text a figure shows: notes, titles, labels, legend entries."""
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]


def _series(ax) -> dict[str, int]:
    """Legend label -> number of points of each error-bar series."""
    return {c.get_label(): len(c.lines[0].get_xdata()) for c in ax.containers}


# What each edge case must show: (figure, text that must appear) pairs.
EDGE_TEXTS = {
    "all_fail": [("frontier", "BDQN\nψ: no estimate (all 28 cells failed"),
                 ("frontier", "RP-BDQN\nψ: no estimate (all 28 cells failed"),
                 ("residuals", "no residuals: no cell has a fitted ψ"), ("sweep", "no estimate"),
                 ("collapse", "not discovered (48)")],
    "single_cell": [("frontier", "BDQN\nψ = 0.795 [0.709, 0.891]"), ("collapse", "discovered (4)")],
    "zero_trials": [("frontier", "BDQN\nψ = 0.785"), ("frontier", "RP-BDQN\nψ = 0.838")],
    "kind_absent": [("frontier", "no cells for RP-BDQN"), ("frontier", "RP-BDQN\nψ: no estimate"),
                    ("p_vs_n", "BDQN\nψ = 0.774")],
    "nan_fits": [("frontier", "ψ: no estimate (no estimate)"), ("residuals", "no residuals: no cell has a fitted ψ"),
                 ("sweep", "no estimate")],
    "empty": [("frontier", "no cells in the table"), ("residuals", "no residuals: no cell has a fitted ψ"),
              ("collapse", "no runs in the critical region"), ("sweep", "no fits to show"),
              ("p_vs_n", "no cells in the table")],
}


@pytest.mark.parametrize("case", sorted(EDGE_TEXTS))
def test_figures_on_edge_cases_say_what_is_missing(runs, case, tmp_path):
    cells, fits, case_runs = _edge_cases(runs)[case]
    sweep = _sweep_fits(convergence_table(runs.assign(diverged=False)))
    if case in ("nan_fits", "all_fail"):
        sweep = sweep.assign(psi=np.nan)
    if case == "empty":
        sweep = sweep.iloc[:0]
    kinds = ["boot", "bootrp"] if case == "kind_absent" else None
    figures = _draw_all(cells, fits, case_runs, sweep, kinds=kinds)
    for name, fig in figures.items():
        _assert_written(fig, tmp_path / f"{case}_{name}.png")
    for name, text in EDGE_TEXTS[case]:
        shown = " | ".join(_texts(figures[name]))
        assert text in shown, (name, shown)
    residual_lines = _series(figures["residuals"].axes[0])
    if case == "single_cell":  # one cell: one point of one kind
        assert residual_lines == {"BDQN": 1}, residual_lines
    if case == "zero_trials":  # cells without trials drop out of the residuals, the rest stay
        usable = cells[(cells["trials"] > 0)]
        assert residual_lines["BDQN"] == usable[usable["kind"] == "boot"]["ensemble_size"].nunique()
    if case in ("all_fail", "nan_fits", "empty"):
        assert residual_lines == {}, residual_lines


def test_frontier_figures_for_every_sweep_variant(runs, tmp_path):
    cells = convergence_table(runs)
    sweep = pd.concat([cells.assign(variant="default"), cells.assign(variant="rb_size=5000")], ignore_index=True)
    figures = plots.frontier_figures_by_variant(sweep, fit_psi_table(sweep))
    assert list(figures) == ["default", "rb_size=5000"]
    for variant, fig in figures.items():
        _assert_written(fig, tmp_path / f"frontier_{variant}.png")


def test_a_designs_figure_marks_predicted_cells_and_the_round_of_each_cell(runs, tmp_path):
    """Skipped cells show the P the protocol assumed, marked; trained cells show the round that placed them."""
    cells, fits = _tables(convergence_table(runs.assign(diverged=False)))
    cells = cells[cells["kind"] != "eps"].reset_index(drop=True)
    skipped = (cells["hardness"] >= 24) & (cells["ensemble_size"] <= 2)
    cells = cells.assign(
        decision=np.where(skipped, "assumed_unsolved", "trained"),
        p_assumed=np.where(skipped, 0.0, np.nan),
        round=np.where(skipped, np.nan, np.where(cells["hardness"] <= 8, 0, 1)),
    )
    cells.loc[skipped, ["trials", "successes"]] = 0
    cells.loc[skipped, "p_hat"] = np.nan
    fig = plots.plot_frontier_and_heatmaps(cells, fits, caption=CAPTION)
    _assert_written(fig, tmp_path / "design.png")
    texts = " | ".join(_texts(fig))
    assert "predicted, not trained" in texts and "pilot" in texts and "round 1" in texts, texts
    heatmap = fig.axes[0]
    crosses = [c for c in heatmap.collections if c.get_label() == "predicted, not trained"]
    assert len(crosses) == 1 and len(crosses[0].get_offsets()) == int((skipped & (cells["kind"] == "boot")).sum())
