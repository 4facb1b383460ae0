"""ψ against the training budget: the truncation it rests on (on the engine), the table, the figure, the rules."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest

from deepsea_scaling import budget as B
from deepsea_scaling import stats
from deepsea_scaling.config import TrainConfig
from deepsea_scaling.simulate import simulate_runs

from conftest import run_snakemake


# ------------------------------------------- THE TRUNCATION, ON THE ENGINE
SHORT, LONG = 210, 1200  # budgets; at n = 4 a run of 210 episodes records 192 (`recorded_episodes`)


def _engine_runs(fidelity: str, budget: int, seeds: int, monkeypatch) -> pd.DataFrame:
    """boot and bootrp (one program) trained with `budget`, every seed keyed as in the LONG run."""
    from deepsea_scaling import engine

    seed_keys = engine.seed_keys
    # The key of a seed derives from the config hash, which includes num_episodes: give both budgets the
    # keys of the long run, so that the short run is the long run's beginning if nothing else depends on it.
    monkeypatch.setattr(engine, "seed_keys", lambda c, s: seed_keys(dataclasses.replace(c, num_episodes=LONG), s))
    configs = [TrainConfig(kind=kind, ensemble_size=4, hardness=4, num_episodes=budget, rb_size=1000,
                           learning_starts=500, num_log_points=4, num_probe_states=16, fidelity=fidelity)
               for kind in B.BUDGET_FREE_KINDS]
    results = engine.train_batch([(c, range(seeds)) for c in configs])
    frames = []
    for config, result in zip(configs, results):
        m = {k: v for k, v in result.metrics.items() if k != "diversity"}
        frames.append(pd.DataFrame({**config.to_dict(), **m, "seed": np.arange(seeds)}))
    return pd.concat(frames, ignore_index=True)


@pytest.mark.slow
@pytest.mark.parametrize("fidelity", ["default", "reference"])
def test_a_run_of_a_smaller_budget_is_the_beginning_of_a_longer_one(fidelity, monkeypatch):
    """Same key, budgets 210 and 1200: the short run discovers iff the long one did within the episodes
    the short one records, at the same episode; `truncate_runs` of the long table is the short table."""
    short = _engine_runs(fidelity, SHORT, 8, monkeypatch)
    long = _engine_runs(fidelity, LONG, 8, monkeypatch)
    assert not short["diverged"].any() and not long["diverged"].any()
    for table, budget in ((short, SHORT), (long, LONG)):  # the engine's count of episodes is the formula's
        expected = B.recorded_episodes(budget, 4, table["num_envs"], table["learning_starts"], True)
        np.testing.assert_array_equal(table["total_episodes"], expected)
    recorded = int(short["total_episodes"].iloc[0])
    assert recorded == 192 < SHORT  # 210 * 4 // 24 = 35 learning steps: 8 whole episodes per env
    etd = long["episodes_to_discovery"]
    early = long["discovered"] & (etd <= recorded)
    late = long["discovered"] & (etd > recorded)
    assert early.any() and late.any(), etd.tolist()  # the test can fail both ways
    np.testing.assert_array_equal(short["discovered"], early)
    np.testing.assert_array_equal(short.loc[early, "episodes_to_discovery"], etd[early])
    cut = B.truncate_runs(long, SHORT)
    for column in ("discovered", "episodes_to_discovery", "all_members_discovered", "episodes_to_all_members",
                   "total_episodes", "num_episodes"):
        np.testing.assert_array_equal(cut[column].to_numpy(), short[column].to_numpy(), err_msg=column)


@pytest.mark.parametrize("overrides", [
    {}, {"hardness": 6}, {"hardness": 7, "learning_starts": 530}, {"num_envs": 8, "hardness": 5},
    {"warmup": "inside"}, {"warmup": "inside", "hardness": 6, "num_episodes": 1000},
    {"fidelity": "reference", "hardness": 9, "learning_starts": 10_000, "rb_size": 10_000},
])
def test_recorded_episodes_counts_the_engines_steps(overrides):
    """The formula against TrainConfig's step accounting: the envs step in lockstep, episodes last n steps,
    and only the learning steps are logged under the outside warm-up (all steps under the inside one)."""
    cfg = TrainConfig(**{"num_episodes": 400, "hardness": 4, "rb_size": 1000, "learning_starts": 500, **overrides})
    n, steps, warm = cfg.hardness, cfg.num_vector_steps, cfg.warmup_steps
    per_env = (steps // n - warm // n) if cfg.warmup_outside else steps // n
    got = B.recorded_episodes(cfg.num_episodes, n, cfg.num_envs, cfg.learning_starts, cfg.warmup_outside)
    assert int(got) == cfg.num_envs * per_env
    assert abs(int(got) - cfg.num_episodes) < cfg.num_envs  # within one episode per env of the budget


# ------------------------------------------------------------ THE LADDER
def test_the_default_ladder_is_geometric_and_ends_at_the_study_budget():
    ladder = B.budget_ladder(3000)
    assert ladder == [94, 140, 200, 300, 440, 640, 940, 1400, 2000, 3000]
    assert B.budget_ladder(50_000)[0] == 1600 and B.budget_ladder(50_000)[-1] == 50_000
    for top in (1, 7, 400, 12_345):
        ladder = B.budget_ladder(top)
        assert ladder[-1] == top and ladder == sorted(set(ladder)) and ladder[0] >= 1 and len(ladder) <= 10
        ratios = np.diff(np.log(ladder))
        assert top < 100 or (ratios.min() > 0.25 and ratios.max() < 0.5)  # about 32^(1/9) = 1.47 apart


# ---------------------------------------------------------- THE ψ TABLE
PSI_AT = {300: 0.55, 1000: 0.7, 3000: 0.8}  # ψ the synthetic runs obey exactly at each budget
KS, NS, SEEDS = (2, 4, 8), tuple(range(3, 13)), 40


def _law_runs(kind: str = "boot", num_envs: int = 24, learning_starts: int = 500) -> tuple[pd.DataFrame, dict]:
    """Runs of budget 3,000 whose discoveries within budget b number round(SEEDS * P(ψ_b, K, n)) per cell.

    A cell's extra discoveries between two budgets sit at episodes just past the smaller budget's recorded
    episodes and, one each, exactly on the larger one's (the boundary counts). Returns (runs, {budget: cells})."""
    rows, cells = [], {b: [] for b in PSI_AT}
    budgets = sorted(PSI_AT)
    for K in KS:
        for n in NS:
            recorded = {b: int(B.recorded_episodes(b, n, num_envs, learning_starts, True)) for b in budgets}
            counts = {b: int(round(SEEDS * float(stats.predicted_probability(PSI_AT[b], K, n)))) for b in budgets}
            etd = np.full(SEEDS, np.nan)
            start, previous = 0, 0
            for b in budgets:
                new = counts[b] - start
                assert new >= 0
                etd[start:start + new] = np.linspace(previous + 1, recorded[b], max(new, 1))[:new]
                start, previous = counts[b], recorded[b]
                cells[b].append(dict(ensemble_size=K, hardness=n, successes=counts[b], trials=SEEDS))
            for seed in range(SEEDS):
                rows.append(dict(study="s", variant="default", kind=kind, ensemble_size=K, hardness=n, seed=seed,
                                 members=K, num_episodes=3000, num_envs=num_envs, learning_starts=learning_starts,
                                 warmup="outside", env_name="DeepSea-bsuite", discovered=bool(np.isfinite(etd[seed])),
                                 episodes_to_discovery=etd[seed], diverged=False,
                                 total_episodes=recorded[3000]))
    return pd.DataFrame(rows), {b: pd.DataFrame(c) for b, c in cells.items()}


