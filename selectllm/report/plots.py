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


def map_plot(xy: np.ndarray, selected: np.ndarray, title: str) -> str:
    """2-D scatter of the pool (grey) with the selected rows on top (red)."""
    fig, ax = _figure((6.4, 5.0))
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
    return _encode(fig)
