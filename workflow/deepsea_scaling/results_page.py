"""A study's results page: its fits, kind comparison, law tests and cost beside the published figures.

`results_markdown` turns a study's tables (the workflow's outputs) and its
training jobs' provenance into one Markdown page; `verdict` is its one-sentence
summary. Rule `results_page` writes the page, with copies of the figures and
tables, to docs/results/<study>/ (docs/INTERFACES.md).
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from . import law
from .published import PUBLISHED, PUBLISHED_EPISODES
from .stats import status_ok

KIND_NAMES = {"boot": "BDQN", "bootrp": "RP-BDQN", "eps": "ε-greedy DQN"}


def _fmt(x, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}f}"


def _p(x) -> str:
    if x is None or not np.isfinite(x):
        return "–"
    return f"{x:.2g}" if x >= 1e-3 else f"{x:.1e}"




def _default_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The default variant's rows of a table (all rows if it has no variant column)."""
    if "variant" in table.columns:
        table = table[table["variant"].fillna("default") == "default"]
    return table


def verdict(fits: pd.DataFrame, law_tests: pd.DataFrame | None = None, episodes: int = PUBLISHED_EPISODES) -> str:
    """One sentence: each kind's psi and quasi 95% interval against the published value, and the law's status."""
    parts = []
    for row in _default_rows(fits).itertuples():
        paper = PUBLISHED.get(row.kind)
        if paper is None or not status_ok(row.status):
            continue
        low, high = row.psi_quasi_low, row.psi_quasi_high
        where = ("inside" if low <= paper.psi <= high else "above" if paper.psi > high else "below")
        overlap = "" if where == "inside" else (
            ", the two intervals overlap" if low <= paper.psi + paper.psi_pm and paper.psi - paper.psi_pm <= high
            else ", the two intervals are disjoint")
        parts.append(f"{KIND_NAMES.get(row.kind, row.kind)} ψ = {row.psi:.3f} [{low:.3f}, {high:.3f}] "
                     f"(published {paper.psi:.2f} ± {paper.psi_pm:.2f}: {where} the interval{overlap})")
    if not parts:
        return "No kind has a psi estimate yet."
    text = f"At {episodes:,} episodes, " + "; ".join(parts) + "."
    rejected = law_rejections(law_tests) if law_tests is not None else []
    if rejected:
        text += " The law itself is rejected for " + ", ".join(rejected) + " (see the law tests)."
    return text


def law_rejections(law_tests: pd.DataFrame, level: float = 0.05) -> list[str]:
    """Kinds whose one-parameter law an alternative beats (quasi-F p < level; `law.rejections`)."""
    verdicts = law.rejections(_default_rows(law_tests), by=["kind"], level=level)
    verdicts = verdicts[law.is_rejected(verdicts["law_rejected"])]
    return [f"{KIND_NAMES.get(v.kind, v.kind)} ({v.law_alternative}, quasi-F p {_p(v.law_f_p_value)})"
            for v in verdicts.itertuples()]


def _machine(host: Mapping) -> str:
    if "cpu_model" in host:
        return f"{host['cpu_model']} ({host.get('cpu_count', '?')} cores)"
    return f"{host.get('processor', 'a')} CPU (model not recorded by these jobs)"


def _busy_hours(jobs: Sequence[Mapping]) -> float:
    """Hours in which at least one job ran: the union of the jobs' [start, finish] spans (a study run
    in parts has gaps between them, left out)."""
    spans = []
    for j in jobs:
        if not j.get("finished_utc"):
            continue
        end = pd.Timestamp(j["finished_utc"])
        seconds = j.get("process_seconds", j.get("wall_seconds", 0.0))
        spans.append((end - pd.Timedelta(seconds=seconds), end))
    total, reach = 0.0, None
    for start, end in sorted(spans):
        if reach is None or start > reach:
            total += (end - start).total_seconds()
            reach = end
        elif end > reach:
            total += (end - reach).total_seconds()
            reach = end
    return total / 3600


