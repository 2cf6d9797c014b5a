"""The leaderboard as a grouped bar chart (matplotlib, no display needed)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .leaderboard import Stat, Table, leaderboard_table


#: Written into the image's metadata; ``leaderboard.py --plot`` replaces only files
#: that carry it.
PLOT_MARKER = "gradfeat-plugin leaderboard"
#: Image formats whose metadata can carry :data:`PLOT_MARKER`, and the key it goes in.
PLOT_METADATA_KEYS = {"png": "Software", "pdf": "Creator", "svg": "Creator"}


def literal(text: str) -> str:
    """Text matplotlib shows as it is: no mathtext (``$``), not hidden (``_x``)."""
    text = text.replace("$", r"\$")
    return "\u200b" + text if text.startswith("_") else text


def plot_leaderboard(
    results: Table | Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    dpi: int = 150,
) -> None:
    """Save the leaderboard as a grouped bar chart.

    One group of bars per leaderboard row (model, dataset); one bar per protocol in
    the paper's order, with the value printed on top and the standard deviation over
    seeds as an error bar. The y axis, in percent, is zoomed to the range of the
    values so that differences of a point are visible.

    Args:
        results: A :class:`Table`, or records to build one with
            :func:`leaderboard_table`.
        path: The image file to write: ``.png``, ``.pdf`` or ``.svg``. Its metadata
            carries :data:`PLOT_MARKER`.
        dpi: Resolution of raster formats.

    Raises:
        ValueError: There is nothing to plot.
    """
    table = results if isinstance(results, Table) else leaderboard_table(results)
    if not table.rows:
        raise ValueError("no results to plot")
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
    if fmt not in PLOT_METADATA_KEYS:
        known = ", ".join(PLOT_METADATA_KEYS)
        raise ValueError(f"plot format {fmt!r}; use one of {known}")
    groups = [literal(f"{row[0]}\n{row[1]}") for row in table.rows]
    metrics = sorted(set(table.column("metric")))
    n_protocols = len(table.protocols)
    width = 0.8 / n_protocols
    figure = Figure(figsize=(max(6.0, 1.1 + 0.45 * n_protocols * len(groups)), 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    lows, highs = [], []
    for index, protocol in enumerate(table.protocols):
        stats: list[Stat | None] = table.column(protocol)
        xs = [g + (index - (n_protocols - 1) / 2) * width for g in range(len(groups))]
        shown = [(x, s) for x, s in zip(xs, stats) if isinstance(s, Stat)]
        means = [s.mean for _, s in shown]
        errors = [s.std or 0.0 for _, s in shown]
        # NaN draws no error bar: one seed has no spread to show.
        bars = axes.bar(
            [x for x, _ in shown], means, width, capsize=3,
            yerr=[math.nan if s.std is None else s.std for _, s in shown],
            label=literal(protocol), color=f"C{index}", error_kw={"elinewidth": 1},
        )
        axes.bar_label(bars, labels=[f"{m:.1f}" for m in means], padding=2, fontsize=7)
        lows += [m - e for m, e in zip(means, errors)]
        highs += [m + e for m, e in zip(means, errors)]
    span = max(highs) - min(lows)
    bottom = max(0.0, min(lows) - 0.25 * span - 1.0)
    top = min(100.0, max(highs) + 0.15 * span + 1.0) + 2.0  # room for the labels
    axes.set_ylim(bottom, top)
    axes.set_xticks(range(len(groups)), groups, fontsize=8)
    axes.set_xlabel("model / dataset")
    axes.set_ylabel(literal(f"{' / '.join(metrics)} (%)"))
    axes.set_title("gradfeat leaderboard (mean ± std over seeds)")
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    axes.legend(title="protocol", fontsize=8, title_fontsize=8,
                loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    figure.savefig(
        os.fspath(path), dpi=dpi, format=fmt,
        metadata={PLOT_METADATA_KEYS[fmt]: PLOT_MARKER},
    )
