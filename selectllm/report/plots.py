"""Plotting helpers for the report: each returns a PNG as a base64 string (for ``data:`` URLs).

Uses matplotlib's object API with the Agg canvas only (no pyplot, no global backend switch, no
display needed), small figures at ~100 dpi so the self-contained HTML stays small.
"""

from __future__ import annotations

import base64
import io
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
SIZE = (6.4, 3.4)
SELECTED_COLOR = "#d62728"
POOL_COLOR = "#9aa5b1"
BAR_COLOR = "#1f77b4"
STATUS_COLORS = {"ok": "#2ca02c", "fallback": "#ff7f0e", "budget_stopped": "#9467bd", "error": "#d62728"}


def _figure(size: tuple[float, float] = SIZE) -> tuple[Figure, object]:
    fig = Figure(figsize=size, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    return fig, ax


def _encode(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(v: float) -> str:
    return f"{int(v):,}" if float(v).is_integer() else f"{v:,.2f}"


def bar_plot(
    labels: Sequence[str],
    values: Sequence[float],
    title: str,
    ylabel: str = "",
    colors: Sequence[str] | None = None,
    horizontal: bool = False,
    fmt: str | None = None,
) -> str:
    """Bars with their value written on each (``fmt`` e.g. ``"{:.1f}"``; default: ints with commas)."""
    fig, ax = _figure()
    values = [float(v) for v in values]
    pos = np.arange(len(values))
    colors = list(colors) if colors else [BAR_COLOR] * len(values)
    if horizontal:
        bars = ax.barh(pos, values, color=colors)
        ax.set_yticks(pos, list(labels))
        ax.invert_yaxis()
        ax.set_xlabel(ylabel)
    else:
        bars = ax.bar(pos, values, color=colors)
        ax.set_xticks(pos, list(labels), rotation=15 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center")
        ax.set_ylabel(ylabel)
    ax.bar_label(bars, labels=[fmt.format(v) if fmt else _fmt(v) for v in values], fontsize=8, padding=2)
    ax.margins(x=0.1 if horizontal else 0.05, y=0.05 if horizontal else 0.15)
    ax.set_title(title, fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    return _encode(fig)


def funnel_plot(steps: Sequence[tuple[str, int]]) -> str:
    """Dedup funnel: rows left after each step (read, quarantine, exact, near = kept)."""
    labels = [s[0] for s in steps]
    values = [s[1] for s in steps]
    colors = [BAR_COLOR] * (len(values) - 1) + ["#2ca02c"]
    return bar_plot(labels, values, "Dedup funnel (rows left after each step)", "rows", colors)


def histogram_plot(values: np.ndarray, title: str, xlabel: str, bins: int = 40) -> str:
    fig, ax = _figure()
    values = np.asarray(values)
    if values.size:
        if np.issubdtype(values.dtype, np.integer):  # no more bins than distinct integer values
            bins = max(1, min(bins, int(values.max() - values.min()) + 1))
        ax.hist(values, bins=bins, color=BAR_COLOR, edgecolor="white", linewidth=0.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("clusters")
    ax.set_title(title, fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    return _encode(fig)


def map_plot(xy: np.ndarray, selected: np.ndarray, title: str, size: tuple[float, float] = (6.4, 5.0)) -> str:
    """2-D scatter of the pool (grey) with the selected rows on top (red)."""
    fig, ax = _figure(size)
    _draw_map(ax, xy, selected, title)
    return _encode(fig)


def _draw_map(ax, xy: np.ndarray, selected: np.ndarray, title: str) -> None:
    xy = np.asarray(xy)
    selected = np.asarray(selected, dtype=bool)
    pool = xy[~selected]
    ax.scatter(pool[:, 0], pool[:, 1], s=3, c=POOL_COLOR, alpha=0.5, linewidths=0,
               label=f"pool ({len(pool):,} shown)", rasterized=True)
    sel = xy[selected]
    ax.scatter(sel[:, 0], sel[:, 1], s=14, c=SELECTED_COLOR, alpha=0.9, linewidths=0.3,
               edgecolors="black", label=f"selected ({len(sel):,})")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="best", fontsize=8, markerscale=2)
    ax.spines[["top", "right"]].set_visible(False)


# ----------------------------------------------------------------------------- coverage and spend
CURVE_POINTS = 400
STRATEGY_COLORS = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
                   "#7f7f7f", "#bcbd22", "#17becf")


def coverage_cdf(distances: np.ndarray, points: int = CURVE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """(r, fraction of pool rows within cosine distance r of the selection), at most ``points``."""
    d = np.sort(np.asarray(distances, dtype=np.float64))
    d = d[np.isfinite(d)]
    if d.size == 0:
        return np.zeros(0), np.zeros(0)
    frac = np.arange(1, d.size + 1) / d.size
    if d.size > points:
        idx = np.unique(np.linspace(0, d.size - 1, points).round().astype(np.int64))
        d, frac = d[idx], frac[idx]
    return np.concatenate([[0.0], d]), np.concatenate([[0.0], frac])


def _draw_coverage(ax, curves: dict[str, np.ndarray], title: str) -> None:
    for i, (name, dist) in enumerate(curves.items()):
        r, frac = coverage_cdf(dist)
        if r.size:
            ax.plot(r, frac, color=STRATEGY_COLORS[i % len(STRATEGY_COLORS)], linewidth=1.6,
                    label=f"{name} (mean {float(np.nanmean(dist)):.3f})")
    ax.set_xlabel("cosine distance r to the nearest selected row")
    ax.set_ylabel("fraction of pool within r")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    if curves:
        ax.legend(loc="lower right", fontsize=7)
    ax.spines[["top", "right"]].set_visible(False)


def coverage_curve_plot(curves: dict[str, np.ndarray], title: str = "Coverage curves (higher and further left is better)") -> str:
    """One curve per selection: the share of pool rows within distance r of the selection."""
    fig, ax = _figure((6.4, 4.2))
    _draw_coverage(ax, curves, title)
    return _encode(fig)


def map_coverage_plot(xy: np.ndarray, selected: np.ndarray, title: str, distances: np.ndarray | None) -> str:
    """The pool map (left) and the selection's coverage curve (right) in one figure."""
    fig = Figure(figsize=(11.0, 4.6), dpi=DPI)
    FigureCanvasAgg(fig)
    _draw_map(fig.add_subplot(1, 2, 1), xy, selected, title)
    curves = {"selection": distances} if distances is not None and np.size(distances) else {}
    _draw_coverage(fig.add_subplot(1, 2, 2), curves, "Coverage curve")
    return _encode(fig)


def _hbars(ax, labels: Sequence[str], values: Sequence[float], title: str, xlabel: str, fmt: str, color: str) -> None:
    pos = np.arange(len(values))
    bars = ax.barh(pos, [float(v) for v in values], color=color)
    ax.set_yticks(pos, list(labels))
    ax.invert_yaxis()
    ax.bar_label(bars, labels=[fmt.format(float(v)) for v in values], fontsize=8, padding=2)
    ax.margins(x=0.25)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)


def spend_panels(labels: Sequence[str], panels: Sequence[tuple[str, str, Sequence[float], str]],
                 size: tuple[float, float] | None = None) -> str:
    """Side-by-side horizontal bar panels over the same labels: (title, xlabel, values, fmt)."""
    n = len(panels)
    cols = min(n, 2)
    rows = -(-n // cols)
    fig = Figure(figsize=size or (5.5 * cols, rows * (1.1 + 0.3 * max(3, len(labels)))), dpi=DPI)
    FigureCanvasAgg(fig)
    for i, (title, xlabel, values, fmt) in enumerate(panels):
        _hbars(fig.add_subplot(rows, cols, i + 1), labels, values, title, xlabel, fmt,
               STRATEGY_COLORS[(i + 1) % len(STRATEGY_COLORS)])
    return _encode(fig)
