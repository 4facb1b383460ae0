"""The figures of a study, drawn from the tables of `stats`.

Every function takes tables (cells from `convergence_table`, fits from
`fit_psi_table`, runs from the engine) and an optional axis or figure, draws
what there is (a note in a panel with no data) and returns the axis or
figure; the caller owns the file (`save_figure`). Agg backend, no LaTeX,
Okabe–Ito colours for kinds and cividis for probabilities, sized for a
paper's column (3.4 in) or page width (7 in).
"""

from __future__ import annotations

import os
import itertools
import warnings
import zlib
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import colors as mcolors  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from . import law  # noqa: E402
from .budget import BUDGET_FREE_KINDS, PUBLISHED, PUBLISHED_BUDGET  # noqa: E402
from .io import atomic_path  # noqa: E402
from .kinds import KINDS  # noqa: E402
from .stats import AnalysisWarning, K1_ONLY_KINDS, frontier_k, predicted_probability  # noqa: E402

COLUMN_WIDTH, PAGE_WIDTH = 3.4, 7.0  # inches
# Okabe & Ito (2008), safe for the common colour-vision deficiencies.
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
KIND_COLORS = {name: kind.colour for name, kind in KINDS.items()}
KIND_LABELS = {name: kind.label for name, kind in KINDS.items()}
KIND_ORDER = tuple(KINDS)
P_LEVELS = (0.05, 0.2, 0.5, 0.8, 0.95)
PROB_CMAP = "cividis"
STYLE = {
    "font.size": 7, "axes.titlesize": 7.5, "axes.labelsize": 7, "xtick.labelsize": 6.5,
    "ytick.labelsize": 6.5, "legend.fontsize": 6.5, "legend.frameon": False, "axes.linewidth": 0.6,
    "xtick.major.width": 0.6, "ytick.major.width": 0.6, "lines.linewidth": 1.0, "lines.markersize": 3,
    "axes.spines.top": False, "axes.spines.right": False, "savefig.dpi": 200,
    "pdf.fonttype": 42, "ps.fonttype": 42, "text.usetex": False,
}


# ----------------------------------------------------------------- HELPERS
def kind_color(kind: str) -> str:
    if kind in KIND_COLORS:
        return KIND_COLORS[kind]
    return OKABE_ITO[2 + zlib.crc32(str(kind).encode()) % 5]


def kind_label(kind: str | None) -> str:
    """The kind's name in figures; "" for None (a table without cells)."""
    return "" if kind is None else KIND_LABELS.get(kind, str(kind))


def _ordered_kinds(kinds) -> list[str]:
    kinds = list(dict.fromkeys(kinds))
    return sorted(kinds, key=lambda k: (KIND_ORDER.index(k) if k in KIND_ORDER else len(KIND_ORDER), str(k)))


def _new_figure(fig: Figure | None, size: tuple[float, float]) -> Figure:
    if fig is None:
        fig = plt.figure(figsize=size, layout="constrained")
    else:
        fig.clear()
    return fig


def _add_caption(fig: Figure, caption: str | None) -> None:
    """A small line at the bottom of the figure, with room kept for it."""
    if not caption:
        return
    fig.text(0.5, 0.008, caption, ha="center", va="bottom", fontsize=6, color="#333333")
    engine = fig.get_layout_engine()
    if engine is not None and hasattr(engine, "set") and "rect" in engine.get():
        engine.set(rect=(0, 0.045, 1, 0.955))


