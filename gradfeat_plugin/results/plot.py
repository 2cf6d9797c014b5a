"""The leaderboard's figures (matplotlib, no display needed): horizontal bars of every
row, one panel per model; accuracy against the label fraction; the Table 1 ablation
as an annotated grid."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ._figure import (
    PLOT_MARKER,
    PLOT_METADATA_KEYS,
    Row,
    literal,
    protocol_colours,
    save_figure,
    table_of,
    table_rows,
    wrap_label,
)
from .leaderboard import Cell, Stat, Table
from .plot_ablation import ablation_figure, ablation_grids
from .plot_fractions import fraction_series, label_fraction_figure

__all__ = [
    "FIGURES",
    "PLOT_MARKER",
    "PLOT_METADATA_KEYS",
    "ablation_figure",
    "figure_files",
    "label_fraction_figure",
    "leaderboard_figure",
    "plot_leaderboard",
]

#: Width, in inches, of one column of panels; at most :data:`MAX_COLUMNS` columns.
COLUMN_WIDTH = 6.5
MAX_COLUMNS = 2
#: Characters per line of a setting label before it wraps (between its parts,
#: else at a space or comma).
LABEL_WIDTH = 26
#: Inches per bar, per line of a label, between rows, and for a panel's title,
#: axis and ticks; inches for the legend above the panels.
BAR_HEIGHT = 0.13
LINE_HEIGHT = 0.13
ROW_PAD = 0.1
PANEL_OVERHEAD = 0.6
LEGEND_HEIGHT = 0.7
#: Accuracy in percent: the axes run from 0 to this (further if a bar does).
FULL_SCALE = 100.0
ABLATION_NOTE = (
    "θ… random: the Table 1 ablation, the gradient term taken through re-initialised "
    "θ1 / θ2 or a random ω (activations from the pretrained network)"
)


@dataclass
class _Panel:
    """The rows of one model on one dataset, in the order of :func:`_row_order`."""

    title: str
    metric: str
    rows: list[Row] = field(default_factory=list)

    def labels(self) -> list[str]:
        """Each row's short label, wrapped; labels that coincide are numbered."""
        shorts = [row.short for row in self.rows]
        return [
            wrap_label(f"{short} #{i + 1}" if shorts.count(short) > 1 else short,
                       LABEL_WIDTH)
            for i, short in enumerate(shorts)
        ]


def _row_order(row: Row, index: int) -> tuple[Any, ...]:
    """Where a row goes in its panel: the pretrained network first, by θ2 split
    (fewest modules first), all labels then fewer, the ablations (fewest random
    parts first); the random initialisation last; else the table's order."""
    return (row.weights == "random", row.split.count(","), row.split,
            len(row.random_parts), -row.label_fraction, index)


def _panels(table: Table) -> list[_Panel]:
    """The table's rows grouped by model, dataset and metric, in the table's order."""
    panels: dict[tuple[str, str, str], _Panel] = {}
    for row in table_rows(table):
        key = (row.model, row.dataset, row.metric)
        panels.setdefault(key, _Panel(f"{row.model} on {row.dataset}", row.metric))
        panels[key].rows.append(row)
    for panel in panels.values():
        order = {id(row): _row_order(row, i) for i, row in enumerate(panel.rows)}
        panel.rows.sort(key=lambda row: order[id(row)])
    return list(panels.values())


def _shown(cells: Mapping[str, Cell], protocols: Sequence[str]) -> list[str]:
    """The protocols with a number or a status in a row, in the table's order."""
    return [p for p in protocols if cells[p] is not None]


def _row_height(
    cells: Mapping[str, Cell], protocols: Sequence[str], label: str
) -> float:
    """Inches for one row: its bars, or its label's lines if they need more."""
    bars = len(_shown(cells, protocols))
    return max(BAR_HEIGHT * bars, LINE_HEIGHT * (label.count("\n") + 1)) + ROW_PAD


