"""The leaderboard as horizontal bar charts, one panel per model (matplotlib, no
display needed)."""

from __future__ import annotations

import json
import math
import os
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..config import get_cfg
from .leaderboard import Stat, Table, leaderboard_table
from .setting import setting_notes, setting_of_config

#: Written into the image's metadata; ``leaderboard.py --plot`` replaces only files
#: that carry it.
PLOT_MARKER = "gradfeat-plugin leaderboard"
#: Image formats whose metadata can carry :data:`PLOT_MARKER`, and its key there.
PLOT_METADATA_KEYS = {"png": "Software", "pdf": "Creator", "svg": "Creator"}
#: Width of the figure, in inches.
FIGURE_WIDTH = 10.0
#: Characters per line of a setting label before it wraps.
LABEL_WIDTH = 24
#: Characters per line of the caption.
CAPTION_WIDTH = 150
#: Height, in inches, of one bar, of one line of a label and of a panel's title,
#: axis and ticks.
BAR_HEIGHT = 0.17
LINE_HEIGHT = 0.16
PANEL_OVERHEAD = 0.75
CAPTION_LINE_HEIGHT = 0.12
ABLATION_NOTE = (
    "θ… random: the Table 1 ablation, the gradient term taken through re-initialised "
    "θ1 / θ2 or with a random ω, beside the pretrained network's activations."
)
#: The parts of the Table 1 ablation, as the weights column and the config name them.
ABLATION_PARTS = (("θ1", "THETA1"), ("θ2", "THETA2"), ("ω", "PROBE"))
_DIGEST = re.compile(r" \[([0-9a-f]{8})\]$")
_ABLATED = re.compile(r"(θ1|θ2|ω)(,(θ1|θ2|ω))* random")


def literal(text: str) -> str:
    """Text matplotlib shows as it is: no mathtext (``$``), not hidden (``_x``)."""
    text = text.replace("$", r"\$")
    return "\u200b" + text if text.startswith("_") else text


@dataclass
class _Panel:
    """The rows of one model on one dataset: a short label and the stats of each."""

    title: str
    metric: str
    labels: list[str] = field(default_factory=list)
    full: list[str] = field(default_factory=list)
    cells: list[dict[str, Any]] = field(default_factory=list)
    order: list[tuple[Any, ...]] = field(default_factory=list)

    def sort(self) -> None:
        """Rows in the order of :func:`_row_order`."""
        rows = sorted(range(len(self.labels)), key=self.order.__getitem__)
        self.labels = [self.labels[i] for i in rows]
        self.full = [self.full[i] for i in rows]
        self.cells = [self.cells[i] for i in rows]


def _random_parts(weights: str, setting: Mapping[str, str]) -> list[str]:
    """The parts the Table 1 ablation re-initialised, from the weights column
    (``pretrained; θ1=random θ2=pretrained ω=random``) or the stored config."""
    _, _, ablation = weights.partition("; ")
    named = dict(item.split("=", 1) for item in ablation.split() if "=" in item)
    parts = []
    for symbol, key in ABLATION_PARTS:
        from_config = setting.get(f"ABLATION.{key}") == '"random"'
        if named.get(symbol) == "random" or from_config:
            parts.append(symbol)
    return parts


def _is_default(note: str, setting: Mapping[str, str]) -> bool:
    """Whether a ``KEY=value`` note names the default value of its key."""
    key = note.partition("=")[0]
    node: Any = get_cfg()
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    default = json.dumps(node, sort_keys=True, default=str)
    return key in setting and setting[key] == default


def _short_note(note: str) -> str:
    """A setting note as a reader says it: ``DATA.LABEL_FRACTION=0.1`` is
    ``10 % labels``; other ``KEY=value`` notes stay as they are."""
    key, _, value = note.partition("=")
    if key == "DATA.LABEL_FRACTION":
        try:
            return f"{100 * float(value):g} % labels"
        except ValueError:
            return note
    return note


def _row_order(record: Mapping[str, Any], index: int) -> tuple[Any, ...]:
    """Where a row goes in its panel: by θ2 split (fewest modules first), then the
    pretrained network (all labels, then fewer), the ablations (fewest random parts
    first), the random initialisation last; else the table's order."""
    weights = str(record.get("weights") or "")
    setting = dict(setting_of_config(record.get("config")))
    split = str(record.get("split") or "")
    try:
        fraction = float(json.loads(setting.get("DATA.LABEL_FRACTION", "1.0")))
    except (TypeError, ValueError):
        fraction = 1.0
    random_parts = len(_random_parts(weights, setting))
    return (weights.startswith("random"), split.count(","), split, random_parts,
            -fraction, index)


