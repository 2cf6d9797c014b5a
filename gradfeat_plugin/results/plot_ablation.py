"""The paper's Table 1 ablation as annotated grids: per model and protocol, the
(θ1, θ2, ω) settings of the gradient term against the depth of θ2, with the linear
probe and fine-tuning of the same θ2 below."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ._figure import ABLATION_KEYS, Row, literal, table_of, table_rows, wrap_words
from .leaderboard import Cell, Stat, Table

#: The paper's row order: θ1 random first, then pretrained; inside, θ2 then ω.
SETTINGS = tuple(
    (t1, t2, w)
    for t1 in ("random", "pretrained")
    for t2 in ("random", "pretrained")
    for w in ("random", "pretrained")
)
#: The rows below the ablation: the same θ2 read out without the gradient term.
REFERENCES = (("linear", "linear probe (activations)"), ("finetune", "fine-tuning"))
TITLES = {"grad": "grad (gradient term alone)", "gradfeat": "gradfeat (full model)"}
#: Inches per cell, for the row labels, and per model for titles and headers.
CELL_WIDTH = 0.85
CELL_HEIGHT = 0.4
LABEL_SPACE = 2.6
GRID_OVERHEAD = 1.4
COLOURBAR_HEIGHT = 0.75
#: Gap, in rows, between the ablation and the reference rows.
GAP = 0.3
COLOURMAP = "viridis"
FULL_SCALE = (0.0, 100.0)
SPLIT_WIDTH = 12
NOTE = (
    "the gradient term through the pretrained or a re-initialised θ1, θ2 and probe ω; "
    "activations always from the pretrained network"
)


def setting_label(setting: tuple[str, str, str]) -> str:
    """``θ1 pretrained · θ2 random · ω pretrained``."""
    parts = zip(("θ1", "θ2", "ω"), setting)
    return " · ".join(f"{part} {state}" for part, state in parts)


@dataclass
class Grid:
    """One model's ablation in one setting: cells keyed by ``(row, split, protocol)``,
    where a row is a (θ1, θ2, ω) setting or a reference protocol."""

    title: str
    metric: str
    cells: dict[tuple[Any, str, str], Cell] = field(default_factory=dict)

    @property
    def splits(self) -> list[str]:
        """The θ2 splits, fewest modules first."""
        found = {split for _, split, _ in self.cells}
        return sorted(found, key=lambda s: (s.count(","), s))

    @property
    def settings(self) -> list[tuple[str, str, str]]:
        found = {row for row, _, _ in self.cells}
        return [s for s in SETTINGS if s in found]

    def protocols(self, order: Sequence[str]) -> list[str]:
        """The protocols of the gradient term, in the table's order."""
        found = {p for row, _, p in self.cells if row in SETTINGS}
        return [p for p in order if p in found]


def _state(row: Row) -> tuple[str, str, str]:
    parts = row.random_parts
    return tuple(  # type: ignore[return-value]
        "random" if part in parts else "pretrained" for part in ("θ1", "θ2", "ω")
    )


def ablation_grids(table: Table) -> list[Grid]:
    """The settings of the table where the Table 1 ablation was run (some row has
    a re-initialised part), one grid each, in the table's order."""
    ignore = ABLATION_KEYS | {"MODEL.SPLIT"}
    contexts: dict[tuple, list[Row]] = {}
    for row in table_rows(table, ignore=ignore):
        setting = tuple(sorted(
            (k, v) for k, v in row.setting.items() if k not in ignore
        ))
        key = (row.model, row.dataset, row.metric, row.weights, setting)
        contexts.setdefault(key, []).append(row)
    grids = []
    for rows in contexts.values():
        if not any(row.random_parts for row in rows):
            continue
        first = rows[0]
        about = [w for w in (first.weights,) if w != "pretrained"] + first.notes
        epochs = {row.record.get("epochs") for row in rows}
        if len(epochs) == 1 and None not in epochs:
            about.append(f"{epochs.pop()} epochs")
        about = list(dict.fromkeys(about))
        title = f"{first.model} on {first.dataset}" + (
            f" ({', '.join(about)})" if about else ""
        )
        grid = Grid(title, first.metric)
        for row in rows:
            state = _state(row)
            for protocol, cell in row.cells.items():
                if cell is None:
                    continue
                if protocol in dict(REFERENCES):
                    if not row.random_parts:
                        grid.cells[(protocol, row.split, protocol)] = cell
                else:
                    grid.cells[(state, row.split, protocol)] = cell
        # The linear probe reads the pooled features, whatever θ2 is: the table
        # shows it once, under one split; the grid repeats it under every split.
        probe = next((c for (k, _, _), c in grid.cells.items() if k == "linear"), None)
        if probe is not None:
            for split in grid.splits:
                grid.cells.setdefault(("linear", split, "linear"), probe)
        grids.append(grid)
    return grids


def _text_colour(rgba: Sequence[float]) -> str:
    luminance = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2]
    return "white" if luminance < 0.5 else "black"


def _cell_text(cell: Cell, seeds: int) -> str:
    if not isinstance(cell, Stat):
        return str(cell)  # a status: diverged, failed
    below = [] if cell.std is None else [f"± {cell.std:.1f}"]
    if cell.n != seeds:
        below.append(f"(n={cell.n})")
    return "\n".join([f"{cell.mean:.1f}", " ".join(below)] if below else
                     [f"{cell.mean:.1f}"])


