"""Accuracy against the fraction of training labels: one line per protocol, one
panel per model and setting."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from ._figure import (
    LABEL_FRACTION_KEY,
    Row,
    literal,
    protocol_colours,
    table_of,
    table_rows,
    wrap_label,
)
from .leaderboard import Stat, Table

#: Inches per panel; at most :data:`MAX_COLUMNS` panels side by side.
PANEL_WIDTH = 4.2
PANEL_HEIGHT = 3.2
MAX_COLUMNS = 3
LEGEND_HEIGHT = 0.5
TITLE_WIDTH = 44
FULL_SCALE = 100.0


@dataclass
class Series:
    """The rows of one setting that differ only in the label fraction, fewest
    labels first."""

    title: str
    metric: str
    rows: list[Row] = field(default_factory=list)

    @property
    def fractions(self) -> list[float]:
        return [row.label_fraction for row in self.rows]


def fraction_series(table: Table) -> list[Series]:
    """The table's settings evaluated at two label fractions or more, in the
    table's order."""
    series: dict[tuple, Series] = {}
    for row in table_rows(table, ignore=frozenset({LABEL_FRACTION_KEY})):
        setting = tuple(sorted(
            (k, v) for k, v in row.setting.items() if k != LABEL_FRACTION_KEY
        ))
        key = (row.model, row.dataset, row.metric, row.record.get("weights"),
               row.split, setting)
        title = f"{row.model} on {row.dataset}"
        if row.short != "pretrained":
            title += "\n" + wrap_label(row.short, TITLE_WIDTH)
        series.setdefault(key, Series(title, row.metric))
        series[key].rows.append(row)
    models = list(dict.fromkeys(key[0] for key in series))
    found = []
    for key, one in series.items():
        one.rows.sort(key=lambda row: row.label_fraction)
        if len(set(one.fractions)) > 1:
            found.append((models.index(key[0]), one.rows[0].weights == "random", one))
    # A model's pretrained weights before its random initialisation.
    return [one for *_, one in sorted(found, key=lambda item: item[:2])]


def _draw(axes: Any, series: Series, protocols: Sequence[str]) -> None:
    colours = protocol_colours(protocols)
    percent = [100 * f for f in series.fractions]
    highs = [FULL_SCALE]
    for protocol in protocols:
        points = [(x, row.cells[protocol]) for x, row in zip(percent, series.rows)
                  if isinstance(row.cells[protocol], Stat)]
        if not points:
            continue
        xs = [x for x, _ in points]
        means = [stat.mean for _, stat in points]
        # NaN draws no error bar: one seed has no spread to show.
        errors = [math.nan if stat.std is None else stat.std for _, stat in points]
        axes.plot(xs, means, color=colours[protocol], marker="o", markersize=3.5,
                  linewidth=1.3, label=literal(protocol))
        axes.errorbar(xs, means, yerr=errors, fmt="none", ecolor=colours[protocol],
                      elinewidth=1, capsize=2)
        highs += [m + (0.0 if math.isnan(e) else e) for m, e in zip(means, errors)]
    axes.set_xscale("log")
    ticks = sorted(set(percent))
    axes.set_xticks(ticks, [f"{x:g} %" for x in ticks], fontsize=7.5)
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set_xlim(min(ticks) / 1.5, max(ticks) * 1.5)
    axes.set_ylim(0.0, max(highs))
    axes.tick_params(axis="y", labelsize=7.5)
    axes.set_xlabel("training labels used (log scale)", fontsize=7.5)
    axes.set_ylabel(literal(f"{series.metric} (%)"), fontsize=7.5)
    axes.set_title(literal(series.title), fontsize=8.5, loc="left")
    axes.grid(alpha=0.3)


def label_fraction_figure(results: Table | Sequence[Mapping[str, Any]]) -> Figure:
    """Accuracy against the fraction of training labels, one panel per setting
    evaluated at several fractions (a model with random weights or another config
    is a panel of its own): one line per protocol, in the bars' colours, with the
    standard deviation over seeds as error bars; the label fraction on a log axis,
    accuracy from 0.

    Args:
        results: A :class:`Table`, or records to build one with
            :func:`leaderboard_table`.

    Raises:
        ValueError: No setting was evaluated at two label fractions.
    """
    table = table_of(results)
    series = fraction_series(table)
    if not series:
        raise ValueError("no setting evaluated at several label fractions")
    columns = min(MAX_COLUMNS, len(series))
    rows = math.ceil(len(series) / columns)
    size = (PANEL_WIDTH * columns, PANEL_HEIGHT * rows + LEGEND_HEIGHT)
    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(rows, columns)
    for index, one in enumerate(series):
        _draw(figure.add_subplot(grid[divmod(index, columns)]), one, table.protocols)
    handles, labels = [], []
    for axes in figure.axes:
        for handle, label in zip(*axes.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    order = [literal(p) for p in table.protocols]
    pairs = sorted(zip(handles, labels), key=lambda pair: order.index(pair[1]))
    figure.legend([h for h, _ in pairs], [lab for _, lab in pairs],
                  loc="outside upper center", ncols=len(pairs), fontsize=8,
                  title="accuracy against the fraction of training labels: "
                  "mean ± std over seeds", title_fontsize=8.5, frameon=False)
    return figure