def _short_label(
    record: Mapping[str, Any], notes: Sequence[str], several_splits: bool
) -> str:
    """What tells a row apart from the others of its model: the weights when not
    pretrained, the ablated parts, the split, the config values other than the
    defaults."""
    weights = str(record.get("weights") or "")
    base = weights.partition("; ")[0]
    parts = []
    if base == "random":
        parts.append("random init")
    elif base != "pretrained":
        parts.append(os.path.basename(base.rstrip("/")) or base)
    setting = dict(setting_of_config(record.get("config")))
    random = _random_parts(weights, setting)
    if random:
        parts.append(f"{','.join(random)} random")
    if several_splits:
        parts.append(f"split {record.get('split') or 'default'}")
    parts += [_short_note(n) for n in notes if not _is_default(n, setting)]
    return ", ".join(parts) or "pretrained"


def _panels(table: Table) -> list[_Panel]:
    """The table's rows grouped by model, dataset and metric, in the table's order,
    each with its short label."""
    by_row: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    settings: dict[tuple[str, str], set] = {}
    splits: dict[str, set[str]] = {}
    for record in table.records:
        metric = str(record["metric"]).replace("_knn_", "_")
        by_row.setdefault((record["label"], record["dataset"], metric), record)
        pair = (record["model"], record["dataset"])
        settings.setdefault(pair, set()).add(setting_of_config(record.get("config")))
        splits.setdefault(record["model"], set()).add(str(record.get("split") or ""))
    notes = {pair: setting_notes(sorted(found)) for pair, found in settings.items()}
    panels: dict[tuple[str, str, str], _Panel] = {}
    for row in table.rows:
        cells = dict(zip(table.columns, row))
        label, dataset, metric = cells["model"], cells["dataset"], cells["metric"]
        record = by_row[(label, dataset, metric)]
        model = str(record["model"])
        panel = panels.setdefault(
            (model, dataset, metric), _Panel(f"{model} on {dataset}", metric)
        )
        setting = setting_of_config(record.get("config"))
        short = _short_label(
            record, notes[(model, dataset)].get(setting, []), len(splits[model]) > 1
        )
        digest = _DIGEST.search(str(label))
        if digest:
            short += f" [{digest.group(1)}]"
        panel.labels.append(short)
        panel.full.append(str(label))
        panel.cells.append({p: cells[p] for p in table.protocols})
        panel.order.append(_row_order(record, len(panel.order)))
    for panel in panels.values():
        for index, short in enumerate(panel.labels):
            if panel.labels.count(short) > 1:
                panel.labels[index] = f"{short} #{index + 1}"
        panel.sort()
    return list(panels.values())


def _wrap(label: str) -> str:
    return "\n".join(textwrap.wrap(label, LABEL_WIDTH, break_on_hyphens=False)) or label


def _row_protocols(cells: Mapping[str, Any], protocols: Sequence[str]) -> list[str]:
    """The protocols with a number or a status in a row, in the table's order."""
    return [p for p in protocols if cells[p] is not None]


def _row_height(
    cells: Mapping[str, Any], protocols: Sequence[str], label: str
) -> float:
    """Inches for one row: its bars, or its label's lines if they need more."""
    bars = len(_row_protocols(cells, protocols))
    return max(BAR_HEIGHT * bars + 0.12, LINE_HEIGHT * (label.count("\n") + 1) + 0.08)


def _caption(panels: Sequence[_Panel]) -> list[str]:
    """The full leaderboard label of every row whose short label is not its own."""
    lines = []
    if any(_ABLATED.search(label) for panel in panels for label in panel.labels):
        lines.append(ABLATION_NOTE)
    for panel in panels:
        for short, full in zip(panel.labels, panel.full):
            if short != "pretrained":
                lines += textwrap.wrap(
                    f"{panel.title}, {short}: {full}", CAPTION_WIDTH,
                    subsequent_indent="    ",
                )
    return lines