def _panel_height(panel: _Panel, protocols: Sequence[str]) -> float:
    return PANEL_OVERHEAD + sum(
        _row_height(row.cells, protocols, label)
        for row, label in zip(panel.rows, panel.labels())
    )


def _columns(heights: Sequence[float]) -> list[list[int]]:
    """Panels dealt into at most :data:`MAX_COLUMNS` columns of about equal height,
    tallest first into the shortest column; each column keeps the table's order."""
    columns: list[list[int]] = [[] for _ in range(min(MAX_COLUMNS, len(heights)))]
    totals = [0.0] * len(columns)
    for index in sorted(range(len(heights)), key=lambda i: -heights[i]):
        shortest = totals.index(min(totals))
        columns[shortest].append(index)
        totals[shortest] += heights[index]
    return [sorted(column) for column in columns]


def _draw_panel(axes: Any, panel: _Panel, protocols: Sequence[str]) -> None:
    """One panel; the y axis is in inches, so that every bar has the same height.
    The accuracy axis starts at 0 in every panel."""
    colours = protocol_colours(protocols)
    labels = panel.labels()
    highs, ticks = [FULL_SCALE], []
    top = 0.0
    for index, (row, label) in enumerate(zip(panel.rows, labels)):
        height = _row_height(row.cells, protocols, label)
        if index:
            axes.axhline(top, color="0.85", linewidth=0.6)
        centre = top + height / 2
        ticks.append(centre)
        shown = _shown(row.cells, protocols)
        for slot, protocol in enumerate(shown):
            y = centre + (slot - (len(shown) - 1) / 2) * BAR_HEIGHT
            cell = row.cells[protocol]
            if isinstance(cell, Stat):
                # NaN draws no error bar: one seed has no spread to show.
                error = math.nan if cell.std is None else cell.std
                axes.barh(y, cell.mean, BAR_HEIGHT * 0.85, xerr=error,
                          color=colours[protocol], capsize=2,
                          error_kw={"elinewidth": 0.8})
                end = cell.mean + (cell.std or 0.0)
                highs.append(end)
                axes.annotate(f"{cell.mean:.1f}", (end, y), xytext=(3, 0),
                              textcoords="offset points", va="center", fontsize=6.5)
            else:  # a status: diverged, failed
                axes.annotate(literal(f"{protocol} {cell}"), (0, y), xytext=(3, 0),
                              textcoords="offset points", va="center", fontsize=6.5,
                              color=colours[protocol])
        top += height
    full_scale = max(highs)
    axes.set_xlim(0.0, full_scale * 1.1)  # room for the values after the bars
    axes.set_xticks(range(0, int(full_scale) + 1, 20))
    axes.set_ylim(top, 0.0)
    axes.set_yticks(ticks, [literal(label) for label in labels], fontsize=7.5)
    axes.tick_params(axis="x", labelsize=7)
    axes.set_xlabel(literal(f"{panel.metric} (%)"), fontsize=7.5)
    axes.set_title(literal(panel.title), fontsize=9, loc="left")
    axes.grid(axis="x", alpha=0.3)
    axes.set_axisbelow(True)