def _note(ax, text: str) -> None:
    """Say in an empty panel why it is empty."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=6.5,
            color="#555555", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _fit_row(fits: pd.DataFrame | None, kind: str) -> pd.Series | None:
    """The fit of `kind` (the `default` variant if fits hold several)."""
    if fits is None or len(fits) == 0:
        return None
    f = fits[fits["kind"] == kind] if "kind" in fits.columns else fits
    if len(f) > 1 and "variant" in f.columns and (f["variant"] == "default").any():
        f = f[f["variant"] == "default"]
    if len(f) > 1:
        warnings.warn(f"plots: {len(f)} fits for kind {kind}; using the first (filter fits by study/variant)",
                      AnalysisWarning, stacklevel=3)
    return f.iloc[0] if len(f) else None


def _has_psi(fit: pd.Series | None) -> bool:
    return fit is not None and pd.notna(fit.get("psi", np.nan))


def _interval(fit: pd.Series, kind: str = "quasi") -> tuple[float, float]:
    """(low, high) of ψ: the quasi interval, else the Wald one."""
    for which in (kind, "wald"):
        lo, hi = fit.get(f"psi_{which}_low", np.nan), fit.get(f"psi_{which}_high", np.nan)
        if pd.notna(lo) and pd.notna(hi):
            return float(lo), float(hi)
    return np.nan, np.nan


def _psi_text(fit: pd.Series | None) -> str:
    if not _has_psi(fit):
        status = "" if fit is None else str(fit.get("status", ""))
        return "ψ: no estimate" + (f" ({_short(status)})" if status else "")
    lo, hi = _interval(fit)
    ci = f" [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else ""
    return f"ψ = {fit['psi']:.3f}{ci}" + _law_text(fit)


def _law_text(fit: pd.Series) -> str:
    """A second line where the law tests reject the law (psi_fit.csv's law_rejected), else ""."""
    if not law.rejected(fit.get("law_rejected", None)):
        return ""
    alpha = fit.get("law_alpha", np.nan)
    what = f"α = {alpha:.2f}, " if pd.notna(alpha) else ""
    return f"\nlaw rejected ({what}quasi-F p {fit.get('law_f_p_value', np.nan):.2g})"


def _short(text: str, n: int = 38) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _cells_of(cells: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Cells of one kind, summed over any remaining key; with trials > 0, or skipped by a design.

    A design's columns carry over: p_assumed (the P assumed for a skipped
    cell) and round (the round that first trained a cell).
    """
    c = cells[cells["kind"] == kind] if "kind" in cells.columns else cells
    designed = "p_assumed" in c.columns
    c = c[(c["trials"] > 0) | (c["p_assumed"].notna() if designed else False)]
    extra = {col: (col, "min") for col in ("p_assumed", "round") if col in c.columns}
    c = c.groupby(["ensemble_size", "hardness"], as_index=False).agg(
        successes=("successes", "sum"), trials=("trials", "sum"), **extra)
    with np.errstate(invalid="ignore", divide="ignore"):
        c["p_hat"] = np.where(c["trials"] > 0, c["successes"] / c["trials"].clip(lower=1), np.nan)
    return c


def save_figure(fig: Figure, path_png: str | os.PathLike, pdf: bool = True, dpi: int = 200) -> list[Path]:
    """Write `fig` as PNG (and PDF beside it) atomically; return the paths written.

    Each file is written to a temporary name in the same folder and moved into
    place with os.replace, so a reader never sees half a file. The PNG is
    exactly figsize × dpi pixels (no tight bounding box).
    """
    path_png = Path(path_png)
    targets = [(path_png, "png")] + ([(path_png.with_suffix(".pdf"), "pdf")] if pdf else [])
    written = []
    for path, fmt in targets:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi)
        written.append(path)
    return written


# ------------------------------------------------ FRONTIER AND HEATMAPS
def _heatmap(ax, c: pd.DataFrame, norm, cmap):
    """P̂ per (n, K); a design's skipped cells show the P it assumed, marked ×."""
    ks = np.sort(c["ensemble_size"].unique())
    ns = np.sort(c["hardness"].unique())
    shown = c["p_hat"].fillna(c["p_assumed"]) if "p_assumed" in c.columns else c["p_hat"]
    grid = (c.assign(shown=shown).pivot(index="ensemble_size", columns="hardness", values="shown")
            .reindex(index=ks, columns=ns))
    ax.set_facecolor("#e6e6e6")  # cells the study did not run
    mesh = ax.pcolormesh(np.arange(len(ns) + 1), np.arange(len(ks) + 1), np.ma.masked_invalid(grid.to_numpy()),
                         cmap=cmap, norm=norm, shading="flat")
    if "p_assumed" in c.columns:
        assumed = c[c["p_assumed"].notna()]
        if len(assumed):
            x = np.searchsorted(ns, assumed["hardness"]) + 0.5
            y = np.searchsorted(ks, assumed["ensemble_size"]) + 0.5
            ax.scatter(x, y, marker="x", s=6, linewidths=0.5, color="#888888", zorder=3,
                       label="predicted, not trained")
            ax.legend(loc="upper right", fontsize=5.5, handletextpad=0.2, borderaxespad=0.2, markerscale=1.5,
                      frameon=True, framealpha=0.85, edgecolor="none")
    step_n = max(1, int(np.ceil(len(ns) / 9)))
    ax.set_xticks(np.arange(len(ns))[::step_n] + 0.5, [str(int(v)) for v in ns[::step_n]])
    step_k = max(1, int(np.ceil(len(ks) / 8)))
    ax.set_yticks(np.arange(len(ks))[::step_k] + 0.5, [str(int(v)) for v in ks[::step_k]])
    ax.set_xlabel("hardness n")
    ax.set_ylabel("ensemble size K")
    for side in ("top", "right"):
        ax.spines[side].set_visible(True)
    return mesh


_ROUND_MARKERS = ("o", "s", "^", "D", "v", "P")
_LEVEL_STYLES = ((0, (1, 1.2)), (0, (3, 1.5)), "-", (0, (6, 1.5, 1, 1.5)), (0, (1, 1, 1, 1, 5, 1)))


def _informative_n(c: pd.DataFrame, fit, p_levels) -> float:
    """Largest n worth showing: past the frontier of the smallest P at the
    largest K every cell is ~0, so the panel zooms to where the law has
    something to say."""
    k_hi = c["ensemble_size"].max()
    n_lo, n_hi = c["hardness"].min(), c["hardness"].max()
    if not _has_psi(fit):
        return n_hi
    n_dense = np.linspace(n_lo, n_hi, 2000)
    beyond = n_dense[frontier_k(fit["psi"], min(p_levels), n_dense) > k_hi * 1.3]
    return min(n_hi, beyond[0] + 0.15 * (beyond[0] - n_lo) + 2) if beyond.size else n_hi


def _frontier_panel(ax, c: pd.DataFrame, fit, norm, cmap, p_levels, legend: bool, n_right: float):
    k_lo, k_hi = c["ensemble_size"].min(), c["ensemble_size"].max()
    n_lo = c["hardness"].min()
    shown = c[(c["hardness"] <= n_right) & c["p_hat"].notna()]
    if "round" in shown.columns and shown["round"].notna().any():  # a design: the round that placed each cell
        for r, part in shown.groupby(shown["round"].fillna(-1).astype(int)):
            ax.scatter(part["hardness"], part["ensemble_size"], c=part["p_hat"], cmap=cmap, norm=norm, s=10,
                       marker=_ROUND_MARKERS[r % len(_ROUND_MARKERS)], edgecolors="#444444", linewidths=0.2,
                       zorder=3, label="pilot" if r == 0 else f"round {r}")
    else:
        ax.scatter(shown["hardness"], shown["ensemble_size"], c=shown["p_hat"], cmap=cmap, norm=norm, s=10,
                   edgecolors="#444444", linewidths=0.2, zorder=3)
    ax.set_yscale("log")
    ax.set_ylim(k_lo / 1.3, k_hi * 1.3)
    ax.set_xlim(n_lo - 1, n_right + 1)
    if _has_psi(fit):
        n_fine = np.linspace(max(n_lo - 1, 1), n_right + 1, 400)
        for p, style in zip(p_levels, itertools.cycle(_LEVEL_STYLES)):
            k = frontier_k(fit["psi"], p, n_fine)
            k = np.where(k >= 1e-3, k, np.nan)
            ax.plot(n_fine, k, color="white", lw=2.2, zorder=4, solid_capstyle="butt")
            ax.plot(n_fine, k, color="black", lw=1.0, ls=style, zorder=5, label=f"P = {p:g}")
        if legend:
            ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), title="fitted\nfrontier", fontsize=6,
                      title_fontsize=6, handlelength=2.4, borderaxespad=0)
    ks = np.sort(c["ensemble_size"].unique())
    ax.set_yticks(ks, [str(int(k)) for k in ks])
    ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    if len(ks) > 8:
        for lab in ax.get_yticklabels()[1::2]:
            lab.set_visible(False)
    ax.set_xlabel("hardness n")
    ax.set_ylabel("ensemble size K")