def cost_summary(provenance: Iterable[Mapping]) -> dict:
    """Jobs, job-hours (start-up, compile and training), the machines and elapsed spans from the jobs' provenance."""
    jobs = list(provenance)
    if not jobs:
        return dict(jobs=0)
    wall = [j.get("process_seconds", j.get("wall_seconds", 0.0)) for j in jobs]
    machines = Counter(_machine(j.get("host", {})) for j in jobs)
    starts = sorted(j["started_utc"] for j in jobs if j.get("started_utc"))
    ends = sorted(j["finished_utc"] for j in jobs if j.get("finished_utc"))
    return dict(jobs=len(jobs), runs=sum(j.get("batched_runs", 0) for j in jobs), busy_hours=_busy_hours(jobs),
                job_hours=sum(wall) / 3600, compile_hours=sum(j.get("compile_seconds", 0.0) for j in jobs) / 3600,
                train_hours=sum(j.get("run_seconds", 0.0) for j in jobs) / 3600,
                machines=dict(machines), first=starts[0] if starts else "", last=ends[-1] if ends else "",
                backends=dict(Counter(j.get("jax_backend", "?") for j in jobs)))


def results_markdown(study: str, *, episodes: int, fidelity: str, design: str, fits: pd.DataFrame,
                     comparison: pd.DataFrame, law_tests: pd.DataFrame, by_budget: pd.DataFrame,
                     cells: pd.DataFrame, decisions: pd.DataFrame | None, provenance: Sequence[Mapping],
                     figures: Sequence[str], tables: Sequence[str]) -> str:
    """The whole page (Markdown). `figures` and `tables` are file names beside the page."""
    fits = _default_rows(fits)
    lines = [f"# Study `{study}`: results", "",
             f"{episodes:,} episodes per run, `--fidelity {fidelity}`, design `{design}`. "
             f"Generated by `snakemake --cores all docs/results/{study}/README.md --config study={study}` "
             "from the study's tables; every number below is in the tables beside this page.", "",
             "**Verdict.** " + verdict(fits, law_tests, episodes), ""]

    lines += ["## ψ per kind, beside the published fit", "",
              "| kind | ψ | quasi 95% | profile 95% | published ψ | dispersion (published) | R² (published) | cells | runs |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in fits.itertuples():
        paper = PUBLISHED.get(r.kind)
        pub = (f"{paper.psi:.2f} ± {paper.psi_pm:.2f}", f"{_fmt(r.dispersion_quasi, 1)} ({paper.dispersion})",
               f"{_fmt(r.r2, 2)} ({paper.r2})") if paper else ("–", _fmt(r.dispersion_quasi, 1), _fmt(r.r2, 2))
        lines.append(f"| {KIND_NAMES.get(r.kind, r.kind)} | {_fmt(r.psi)} | [{_fmt(r.psi_quasi_low)}, "
                     f"{_fmt(r.psi_quasi_high)}] | [{_fmt(r.psi_profile_low)}, {_fmt(r.psi_profile_high)}] | {pub[0]} "
                     f"| {pub[1]} | {pub[2]} | {r.n_cells} | {r.n_runs} |")
    lines += ["", "Dispersion: Pearson χ² per degree of freedom of the law's fit (1 for binomial cells); "
              "the quasi interval widens the profile interval by it. K = 1 cells are left out of the fit, "
              "as in the paper.", ""]

    comparison = _default_rows(comparison)
    if len(comparison):
        lines += ["## The kinds compared", "",
                  "| kinds | ψ each | pooled ψ | LR test p | quasi-F p | dispersion | CMH p (law-free) |",
                  "|---|---|---|---|---|---|---|"]
        for r in comparison.itertuples():
            cmh = getattr(r, "cmh_p_value", np.nan)
            lines.append(f"| {r.kind_a} vs {r.kind_b} | {_fmt(r.psi_a)} / {_fmt(r.psi_b)} | {_fmt(r.psi_pooled)} | "
                         f"{_p(r.p_value)} | {_p(r.f_p_value)} | {_fmt(r.dispersion, 1)} | {_p(cmh)} |")
        lines += [""]

    law_tests = _default_rows(law_tests)
    if len(law_tests):
        lines += ["## Law tests", "",
                  "The law P = 1 − (1 − ψ^n)^K against alternatives that nest it: an effective ensemble size "
                  "K^α (α = 1 is the law) and ψ drifting with n (θ₁ = 0 is the law).", "",
                  "| kind | model | ψ | α [95%] | θ₁ [95%] | ΔAIC | LR p | quasi-F p |", "|---|---|---|---|---|---|---|---|"]
        for r in law_tests.itertuples():
            alpha = "1" if r.model in ("law", "psi_drift") else f"{_fmt(r.alpha, 2)} [{_fmt(r.alpha_low, 2)}, {_fmt(r.alpha_high, 2)}]"
            theta = "0" if r.model in ("law", "effective_k") else f"{_fmt(r.theta1, 3)} [{_fmt(r.theta1_low, 3)}, {_fmt(r.theta1_high, 3)}]"
            lines.append(f"| {KIND_NAMES.get(r.kind, r.kind)} | {r.model} | {_fmt(r.psi)} | {alpha} | {theta} | "
                         f"{_fmt(r.delta_aic, 1)} | {_p(r.p_value)} | {_p(r.f_p_value)} |")
        lines += [""]

    by_budget = _default_rows(by_budget)
    if len(by_budget):
        lines += ["## ψ by budget", "",
                  "The same runs cut at smaller budgets (a run of a budget-free kind that discovered within B "
                  "episodes is a run of budget B that discovered).", "",
                  "| budget | " + " | ".join(KIND_NAMES.get(k, k) for k in sorted(by_budget["kind"].unique())) + " |",
                  "|---|" + "---|" * by_budget["kind"].nunique()]
        wide = by_budget.pivot_table(index="budget", columns="kind", values=["psi", "psi_quasi_low", "psi_quasi_high"],
                                     aggfunc="first")
        for budget in wide.index:
            cols = []
            for kind in sorted(by_budget["kind"].unique()):
                psi = wide.get(("psi", kind), pd.Series(dtype=float)).get(budget, np.nan)
                lo = wide.get(("psi_quasi_low", kind), pd.Series(dtype=float)).get(budget, np.nan)
                hi = wide.get(("psi_quasi_high", kind), pd.Series(dtype=float)).get(budget, np.nan)
                cols.append(f"{_fmt(psi)} [{_fmt(lo)}, {_fmt(hi)}]" if np.isfinite(psi) else "–")
            lines.append(f"| {int(budget):,} | " + " | ".join(cols) + " |")
        lines += [""]

    cells = cells[cells["trials"] > 0]  # a design's convergence table also lists the cells it skipped
    ensemble = cells[cells["ensemble_size"] > 1]
    informative = ((ensemble["p_hat"] > 0.05) & (ensemble["p_hat"] < 0.95)).sum() if len(ensemble) else 0
    lines += ["## Design and cost", "",
              f"{len(cells)} cells trained ({informative} of the {len(ensemble)} ensemble cells between "
              "P = 0.05 and 0.95), K × n ranges: " + ", ".join(
                  f"{KIND_NAMES.get(k, k)} K {int(g.ensemble_size.min())}–{int(g.ensemble_size.max())}, "
                  f"n {int(g.hardness.min())}–{int(g.hardness.max())}, {int(g.trials.sum())} runs"
                  for k, g in cells.groupby("kind")) + "."]
    if decisions is not None and len(decisions):
        counts = decisions["decision"].value_counts().to_dict()
        lines += ["", "The design's decisions per cell: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + "."]
    cost = cost_summary(provenance)
    if cost["jobs"]:
        machines = "; ".join(f"{m}: {n} jobs" for m, n in cost["machines"].items())
        lines += ["", f"{cost['jobs']} training jobs, {cost['runs']} runs: {cost['job_hours']:.2f} job-hours "
                  f"(training {cost['train_hours']:.2f}, compiling {cost['compile_hours']:.2f}), "
                  f"JAX backend {', '.join(cost['backends'])}; machines: {machines}. "
                  f"Wall time with at least one job running: {cost['busy_hours']:.2f} hours "
                  f"(jobs from {cost['first']} to {cost['last']} UTC, run in parts)."]
    lines += [""]

    if figures:
        lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    if tables:
        lines += ["## Data", "", "Beside this page: " + ", ".join(f"[`{t}`]({t})" for t in tables) + ". "
                  "The design's per-job tables are under `results/" + study + "/` in the repository, so the same "
                  "command resumes or reruns only what is missing.", ""]
    return "\n".join(lines)