def _draw_panel(
    axes: Any, panel: _Panel, protocols: Sequence[str], labels: Sequence[str]
) -> None:
    """One panel; the y axis is in inches, so that every bar has the same height."""
    lows, highs, ticks = [], [], []
    heights = [_row_height(c, protocols, lab) for c, lab in zip(panel.cells, labels)]
    top = 0.0
    for row, (cells, height) in enumerate(zip(panel.cells, heights)):
        if row:
            axes.axhline(top, color="0.85", linewidth=0.6)
        centre = top + height / 2
        ticks.append(centre)
        shown = _row_protocols(cells, protocols)
        for slot, protocol in enumerate(shown):
            y = centre + (slot - (len(shown) - 1) / 2) * BAR_HEIGHT
            colour = f"C{list(protocols).index(protocol)}"
            cell = cells[protocol]
            if isinstance(cell, Stat):
                # NaN draws no error bar: one seed has no spread to show.
                error = math.nan if cell.std is None else cell.std
                axes.barh(y, cell.mean, BAR_HEIGHT * 0.9, xerr=error, color=colour,
                          capsize=2, error_kw={"elinewidth": 0.8})
                spread = cell.std or 0.0
                lows.append(cell.mean - spread)
                highs.append(cell.mean + spread)
                axes.annotate(f"{cell.mean:.1f}", (cell.mean + spread, y),
                              xytext=(3, 0), textcoords="offset points",
                              va="center", fontsize=6.5)
            else:  # a status: diverged, failed
                axes.annotate(literal(f"{protocol} {cell}"), (0, y),
                              xycoords=("axes fraction", "data"), xytext=(3, 0),
                              textcoords="offset points", va="center", fontsize=6.5,
                              color=colour)
        top += height
    if lows:
        span = max(highs) - min(lows)
        left = max(0.0, min(lows) - 0.15 * span - 1.0)
        right = min(100.0, max(highs) + 0.1 * span + 1.0)
        axes.set_xlim(left, right + 0.08 * (right - left) + 1.0)  # room for values
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
    config values), labelled briefly and wrapped; each row holds one bar per
    protocol in the paper's order, in the same colour in every panel, with the
    mean printed at its end and the standard deviation over seeds as an error bar.
    Each panel's axis, in percent, is zoomed to its values. A caption below gives
    the full leaderboard label of each row.

    Args:
        results: A :class:`Table`, or records to build one with
            :func:`leaderboard_table`.

    Raises:
        ValueError: There is nothing to plot.
    """
    table = results if isinstance(results, Table) else leaderboard_table(results)
    if not table.rows:
        raise ValueError("no results to plot")
    panels = _panels(table)
    protocols = table.protocols
    wrapped = [[_wrap(label) for label in panel.labels] for panel in panels]
    heights = [
        sum(_row_height(c, protocols, label) for c, label in zip(panel.cells, labels))
        + PANEL_OVERHEAD
        for panel, labels in zip(panels, wrapped)
    ]
    caption = _caption(panels)
    caption_height = CAPTION_LINE_HEIGHT * len(caption) + 0.2
    legend_height = 0.45
    total = sum(heights) + caption_height + legend_height
    figure = Figure(figsize=(FIGURE_WIDTH, total), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(len(panels) + 1, 1, height_ratios=[*heights,
                                                                  caption_height])
    for index, (panel, labels) in enumerate(zip(panels, wrapped)):
        _draw_panel(figure.add_subplot(grid[index]), panel, protocols, labels)
    notes = figure.add_subplot(grid[len(panels)])
    notes.set_axis_off()
    notes.text(0.0, 1.0, literal("\n".join(caption)), va="top", ha="left", fontsize=6.5,
               transform=notes.transAxes)
    handles = [Patch(color=f"C{i}", label=literal(p)) for i, p in enumerate(protocols)]
    figure.legend(handles=handles, loc="outside upper center", ncols=len(handles),
                  fontsize=8, title="gradfeat leaderboard: mean ± std over seeds",
                  title_fontsize=9, frameon=False)
    return figure


def plot_leaderboard(
    results: Table | Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    dpi: int = 150,
) -> None:
    """Save the leaderboard as :func:`leaderboard_figure` draws it.

    Args:
        results: A :class:`Table`, or records to build one with
            :func:`leaderboard_table`.
        path: The image file to write: ``.png``, ``.pdf`` or ``.svg``. Its metadata
            carries :data:`PLOT_MARKER`.
        dpi: Resolution of raster formats.

    Raises:
        ValueError: There is nothing to plot, or the format is not one of those.
    """
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
    figure = leaderboard_figure(results)
    if fmt not in PLOT_METADATA_KEYS:
        known = ", ".join(PLOT_METADATA_KEYS)
        raise ValueError(f"plot format {fmt!r}; use one of {known}")
    figure.savefig(
        os.fspath(path), dpi=dpi, format=fmt,
        metadata={PLOT_METADATA_KEYS[fmt]: PLOT_MARKER},
    )