def plot_frontier_and_heatmaps(cells: pd.DataFrame, fits: pd.DataFrame | None, kinds: Sequence[str] | None = None,
                               fig: Figure | None = None, *, p_levels: Sequence[float] = P_LEVELS,
                               caption: str | None = None, title: str | None = None) -> Figure:
    """Top row: heatmap of P̂ over (n, K) per kind; bottom row: the cells coloured
    by P̂ with the fitted iso-probability frontiers K(n) for `p_levels`.

    cells: convergence table of one study and variant (kind, ensemble_size,
    hardness, successes, trials); fits: `fit_psi_table` rows (kind, psi and
    intervals). kinds: the panels; by default the kinds with K > 1 cells
    (boot, bootrp), or all kinds when none has K > 1. A kind with no cells gets
    a panel saying so.
    """
    with plt.rc_context(STYLE):
        if kinds is None:
            have = cells[cells["trials"] > 0] if len(cells) else cells
            multi = have[have["ensemble_size"] > 1]["kind"].unique() if len(have) else []
            kinds = _ordered_kinds(multi if len(multi) else have["kind"].unique() if len(have) else [])
        kinds = list(kinds) or [None]
        width = min(PAGE_WIDTH, 0.4 + 3.3 * len(kinds))
        fig = _new_figure(fig, (width, 4.6))
        axes = fig.subplots(2, len(kinds), squeeze=False)
        norm, cmap = mcolors.Normalize(0, 1), PROB_CMAP
        mesh = None
        # One n range for all bottom panels, so the kinds compare at a glance.
        n_right = max([_informative_n(_cells_of(cells, k), _fit_row(fits, k), p_levels)
                       for k in kinds if len(cells) and len(_cells_of(cells, k))] or [np.nan])
        drawn = [k for k in kinds if len(cells) and len(_cells_of(cells, k)) and _has_psi(_fit_row(fits, k))]
        for j, kind in enumerate(kinds):
            c = _cells_of(cells, kind) if len(cells) else cells
            fit = _fit_row(fits, kind)
            top, bottom = axes[0, j], axes[1, j]
            top.set_title(f"{kind_label(kind)}\n{_psi_text(fit)}")
            if len(c) == 0:
                _note(top, f"no cells for {kind_label(kind)}" if kind else "no cells in the table")
                _note(bottom, "nothing to fit")
                continue
            mesh = _heatmap(top, c, norm, cmap)
            _frontier_panel(bottom, c, fit, norm, cmap, p_levels, legend=bool(drawn) and kind == drawn[-1],
                            n_right=n_right)
        if mesh is not None:
            fig.colorbar(mesh, ax=axes[0, :].tolist(), label="P(discovery)", aspect=15, pad=0.02)
        if title:
            fig.suptitle(title, fontsize=8)
        _add_caption(fig, caption)
    return fig