def test_each_budget_fits_the_cells_its_runs_would_have_given():
    """Synthetic runs built so that the cells at each budget are known: every row is fit_psi of those cells,
    and ψ is the one the counts were drawn from (up to the rounding of the counts)."""
    runs, cells = _law_runs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no case to report: every budget fits
        table = B.psi_by_budget(runs, budgets=sorted(PSI_AT))
    assert table["budget"].tolist() == sorted(PSI_AT) and table["study_budget"].tolist() == [False, False, True]
    for row in table.itertuples():
        expected = stats.fit_psi(cells[row.budget]).iloc[0]
        for column in ("psi", "psi_quasi_low", "psi_quasi_high", "dispersion", "n_cells", "n_runs", "status"):
            assert getattr(row, column) == expected[column], (row.budget, column)
        assert row.discoveries == cells[row.budget]["successes"].sum()
        assert abs(row.psi - PSI_AT[row.budget]) < 0.01
        assert row.psi_quasi_low < row.psi < row.psi_quasi_high


def test_one_episode_past_the_recorded_ones_is_not_discovered_within_the_budget():
    runs, _ = _law_runs()
    cut = B.truncate_runs(runs, 1000)
    recorded = B.recorded_episodes(1000, runs["hardness"], 24, 500, True)
    on_edge = runs["episodes_to_discovery"] == recorded
    assert on_edge.any() and cut.loc[on_edge, "discovered"].all()
    past = runs.assign(episodes_to_discovery=np.where(on_edge, recorded + 1, runs["episodes_to_discovery"]))
    assert not B.truncate_runs(past, 1000).loc[on_edge, "discovered"].any()
    assert (cut["num_episodes"] == 1000).all() and (cut["total_episodes"] == recorded).all()
    assert cut.loc[~cut["discovered"], "episodes_to_discovery"].isna().all()