def leaderboard_figure(results: Table | Sequence[Mapping[str, Any]]) -> Figure:
    """The leaderboard as horizontal bar charts, one panel per model and dataset.

    A panel's rows are the model's settings (pretrained, random init, the Table 1
    ablations such as ``θ2 random``, label fractions such as ``10 % labels``, other
    config values), labelled briefly and wrapped at spaces and commas; each row holds
    one bar per protocol, in the same colour in every panel and figure, with the mean
    printed at its end and the standard deviation over seeds as an error bar. Every
    accuracy axis starts at 0. Panels fill up to two columns of about equal height.

    Args:
        results: A :class:`Table`, or records to build one with
            :func:`leaderboard_table`.

    Raises:
        ValueError: There is nothing to plot.
    """
    table = table_of(results)
    if not table.rows:
        raise ValueError("no results to plot")
    panels = _panels(table)
    protocols = table.protocols
    heights = [_panel_height(panel, protocols) for panel in panels]
    columns = _columns(heights)
    tallest = max(sum(heights[i] for i in column) for column in columns)
    figure = Figure(figsize=(COLUMN_WIDTH * len(columns), tallest + LEGEND_HEIGHT),
                    layout="constrained")
    FigureCanvasAgg(figure)
    for subfigure, column in zip(figure.subfigures(1, len(columns), squeeze=False)[0],
                                 columns):
        # The layout adds each panel's title and axis to its share: the shares are
        # the rows alone, so that a bar is as high in every panel.
        ratios = [heights[i] - PANEL_OVERHEAD for i in column]
        rest = tallest - sum(heights[i] for i in column)
        if rest > 0.01:  # a shorter column leaves room below
            ratios.append(rest)
        grid = subfigure.add_gridspec(len(ratios), 1, height_ratios=ratios)
        for slot, index in enumerate(column):
            _draw_panel(subfigure.add_subplot(grid[slot]), panels[index], protocols)
    colours = protocol_colours(protocols)
    handles = [Patch(color=colours[p], label=literal(p)) for p in protocols]
    title = "gradfeat leaderboard: mean ± std over seeds"
    if any(row.random_parts for panel in panels for row in panel.rows):
        title += "\n" + ABLATION_NOTE
    figure.legend(handles=handles, loc="outside upper center", ncols=len(handles),
                  fontsize=8, title=literal(title), title_fontsize=8.5, frameon=False)
    return figure


#: The figures ``plot_leaderboard`` draws: name -> (draw, suffix of the file name
#: next to the bars' file, whether a table has rows for it).
FIGURES: dict[str, tuple[Callable[[Table], Figure], str, Callable[[Table], bool]]] = {
    "bars": (leaderboard_figure, "", lambda table: bool(table.rows)),
    "label_fraction": (label_fraction_figure, "_label_fraction",
                       lambda table: bool(fraction_series(table))),
    "ablation": (ablation_figure, "_ablation",
                 lambda table: bool(ablation_grids(table))),
}


def figure_files(
    path: str | os.PathLike, results: Table | Sequence[Mapping[str, Any]]
) -> dict[str, str]:
    """The files ``leaderboard.py --plot PATH`` writes: the bars at ``PATH`` and,
    when the results hold rows for them, ``STEM_label_fraction.EXT`` and
    ``STEM_ablation.EXT`` beside it.

    Args:
        path: The bars' file.
        results: A :class:`Table`, or records to build one with
            :func:`leaderboard_table`.

    Returns:
        Figure name (a key of :data:`FIGURES`) -> file.
    """
    table = table_of(results)
    stem, ext = os.path.splitext(os.fspath(path))
    return {
        name: stem + suffix + ext
        for name, (_, suffix, has_rows) in FIGURES.items()
        if has_rows(table)
    }


def plot_leaderboard(
    results: Table | Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    dpi: int = 150,
    figure: str = "bars",
) -> None:
    """Save one of the leaderboard's figures.

    Args:
        results: A :class:`Table`, or records to build one with
            :func:`leaderboard_table`.
        path: The image file to write: ``.png``, ``.pdf`` or ``.svg``. Its metadata
            carries :data:`PLOT_MARKER`.
        dpi: Resolution of raster formats.
        figure: ``bars`` (:func:`leaderboard_figure`), ``label_fraction``
            (:func:`label_fraction_figure`) or ``ablation`` (:func:`ablation_figure`).

    Raises:
        ValueError: There is nothing to plot, the figure is unknown, or the format
            is not one of those.
    """
    if figure not in FIGURES:
        known = ", ".join(FIGURES)
        raise ValueError(f"unknown figure {figure!r}; choose one of {known}")
    save_figure(FIGURES[figure][0](table_of(results)), path, dpi)