def frontier_figures_by_variant(cells: pd.DataFrame, fits: pd.DataFrame, **kwargs) -> dict[str, Figure]:
    """`plot_frontier_and_heatmaps` for every `variant` of a sweep: {variant: Figure}."""
    out = {}
    for variant in _variant_order(cells["variant"].unique()):
        f = fits[fits["variant"] == variant] if "variant" in fits.columns else fits
        out[variant] = plot_frontier_and_heatmaps(cells[cells["variant"] == variant], f,
                                                  title=f"variant: {variant}", **kwargs)
    return out


# ------------------------------------------------------------- RESIDUALS
def plot_residuals(res: pd.DataFrame, ax=None, *, caption: str | None = None):
    """Mean ± sd of (predicted − observed) P per K, one series per kind.

    res: `stats.residuals_by_k` of one study and variant (results/<study>/residuals.csv).
    Returns the axis.
    """
    with plt.rc_context(STYLE):
        if ax is None:
            fig = plt.figure(figsize=(COLUMN_WIDTH, 2.4), layout="constrained")
            ax = fig.subplots()
        if len(res) == 0:
            _note(ax, "no residuals: no cell has a fitted ψ")
        else:
            kinds = _ordered_kinds(res["kind"].unique()) if "kind" in res.columns else [None]
            offsets = np.linspace(-0.04, 0.04, len(kinds)) if len(kinds) > 1 else [0.0]
            for kind, off in zip(kinds, offsets):
                r = res[res["kind"] == kind] if kind is not None else res
                x = r["ensemble_size"].to_numpy(float) * 10**off  # small shift on the log axis
                ax.errorbar(x, r["mean_residual"], yerr=r["sd_residual"].fillna(0), fmt="o-", ms=3, lw=0.9,
                            capsize=1.5, elinewidth=0.6, color=kind_color(kind), label=kind_label(kind))
            ax.axhline(0, color="#777777", lw=0.6, ls="--", zorder=0)
            ax.set_xscale("log")
            ks = np.sort(res["ensemble_size"].unique())
            ax.set_xticks(ks, [str(int(k)) for k in ks])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.set_xlabel("ensemble size K")
            ax.set_ylabel("predicted − observed P")
            ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(kinds), borderaxespad=0.2)
        _add_caption(ax.figure, caption)
    return ax