def _study_runs(seed: int = 3) -> pd.DataFrame:
    runs = simulate_runs({"boot": 0.8, "bootrp": 0.87, "eps": 0.6}, (1, 2, 4, 8), range(4, 17, 2), trials=16,
                         seed=seed, diverged_rate=0.02)
    return runs.assign(study="s", variant="default")


def test_at_the_study_budget_each_row_is_psi_fit_and_discoveries_grow_with_the_budget():
    runs = pd.concat([_study_runs(), _study_runs(4).assign(variant="learning_rate=0.001")], ignore_index=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.AnalysisWarning)
        table = B.psi_by_budget(runs)
        fits = stats.fit_psi_table(stats.convergence_table(runs, by=stats.CELL_KEYS), by=stats.FIT_KEYS)
    assert set(table["kind"]) == {"boot", "bootrp"}  # eps left out
    assert set(table["variant"]) == {"default", "learning_rate=0.001"}
    own = table[table["study_budget"]].merge(fits, on=["study", "variant", "kind"], suffixes=("", "_fit"))
    assert len(own) == 4 and (own["budget"] == 3000).all()
    for column in ("psi", "psi_quasi_low", "psi_quasi_high", "dispersion", "dispersion_quasi", "n_cells",
                   "n_runs", "status"):
        pd.testing.assert_series_equal(own[column], own[f"{column}_fit"], check_names=False)
    for _, group in table.groupby(["variant", "kind"]):
        assert group["budget"].tolist() == B.budget_ladder(3000)
        assert group["discoveries"].is_monotonic_increasing and group["n_runs"].nunique() == 1
        ok = group[group["psi"].notna()]
        assert ok["psi"].iloc[-1] > ok["psi"].iloc[0]


def test_a_designs_skipped_cells_are_left_out_as_in_psi_fit():
    runs = _study_runs()
    skipped = (runs["ensemble_size"] == 8) & (runs["hardness"] <= 6)  # a design skipped these cells...
    grid = runs[["study", "variant", "kind", "ensemble_size", "hardness"]].drop_duplicates()
    decisions = grid.assign(decision=np.where((grid["ensemble_size"] == 8) & (grid["hardness"] <= 6),
                                              "assumed_solved", "trained"), round=0)
    runs = runs[~skipped]  # ...so it has no runs of them
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.AnalysisWarning)
        table = B.psi_by_budget(runs, decisions=decisions)
        cells = stats.with_decisions(stats.convergence_table(runs, by=stats.CELL_KEYS), decisions)
        fits = stats.fit_psi_table(cells, by=stats.FIT_KEYS)
    own = table[table["study_budget"]].merge(fits, on=["study", "variant", "kind"], suffixes=("", "_fit"))
    assert len(own) == 2 and own["status"].str.contains("empty cell").all()
    for column in ("psi", "psi_quasi_low", "psi_quasi_high", "n_cells", "status"):
        pd.testing.assert_series_equal(own[column], own[f"{column}_fit"], check_names=False)


