"""The results page: verdict against the published psi, law rejections, cost from provenance."""

import functools
import re

import numpy as np
import pandas as pd
import pytest

from deepsea_scaling import budget, law, results_page, simulate, stats


@functools.lru_cache(maxsize=None)
def _tables(psi_boot, psi_bootrp, seed=0):
    runs = simulate.simulate_runs({"boot": psi_boot, "bootrp": psi_bootrp}, [2, 4, 8, 16], list(range(4, 33, 4)),
                                  trials=32, seed=seed)
    runs["study"], runs["variant"] = "s", "default"
    cells = stats.convergence_table(runs)
    return dict(fits=stats.fit_psi_table(cells, by=stats.FIT_KEYS), comparison=stats.compare_kinds(cells, by=stats.COMPARE_KEYS),
                law_tests=law.law_tests(cells), by_budget=budget.psi_by_budget(runs), cells=cells)


def test_verdict_places_the_published_psi_against_the_interval():
    t = _tables(0.80, 0.87)
    text = results_page.verdict(t["fits"], t["law_tests"])
    assert text.count("inside the interval") == 2, text
    t = _tables(0.70, 0.93)
    text = results_page.verdict(t["fits"])
    psi = [float(x) for x in re.findall(r"ψ = ([0-9.]+) ", text)]
    assert psi == pytest.approx([0.70, 0.93], abs=0.03)
    assert "(published 0.80 ± 0.01: above the interval, the two intervals are disjoint)" in text
    assert "(published 0.87 ± 0.02: below the interval, the two intervals are disjoint)" in text
    fits = t["fits"].assign(psi_quasi_high=lambda f: np.where(f["kind"] == "boot", 0.795, f["psi_quasi_high"]))
    assert "above the interval, the two intervals overlap" in results_page.verdict(fits)


def test_a_status_with_notes_is_still_ok():
    t = _tables(0.80, 0.87)
    fits = t["fits"].assign(status="ok; 419 empty cell(s) left out")
    assert results_page.verdict(fits).count("inside the interval") == 2


def test_law_rejection_is_reported_only_where_an_alternative_wins():
    tests = pd.DataFrame({"kind": ["boot"] * 3 + ["bootrp"] * 3, "variant": "default",
                          "model": ["law", "effective_k", "psi_drift"] * 2, "status": "ok; a note",
                          "f_p_value": [np.nan, 0.001, 0.3, np.nan, 0.2, 0.4]})
    assert results_page.law_rejections(tests) == ["BDQN (effective_k, quasi-F p 0.001)"]


def test_busy_hours_is_the_union_of_job_spans():
    jobs = [dict(finished_utc="2026-01-01T00:10:00+00:00", process_seconds=600),   # 00:00-00:10
            dict(finished_utc="2026-01-01T00:15:00+00:00", process_seconds=600),   # 00:05-00:15 overlaps
            dict(finished_utc="2026-01-02T00:30:00+00:00", wall_seconds=1800)]     # a day later, 30 min
    cost = results_page.cost_summary(jobs)
    assert cost["busy_hours"] == pytest.approx((15 + 30) / 60)
    assert cost["jobs"] == 3


def test_page_has_every_section_and_the_published_figures():
    t = _tables(0.80, 0.87)
    prov = [dict(finished_utc="2026-01-01T00:10:00+00:00", started_utc="2026-01-01T00:00:10+00:00",
                 process_seconds=600, run_seconds=500, compile_seconds=60, batched_runs=8,
                 host=dict(cpu_model="Some CPU", cpu_count="2"), jax_backend="cpu")]
    page = results_page.results_markdown("s", episodes=50_000, fidelity="reference", design="frontier",
                                         decisions=None, provenance=prov, figures=["psi_by_budget.png"],
                                         tables=["psi_fit.csv"], **t)
    for heading in ("## ψ per kind", "## The kinds compared", "## Law tests", "## ψ by budget", "## Design and cost",
                    "## Figures", "## Data"):
        assert heading in page
    assert "0.80 ± 0.01" in page and "(4.1)" in page and "(0.69)" in page
    assert "Some CPU (2 cores): 1 jobs" in page and "0.17 hours" in page