# -------------------------------------------------------------- COLLAPSE
def plot_collapse(runs: pd.DataFrame, critical_region: Mapping[str, float], fig: Figure | None = None, *,
                  caption: str | None = None) -> Figure:
    """Q-diversity over training, runs that discovered vs those that did not.

    runs: run table with kind, ensemble_size, hardness, discovered, diversity
    (a list of floats per run); critical_region: {n_min, n_max, k_min, k_max}.
    One panel per kind with K > 1; median line and interquartile band per
    group; log y. Diverged runs count as not discovered; values ≤ 0 or
    non-finite are left out (log axis).
    """
    with plt.rc_context(STYLE):
        r = critical_region
        sel = runs[(runs["hardness"] >= r["n_min"]) & (runs["hardness"] <= r["n_max"])
                   & (runs["ensemble_size"] >= r["k_min"]) & (runs["ensemble_size"] <= r["k_max"])]
        sel = sel[~sel["kind"].isin(K1_ONLY_KINDS)]
        kinds = _ordered_kinds(sel["kind"].unique()) or [None]
        fig = _new_figure(fig, (min(PAGE_WIDTH, 0.3 + 2.6 * len(kinds)), 2.3))
        axes = fig.subplots(1, len(kinds), squeeze=False, sharey=True)[0]
        region = f"{r['n_min']:g} ≤ n ≤ {r['n_max']:g}, {r['k_min']:g} ≤ K ≤ {r['k_max']:g}"
        for ax, kind in zip(axes, kinds):
            k_runs = sel[sel["kind"] == kind]
            ax.set_title(f"{kind_label(kind)}")
            if len(k_runs) == 0:
                _note(ax, f"no runs in the critical region\n{region}")
                continue
            ok = k_runs["discovered"].fillna(False).astype(bool)
            if "diverged" in k_runs.columns:
                ok &= ~k_runs["diverged"].fillna(False).astype(bool)
            drawn = False
            for group, mask, color in (("discovered", ok, OKABE_ITO[2]), ("not discovered", ~ok, OKABE_ITO[3])):
                curves = [np.asarray(d, float) for d in k_runs.loc[mask, "diversity"] if d is not None]
                curves = [d for d in curves if d.size]
                if not curves:
                    continue
                length = max(len(d) for d in curves)
                arr = np.full((len(curves), length), np.nan)
                for i, d in enumerate(curves):
                    arr[i, : len(d)] = d
                arr[~np.isfinite(arr) | (arr <= 0)] = np.nan
                if np.isnan(arr).all():
                    continue
                x = (np.arange(length) + 1) / length
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    q25, q50, q75 = np.nanpercentile(arr, [25, 50, 75], axis=0)
                ax.fill_between(x, q25, q75, color=color, alpha=0.25, lw=0)
                ax.plot(x, q50, color=color, lw=1.2, label=f"{group} ({len(curves)})")
                drawn = True
            if not drawn:
                _note(ax, "no positive Q-diversity values")
                continue
            ax.set_yscale("log")
            ax.set_xlim(0, 1)
            ax.set_xlabel("fraction of training")
            ax.legend(loc="lower left")
        axes[0].set_ylabel("Q-diversity (sd across members)")
        fig.suptitle(f"critical region: {region}", fontsize=7)
        _add_caption(fig, caption)
    return fig


# ------------------------------------------------- HYPERPARAMETER SWEEP
def _variant_order(variants) -> list[str]:
    """'default' first, then grouped by hyperparameter and sorted by value."""
    def key(v):
        if v == "default":
            return (0, "", 0.0, "")
        name, _, value = str(v).partition("=")
        try:
            return (1, name, float(value), "")
        except ValueError:
            return (1, name, np.inf, value)
    return sorted(dict.fromkeys(variants), key=key)


def plot_hyperparameter_sweep(fits: pd.DataFrame, ax=None, *, interval: str = "quasi", caption: str | None = None):
    """ψ with its interval per hyperparameter variant (rows) and kind (colours); dashed: the default variant's ψ.

    fits: `fit_psi_table` rows with columns variant, kind, psi and
    psi_{interval}_low/high. Variants without an estimate are marked
    "no estimate". Returns the axis.
    """
    with plt.rc_context(STYLE):
        variants = _variant_order(fits["variant"].unique()) if len(fits) and "variant" in fits.columns else []
        if ax is None:
            fig = plt.figure(figsize=(COLUMN_WIDTH, 0.9 + 0.28 * max(len(variants), 3)), layout="constrained")
            ax = fig.subplots()
        if not variants:
            _note(ax, "no fits to show")
            _add_caption(ax.figure, caption)
            return ax
        kinds = _ordered_kinds(fits["kind"].unique())
        offsets = np.linspace(-0.18, 0.18, len(kinds)) if len(kinds) > 1 else [0.0]
        y_of = {v: i for i, v in enumerate(variants)}
        for kind, off in zip(kinds, offsets):
            f = fits[fits["kind"] == kind]
            base = f[f["variant"] == "default"]
            if len(base) and _has_psi(base.iloc[0]):  # the baseline's psi: how far each variant moves it
                ax.axvline(base.iloc[0]["psi"], color=kind_color(kind), lw=0.6, ls="--", alpha=0.6)
            for _, row in f.iterrows():
                y = y_of[row["variant"]] + off
                if not _has_psi(row):
                    ax.text(1.0, y, "no estimate ", transform=ax.get_yaxis_transform(), ha="right", va="center",
                            fontsize=5.5, color=kind_color(kind))
                    continue
                lo, hi = _interval(row, interval)
                xerr = [[row["psi"] - lo], [hi - row["psi"]]] if np.isfinite(lo) else None
                ax.errorbar(row["psi"], y, xerr=xerr, fmt="o", ms=3, capsize=1.5, elinewidth=0.8,
                            color=kind_color(kind))
            ax.plot([], [], "o", ms=3, color=kind_color(kind), label=kind_label(kind))
        ax.set_yticks(range(len(variants)), [str(v).replace("=", " = ") for v in variants])
        ax.set_ylim(len(variants) - 0.5, -0.5)
        ax.set_xlabel(f"ψ ({interval} 95% interval)")
        ax.grid(axis="x", lw=0.3, color="#dddddd")
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(kinds), borderaxespad=0.2)
        _add_caption(ax.figure, caption)
    return ax