def test_tables_with_nothing_to_fit():
    eps_only = _study_runs().query("kind == 'eps'")
    empty = B.psi_by_budget(eps_only)
    assert empty.empty and list(empty.columns) == ["study", "variant", "kind"] + B.BUDGET_COLUMNS
    never = _study_runs().assign(discovered=False, episodes_to_discovery=np.nan, diverged=False)
    with pytest.warns(stats.AnalysisWarning, match="all .* cells failed"):
        table = B.psi_by_budget(never, budgets=[100, 3000, 9000])  # 9000: past the runs' budget, no row
    assert table["budget"].tolist() == [100, 3000, 100, 3000]
    assert table["psi"].isna().all() and table["status"].str.contains("no estimate").all()
    with pytest.raises(ValueError, match="episodes_to_discovery"):
        B.truncate_runs(never.drop(columns="episodes_to_discovery"), 100)


# ------------------------------------------------------------ THE FIGURE
def _colours(png) -> int:
    from PIL import Image

    with Image.open(png) as image:
        return len(image.convert("L").getcolors(maxcolors=1 << 16) or range(1 << 16))


def test_figure_on_simulated_runs(tmp_path):
    from deepsea_scaling import plots

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.AnalysisWarning)
        table = B.psi_by_budget(_study_runs())
    ax = plots.plot_psi_by_budget(table, caption="study s: 3,000 episodes per run")
    labels = ax.get_legend_handles_labels()[1]
    assert {"BDQN", "RP-BDQN", "this study's budget"} <= set(labels)
    assert sum("published (50,000 episodes)" in label for label in labels) == 2
    assert ax.get_xscale() == "log" and ax.get_xlim()[1] > B.PUBLISHED_BUDGET
    written = plots.save_figure(ax.figure, tmp_path / "psi_by_budget.png")
    assert [p.suffix for p in written] == [".png", ".pdf"] and _colours(written[0]) > 20


def test_figure_says_what_is_missing(tmp_path):
    from deepsea_scaling import plots

    runs = _study_runs()
    late = runs["episodes_to_discovery"] > 300  # nothing discovered before episode 300 (a slow start)...
    runs = runs.assign(discovered=late, episodes_to_discovery=runs["episodes_to_discovery"].where(late))
    runs.loc[runs["kind"] == "bootrp", "discovered"] = False  # ...and RP-BDQN never
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.AnalysisWarning)
        table = B.psi_by_budget(runs)
    ax = plots.plot_psi_by_budget(table)
    texts = " ".join(t.get_text() for t in ax.texts)
    assert "BDQN: no estimate at 94, 140, 200, 300 episodes (all" in texts  # 300: 288 recorded (n = 4)
    assert "RP-BDQN: no estimate at any budget (all" in texts
    assert _colours(plots.save_figure(ax.figure, tmp_path / "missing.png", pdf=False)[0]) > 20

    ax = plots.plot_psi_by_budget(table.iloc[0:0])
    assert "nothing to show" in " ".join(t.get_text() for t in ax.texts)
    plots.save_figure(ax.figure, tmp_path / "empty.png", pdf=False)


# ------------------------------------------------------------- THE RULES
def test_a_dry_run_of_the_default_study_builds_the_table_and_the_figure(tmp_path):
    from conftest import copy_workflow

    wf = copy_workflow(tmp_path / "wf")
    result = run_snakemake(wf, "-n", "--config", "study=default")
    assert result.returncode == 0, result.output[-3000:]
    counts = result.job_counts()
    assert counts.get("psi_by_budget") == 1 and counts.get("plot_psi_by_budget") == 1, counts
    for path in ("results/default/psi_by_budget.csv", "plots/default/psi_by_budget.png",
                 "plots/default/psi_by_budget.pdf"):
        assert path in result.output, path