def _draw(axes: Any, grid: Grid, protocol: str, mappable: ScalarMappable,
          labels: bool) -> None:
    """One protocol's grid: a row per setting, then the reference rows; a column
    per split."""
    splits, settings = grid.splits, grid.settings
    references = [(p, name) for p, name in REFERENCES
                  if any((p, s, p) in grid.cells for s in splits)]
    rows: list[tuple[Any, str, str, float]] = [
        (s, s, protocol, float(i)) for i, s in enumerate(settings)
    ] + [(p, p, p, len(settings) + GAP + i) for i, (p, _) in enumerate(references)]
    stats = [c for c in grid.cells.values() if isinstance(c, Stat)]
    seeds = Counter(c.n for c in stats).most_common(1)[0][0] if stats else 1
    for key, _, column_protocol, top in rows:
        for column, split in enumerate(splits):
            cell = grid.cells.get((key, split, column_protocol))
            if isinstance(cell, Stat):
                colour = mappable.to_rgba(cell.mean)
                axes.add_patch(Rectangle((column, top), 1, 1, facecolor=colour,
                                         edgecolor="white", linewidth=1.5))
                axes.text(column + 0.5, top + 0.5, _cell_text(cell, seeds),
                          ha="center", va="center", fontsize=7,
                          color=_text_colour(colour))
            else:
                axes.add_patch(Rectangle((column, top), 1, 1, facecolor="0.94",
                                         edgecolor="white", linewidth=1.5))
                axes.text(column + 0.5, top + 0.5,
                          "not run" if cell is None else literal(str(cell)),
                          ha="center", va="center", fontsize=6.5, color="0.4")
    axes.set_xlim(0, len(splits))
    axes.set_ylim(rows[-1][3] + 1, 0)
    axes.xaxis.tick_top()
    axes.xaxis.set_label_position("top")
    headers = [literal(wrap_words(s or "default", SPLIT_WIDTH)) for s in splits]
    axes.set_xticks([i + 0.5 for i in range(len(splits))], headers, fontsize=7)
    axes.set_xlabel("θ2 (the linearised modules)", fontsize=7)
    ticks = [top + 0.5 for *_, top in rows]
    names = [setting_label(s) for s in settings] + [name for _, name in references]
    axes.set_yticks(ticks, names if labels else [], fontsize=7.5)
    axes.tick_params(length=0)
    for spine in axes.spines.values():
        spine.set_visible(False)
    axes.set_title(literal(TITLES.get(protocol, protocol)), fontsize=8.5)


def ablation_figure(results: Table | Sequence[Mapping[str, Any]]) -> Figure:
    """The paper's Table 1 ablation, one block per model (and setting) in which it
    was run: a grid per protocol of the gradient term (``grad``, ``gradfeat``), a
    row per (θ1, θ2, ω) setting in the paper's order, a column per θ2 split (fewest
    modules first), and below them the linear probe and fine-tuning of the same θ2.
    Each cell prints the mean (± std over seeds, and the number of seeds where it
    differs from most cells) and is coloured on one 0–100 % scale for every grid;
    cells that were not run say so.

    Args:
        results: A :class:`Table`, or records to build one with
            :func:`leaderboard_table`.

    Raises:
        ValueError: The results hold no Table 1 ablation.
    """
    table = table_of(results)
    grids = ablation_grids(table)
    if not grids:
        raise ValueError("no Table 1 ablation in the results")
    mappable = ScalarMappable(Normalize(*FULL_SCALE), colormaps[COLOURMAP])
    protocols = [g.protocols(table.protocols) for g in grids]
    columns = max(len(p) for p in protocols)
    splits = max(len(g.splits) for g in grids)
    heights = [
        GRID_OVERHEAD + CELL_HEIGHT * (len(g.settings) + len(REFERENCES) + GAP)
        for g in grids
    ]
    width = LABEL_SPACE + columns * (CELL_WIDTH * splits + 0.3)
    figure = Figure(figsize=(width, sum(heights) + COLOURBAR_HEIGHT),
                    layout="constrained")
    FigureCanvasAgg(figure)
    parts = figure.subfigures(len(grids) + 1, 1,
                              height_ratios=[*heights, COLOURBAR_HEIGHT])
    for part, grid, shown in zip(parts, grids, protocols):
        axes = part.subplots(1, columns, squeeze=False)[0]
        for index, protocol in enumerate(shown):
            _draw(axes[index], grid, protocol, mappable, labels=index == 0)
        for unused in axes[len(shown):]:
            unused.set_axis_off()
        part.suptitle(literal(f"Table 1 ablation: {grid.title}"), x=0.01, ha="left",
                      fontsize=9.5)
    bar = parts[-1].add_gridspec(1, 3, width_ratios=[1, 2, 1])
    colourbar = parts[-1].colorbar(mappable, cax=parts[-1].add_subplot(bar[1]),
                                   orientation="horizontal")
    colourbar.set_label(literal(f"{grids[0].metric} (%)\n{NOTE}"), fontsize=7.5)
    colourbar.ax.tick_params(labelsize=7)
    return figure