# ------------------------------------------------- PROBABILITY VS n
def plot_probability_vs_n(cells: pd.DataFrame, fits: pd.DataFrame | None, fig: Figure | None = None, *,
                          kinds: Sequence[str] | None = None, caption: str | None = None) -> Figure:
    """P̂ against n for every K (points with Wilson intervals, coloured by K)
    and the fitted law's curves over them, one panel per kind with K > 1; the
    `eps` cells and their fitted P = ψ^n in grey in every panel as baseline.
    """
    with plt.rc_context(STYLE):
        have = cells[cells["trials"] > 0] if len(cells) else cells
        if kinds is None:
            kinds = _ordered_kinds(k for k in have["kind"].unique() if k not in K1_ONLY_KINDS) if len(have) else []
        kinds = list(kinds) or [None]
        fig = _new_figure(fig, (min(PAGE_WIDTH, 0.6 + 3.0 * len(kinds)), 2.6))
        axes = fig.subplots(1, len(kinds), squeeze=False, sharey=True)[0]
        all_k = np.sort(have[~have["kind"].isin(K1_ONLY_KINDS)]["ensemble_size"].unique()) if len(have) else []
        cmap = plt.get_cmap("viridis", max(len(all_k), 1))
        k_index = {k: i for i, k in enumerate(all_k)}
        # Where the law (or, without a fit, the data) is ~0 for every K, every
        # point sits at 0: all panels zoom to the same informative n range.
        n_right = max([_informative_n(_cells_of(have, k), _fit_row(fits, k), (0.01,))
                       for k in kinds if len(have) and len(_cells_of(have, k))] or [np.nan])
        baseline = {k: _cells_of(have, k) for k in K1_ONLY_KINDS if len(have) and (have["kind"] == k).any()}
        for ax, kind in zip(axes, kinds):
            c = _cells_of(have, kind) if len(have) else have
            fit = _fit_row(fits, kind)
            ax.set_title(f"{kind_label(kind)}\n{_psi_text(fit)}")
            if len(c) == 0:
                _note(ax, f"no cells for {kind_label(kind)}" if kind else "no cells in the table")
                continue
            n_lo = c["hardness"].min()
            ax.set_xlim(n_lo - 1, n_right + 1)
            c = c[c["hardness"] <= n_right + 1]
            n_fine = np.linspace(n_lo, n_right + 1, 300)
            for k, ck in c.groupby("ensemble_size"):
                col = cmap(k_index.get(k, 0))
                lo, hi = _wilson(ck)
                ax.errorbar(ck["hardness"], ck["p_hat"], yerr=[ck["p_hat"] - lo, hi - ck["p_hat"]], fmt="o",
                            ms=2, elinewidth=0.4, capsize=0, color=col, ecolor=(*col[:3], 0.3))
                if _has_psi(fit):
                    ax.plot(n_fine, predicted_probability(fit["psi"], k, n_fine), color=col, lw=0.9)
            for bkind, bc in baseline.items():
                bfit = _fit_row(fits, bkind)
                bc = bc[bc["hardness"] <= n_right + 1]
                ax.plot(bc["hardness"], bc["p_hat"], "s", ms=2.5, color=kind_color(bkind), mfc="white", mew=0.7,
                        label=f"{kind_label(bkind)} (K = 1)")
                if _has_psi(bfit):
                    nb = np.linspace(n_lo, n_right + 1, 200)
                    ax.plot(nb, predicted_probability(bfit["psi"], 1, nb), color=kind_color(bkind), lw=0.9,
                            ls="--", label=f"{kind_label(bkind)} fit, ψ = {bfit['psi']:.3f}")
            ax.set_xlabel("hardness n")
            ax.set_ylim(-0.03, 1.03)
            if baseline:
                ax.legend(loc="upper right", fontsize=5.5)
        axes[0].set_ylabel("P(discovery)")
        if len(all_k):
            bounds = np.arange(len(all_k) + 1) - 0.5
            sm_ = matplotlib.cm.ScalarMappable(mcolors.BoundaryNorm(bounds, cmap.N), cmap)
            cb = fig.colorbar(sm_, ax=axes.tolist(), label="ensemble size K", aspect=30, pad=0.02)
            step = max(1, int(np.ceil(len(all_k) / 10)))
            cb.set_ticks(np.arange(len(all_k))[::step], labels=[str(int(k)) for k in all_k[::step]])
            cb.ax.minorticks_off()
        _add_caption(fig, caption)
    return fig


def _wilson(c: pd.DataFrame):
    from .stats import wilson_interval

    return wilson_interval(c["successes"].to_numpy(), c["trials"].to_numpy())


# ------------------------------------------------------------- LAW TESTS
LAW_MODEL_STYLES = {
    "effective_k": dict(color=OKABE_ITO[2], ls="-", label="effective K (α)"),
    "psi_drift": dict(color=OKABE_ITO[3], ls="--", label="ψ drifts with n (θ1)"),
    "both": dict(color=OKABE_ITO[4], ls=":", label="both"),
}


def _law_test_text(tests: pd.DataFrame | None, kind) -> str:
    if tests is None or len(tests) == 0:
        return ""
    t = tests[tests["kind"] == kind] if "kind" in tests.columns else tests
    t = t.set_index("model")
    parts = []
    for model, name in (("effective_k", "alpha"), ("psi_drift", "theta1")):
        if model in t.index and np.isfinite(t.loc[model, name]):
            r = t.loc[model]
            symbol = "α" if name == "alpha" else "θ1"
            parts.append(f"{symbol} = {r[name]:.2f} [{r[name + '_low']:.2f}, {r[name + '_high']:.2f}], "
                         f"F p = {r['f_p_value']:.2g}")
    return "\n".join(parts)


def plot_law_tests(residuals: pd.DataFrame, tests: pd.DataFrame | None = None, fig: Figure | None = None, *,
                   caption: str | None = None) -> Figure:
    """The law's residuals by K (top row) and by n (bottom row), per kind, with each alternative's prediction.

    residuals: `law.law_residuals` (model "observed": mean ± sd of P_law −
    P_observed per value; an alternative: mean of P_law − P_model, which
    follows the points where the alternative explains the misfit); tests:
    `law.law_tests` rows (α and θ1 with intervals and F p-values in the
    titles). Returns the figure.
    """
    with plt.rc_context(STYLE):
        kinds = [*(residuals["kind"] if "kind" in residuals.columns else []),
                 *(tests["kind"] if tests is not None and "kind" in tests.columns else [])]
        kinds = _ordered_kinds(kinds) or [None]  # a kind without a fit gets a panel with a note
        fig = _new_figure(fig, (min(PAGE_WIDTH, 0.8 + 3.0 * len(kinds)), 4.6))
        axes = fig.subplots(2, len(kinds), squeeze=False)
        for j, kind in enumerate(kinds):
            r = residuals[residuals["kind"] == kind] if kind is not None and len(residuals) else residuals
            for i, (axis, xlabel) in enumerate((("ensemble_size", "ensemble size K"), ("hardness", "hardness n"))):
                ax = axes[i, j]
                if i == 0:
                    ax.set_title(f"{kind_label(kind) if kind is not None else ''}\n{_law_test_text(tests, kind)}")
                ra = r[r["axis"] == axis] if len(r) else r
                if len(ra) == 0:
                    _note(ax, "no residuals: the law has no fit (see law_tests.csv status)")
                    continue
                obs = ra[ra["model"] == "observed"]
                ax.errorbar(obs["value"], obs["mean_residual"], yerr=obs["sd_residual"].fillna(0), fmt="o", ms=3,
                            capsize=1.5, elinewidth=0.6, color=kind_color(kind), label="law − observed")
                for model, style in LAW_MODEL_STYLES.items():
                    m = ra[ra["model"] == model]
                    if len(m):
                        ax.plot(m["value"], m["mean_residual"], lw=1.0, **style)
                ax.axhline(0, color="#777777", lw=0.6, ls="--", zorder=0)
                if axis == "ensemble_size":
                    ax.set_xscale("log")
                    ks = np.sort(ra["value"].unique())
                    ax.set_xticks(ks, [str(int(k)) for k in ks])
                    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
                ax.set_xlabel(xlabel)
                if j == 0:
                    ax.set_ylabel("law − observed P")
        if axes[0, 0].get_legend_handles_labels()[0]:
            axes[0, 0].legend(loc="best", fontsize=5.5)
        _add_caption(fig, caption)
    return fig


# ------------------------------------------------------ ψ AGAINST BUDGET
def _budget_list(budgets) -> str:
    return ", ".join(f"{int(b):,}" for b in budgets)


def plot_psi_by_budget(table: pd.DataFrame, ax=None, *, published: Mapping[str, tuple[float, float]] | None = None,
                       published_budget: float | None = None, caption: str | None = None):
    """ψ with its quasi-binomial 95% interval against the training budget (log x), one line per kind.

    table: `budget.psi_by_budget` rows of one study and variant (budget, psi,
    psi_quasi_low/high, status; study_budget marks the study's own budget,
    drawn as a dotted line). published: {kind: (ψ, half-width of its 95%
    interval)} at `published_budget` episodes, drawn as open diamonds for the
    kinds in the table (default: `budget.PUBLISHED` at 50,000 episodes).
    Budgets without an estimate (at small budgets every cell may fail) are
    listed in the panel with the reason; an empty table gets a note.
    Returns the axis.
    """
    published = PUBLISHED if published is None else published
    published_budget = PUBLISHED_BUDGET if published_budget is None else published_budget
    with plt.rc_context(STYLE):
        if ax is None:
            fig = plt.figure(figsize=(COLUMN_WIDTH, 2.7), layout="constrained")
            ax = fig.subplots()
        if len(table) == 0 or "kind" not in table.columns:
            kinds = ", ".join(kind_label(k) for k in BUDGET_FREE_KINDS)
            _note(ax, f"no runs of a kind whose training does not depend on the budget\n({kinds}): nothing to show")
            _add_caption(ax.figure, caption)
            return ax
        kinds = _ordered_kinds(table["kind"].unique())
        missing = []
        for kind in kinds:
            t = table[table["kind"] == kind].sort_values("budget")
            ok = t[t["psi"].notna()]
            color = kind_color(kind)
            if len(ok):
                lo, hi = ok["psi_quasi_low"].to_numpy(float), ok["psi_quasi_high"].to_numpy(float)
                band = np.isfinite(lo) & np.isfinite(hi)
                ax.fill_between(ok["budget"], lo, hi, where=band, color=color, alpha=0.2, lw=0)
                ax.plot(ok["budget"], ok["psi"], "o-", ms=2.5, lw=1.0, color=color, label=kind_label(kind))
            absent = t[t["psi"].isna()]
            if len(absent):
                reason = str(absent["status"].iloc[0]).split(";")[0] if "status" in absent.columns else ""
                where = "any budget" if not len(ok) else f"{_budget_list(absent['budget'])} episodes"
                why = f" ({_short(reason, 40)})" if reason else ""
                missing.append(f"{kind_label(kind)}: no estimate at {where}{why}")
            if kind in published:
                psi, half = published[kind]
                ax.errorbar([published_budget], [psi], yerr=[[half], [half]], fmt="D", ms=3.5, mfc="white",
                            mew=0.8, capsize=2, elinewidth=0.8, color=color,
                            label=f"{kind_label(kind)}, published ({published_budget:,.0f} episodes)")
        if "study_budget" in table.columns:
            for b in np.unique(table.loc[table["study_budget"].astype(bool), "budget"]):
                ax.axvline(b, color="#777777", lw=0.6, ls=":", zorder=0)
            if table["study_budget"].astype(bool).any():
                ax.plot([], [], color="#777777", lw=0.6, ls=":", label="this study's budget")
        ax.set_xscale("log")
        ax.set_xlim(left=float(table["budget"].min()) / 1.3)  # budgets without an estimate stay on the axis
        ax.set_xlabel("training budget (episodes per run)")
        ax.set_ylabel("ψ (quasi-binomial 95% interval)")
        if missing:
            ax.text(0.98, 0.02, "\n".join(missing), transform=ax.transAxes, ha="right", va="bottom", fontsize=5.5,
                    color="#555555")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, borderaxespad=0.2, fontsize=5.5)
        _add_caption(ax.figure, caption)
    return ax
