"""Leaderboard tables built from stored results.

:func:`leaderboard` builds every view of a store: the full table (one row per
evaluation setting), the compact table of the main settings (one row per model,
weights, dataset and label fraction), the Table 1 ablations in the paper's layout,
and the other settings. :func:`render_leaderboard` writes a view as text.
"""

from __future__ import annotations

import csv
import html
import io
import json
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from ._rows import (
    ABLATION_ORDER,
    FRACTION_KEY,
    INPUT_KEY,
    ROW_KINDS,
    SPLIT_KEY,
    WEIGHTS_KEY,
    AblationGroup,
    Cell as RowCell,
    Defaults,
    Row,
    build_rows,
    classify,
    row_labels,
)
from .setting import setting_words, word_order

#: The paper's column order; other protocols follow in alphabetical order.
PROTOCOL_ORDER = ("linear", "grad", "gradfeat", "finetune", "knn")
#: Output formats of :func:`render`.
FORMATS = ("md", "csv", "html", "json")
#: Views of :func:`render_leaderboard`: the main settings with the ablations and
#: other settings in their own tables, or every setting in one table.
VIEWS = ("compact", "full")
THETA2_COLUMN = "θ2"
INPUT_COLUMN = "input"
GAIN_COLUMN = "gain recovered (%)"
#: Cost columns, after the gain, and how each shows its number.
COST_FORMATS = {
    "wall time (s)": "{:.1f}",
    "peak memory (MiB)": "{:.0f}",
    "GFLOPs": "{:.3g}",
    "params (M)": "{:.3g}",
}
#: Columns whose cells are words (left-aligned in Markdown).
TEXT_COLUMNS = frozenset({"model", THETA2_COLUMN, INPUT_COLUMN, "dataset", "metric",
                          "θ1", "ω"})
#: Suffix of the column beside a protocol's that holds its validation metric.
VAL_SUFFIX = " val"
#: Fields of each record in the ``json`` format.
JSON_FIELDS = (
    "model",
    "label",
    "kind",
    "weights",
    "split",
    "theta2",
    "input_size",
    "dataset",
    "protocol",
    "metric",
    "value",
    "seed",
    "epochs",
    "wall_time_s",
    "peak_memory_bytes",
    "flops",
    "params",
    "trainable_params",
    "run_id",
    "timestamp",
    "config_hash",
    "versions",
    "status",
    "reason",
    "notes",
    "evaluation_setting",
)
#: Markers of footnotes, in order of first use.
MARKERS = "¹²³⁴⁵⁶⁷⁸⁹"
CHANCE_NOTE = "at or below chance ({:.2f} %: one of {} classes)"
NEGATIVE_GAIN_NOTE = (
    "negative gain recovered: gradfeat and fine-tuning fall on opposite sides of "
    "the linear probe"
)
FINETUNE_NOTE = "fine-tuning below the linear probe: check its optimisers and lr"
UNDEFINED_GAIN = "undefined"
UNDEFINED_GAIN_NOTE = (
    "gain recovered is defined only where fine-tuning beats the linear probe "
    "(here {finetune:.2f} % against {linear:.2f} %)"
)
SELECTED_ON_TEST_NOTE = (
    "chosen on the test split (no validation split: DATA.VAL_FRACTION 0, or a run "
    "from before it existed), so optimistic"
)
#: How the compact view introduces its tables.
ABLATION_CAPTION = (
    "Table 1 ablation of {model} on {dataset}{words}: {metric} in %, {seeds}"
)
OTHER_CAPTION = "Other settings: in %, mean ± std over seeds"
ACTIVATION_ROW = "activation (linear probe)"
FINETUNE_ROW = "fine-tuning"


@dataclass(frozen=True)
class Stat:
    """A metric over seeds, in percent.

    Args:
        mean: Mean over seeds.
        std: Sample standard deviation over seeds; ``None`` with one seed.
        n: Number of seeds.
    """

    mean: float
    std: float | None
    n: int

    def __str__(self) -> str:
        if self.std is None:
            return f"{self.mean:.2f}"
        return f"{self.mean:.2f} ± {self.std:.2f}"


Cell = Union[Stat, float, int, str, None]


@dataclass
class Table:
    """A leaderboard: named columns and rows of cells, plus the records behind them.

    Args:
        columns: Column names, in order.
        rows: One list of cells per row, aligned with ``columns``; ``None`` is blank.
        protocols: The protocol columns, in order.
        records: The records shown (latest per seed), each with its row ``label``
            and the ``notes`` that flag it.
        notes: Footnotes, in order; note ``i`` is marked by ``MARKERS[i]``.
        flags: ``(row index, column name) -> indices of notes`` for doubtful or
            unfinished cells.
        settings: Per row, what its shown numbers were evaluated with: config key
            -> value (the keys that can change them).
        kinds: Per row, ``main``, ``ablation`` or ``other``.
        validation: ``(row index, protocol) ->`` the validation metric the
            protocol's setting was chosen with, where it was chosen on one.
        caption: What the table shows, for the views that hold several tables.
        seeds: The usual number of seeds; cells with another number say ``(n=…)``
            (``None``: a ``seeds`` column says it).
    """

    columns: list[str]
    rows: list[list[Cell]]
    protocols: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    flags: dict[tuple[int, str], list[int]] = field(default_factory=dict)
    settings: list[dict[str, Any]] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    validation: dict[tuple[int, str], Stat] = field(default_factory=dict)
    caption: str = ""
    seeds: int | None = None

    def flag(self, row: int, column: str, note: str) -> None:
        """Mark a cell with a footnote (one footnote per distinct text)."""
        if note not in self.notes:
            self.notes.append(note)
        marks = self.flags.setdefault((row, column), [])
        if self.notes.index(note) not in marks:
            marks.append(self.notes.index(note))

    def marker(self, index: int) -> str:
        """The footnote marker of note ``index``."""
        return MARKERS[index] if index < len(MARKERS) else f"[{index + 1}]"

    def row_notes(self, row: int) -> list[str]:
        """The footnotes that flag cells of one row, marker first."""
        indices = sorted({i for (r, _), marks in self.flags.items() if r == row
                          for i in marks})
        return [f"{self.marker(i)} {self.notes[i]}" for i in indices]

    def column(self, name: str) -> list[Cell]:
        """The cells of one column, top to bottom."""
        index = self.columns.index(name)
        return [row[index] for row in self.rows]


@dataclass
class Leaderboard:
    """Every view of a store's results.

    Args:
        full: One row per evaluation setting.
        main: The main settings: one row per model, weights, dataset and label
            fraction (its non-ablation setting with the most protocols).
        ablations: One table per Table 1 ablation, in the paper's layout.
        other: The settings that are neither main nor in an ablation.
    """

    full: Table
    main: Table
    ablations: list[Table] = field(default_factory=list)
    other: Table | None = None


def leaderboard(records: Sequence[Mapping[str, Any]]) -> Leaderboard:
    """Build every view of the leaderboard from stored records.

    A protocol's number belongs to the part of the setting that can change it: a
    run that changes only fine-tuning's learning rate adds a row with its
    fine-tuning number alone, and the θ2 variants of a model share one linear
    probe (see :mod:`._rows`). Main settings are, per model, weights, dataset and
    label fraction, the setting with the most protocols among those with the
    model's default θ2 and no random part; a Table 1 ablation is each set of rows
    that differ only in θ2's depth and the parts taken random.

    Args:
        records: Rows as returned by :meth:`ResultsStore.records`.
    """
    defaults = Defaults(records)
    rows = build_rows(records, defaults)
    groups = classify(rows, defaults)
    rows = sorted(rows, key=lambda r: _row_order(r, groups))
    protocols = _protocols(records)
    full = _table(rows, row_labels(rows, defaults), protocols)
    main_rows = [r for r in rows if r.kind == "main"]
    main = _table(main_rows, row_labels(main_rows, defaults), protocols)
    labels = dict(zip(map(id, rows), (r[0] for r in full.rows)))
    other_rows = [r for r in rows if r.kind == "other"]
    other = None
    if other_rows:
        other = _table(other_rows, [labels[id(r)] for r in other_rows], protocols)
        other.caption = OTHER_CAPTION
    ablations = [_ablation_table(g, main_rows, defaults) for g in groups]
    return Leaderboard(full=full, main=main, ablations=ablations, other=other)


def leaderboard_table(records: Sequence[Mapping[str, Any]]) -> Table:
    """The full leaderboard: one row per evaluation setting.

    A model evaluated with other weights, another ``θ2`` split or any other config
    value that changes a number gets its own row, and its label says in words what
    differs from the model's other rows on that dataset, where it is not the
    default: ``zoo:x (weights random)``, ``zoo:x (θ2 = conv4, conv5; θ2 random)``,
    ``zoo:x (10 % labels)``, ``zoo:x (fine-tuning lr 0.001)``. Columns: model (the
    label), θ2, input size, dataset, metric, seeds, the protocols in the paper's
    order, the gain recovered ``(gradfeat − linear) / (finetune − linear)`` in
    percent (blank when a term is missing, ``undefined`` with a footnote where
    fine-tuning does not beat the probe), the wall time of one seed of all
    protocols, the peak memory, and fvcore's GFLOPs and parameter count of the
    backbone. A protocol evaluated with several seeds shows ``mean ± std``; when
    one seed was run more than once only its latest run counts. Values are
    percentages. A number is shown in one row only; the gain recovered of a row
    also counts the numbers of other rows that apply to it (the linear probe of a
    θ2 variant), and its costs are those of the runs that made it. A protocol
    whose latest runs all diverged or failed shows ``diverged`` / ``failed`` and a
    footnote with the reason, never a number.
    Doubtful numbers get a marker and a footnote: at or below chance, a negative
    gain recovered, fine-tuning below the linear probe, chosen on the test split.

    Args:
        records: Rows as returned by :meth:`ResultsStore.records`.
    """
    return leaderboard(records).full


def _row_order(row: Row, groups: Sequence[AblationGroup]) -> tuple:
    """Per dataset and model: the main rows (pretrained weights first, more labels
    first), then each Table 1 ablation by θ2 depth and random parts, then the rest."""
    weights = str(row.value(WEIGHTS_KEY) or "")
    fraction = row.value(FRACTION_KEY)
    group = next((i for i, g in enumerate(groups)
                  if any(r is row for r in g.rows.values())), len(groups))
    return (
        row.dataset, row.model, not row.base[3], row.metric,
        ROW_KINDS.index(row.kind), group,
        (weights != "pretrained", weights != "random", weights),
        -fraction if isinstance(fraction, (int, float)) else 0.0,
        len(row.split), row.split, row.ablation.count("random"),
        ABLATION_ORDER.index(row.ablation) if row.ablation in ABLATION_ORDER else 0,
        sorted(row.setting.items()),
    )


def _protocols(records: Sequence[Mapping[str, Any]]) -> list[str]:
    present = {r["protocol"] for r in records}
    known = [p for p in PROTOCOL_ORDER if p in present]
    return known + sorted(present - set(PROTOCOL_ORDER))


def _ok(record: Mapping[str, Any]) -> bool:
    return (record.get("status") or "ok") == "ok" and record.get("value") is not None


def _stat(values: Sequence[float]) -> Stat | None:
    if not values:
        return None
    percent = [100.0 * v for v in values]
    std = statistics.stdev(percent) if len(percent) > 1 else None
    return Stat(mean=statistics.fmean(percent), std=std, n=len(percent))


def _cell_stat(cell: RowCell | None) -> Stat | None:
    if cell is None:
        return None
    return _stat([r["value"] for r in cell.records if _ok(r)])


def _selected_on(record: Mapping[str, Any]) -> str | None:
    """What a record's choices were made on (``validation``, ``test``, ``nothing``).
    Runs from before the validation split record nothing: where they chose between
    optimisers (fine-tuning's Adam and SGD), they chose on the test split."""
    extra = record.get("extra") or {}
    if "selected_on" not in extra and len(extra.get("values_by_optimizer") or {}) > 1:
        return "test"
    return extra.get("selected_on")


def _validation_stat(cell: RowCell) -> Stat | None:
    """The validation metric each seed's setting was chosen with."""
    return _stat([
        (r.get("extra") or {})["selection_metric"] for r in cell.records
        if _ok(r) and _selected_on(r) == "validation"
        and (r.get("extra") or {}).get("selection_metric") is not None
    ])


def _chance(records: Sequence[Mapping[str, Any]]) -> tuple[float, int] | None:
    """Chance accuracy in percent (one over the classes) for top-1 metrics, if known."""
    for record in records:
        classes = (record.get("extra") or {}).get("num_classes")
        if classes and record["metric"].endswith("top1"):
            return 100.0 / classes, int(classes)
    return None


def _protocol_cell(cell: RowCell) -> tuple[Cell, list[str], list[str]]:
    """A protocol's cell (its stat, or the status of its unfinished runs), the notes
    on its unfinished runs, and the doubts on its number: at or below chance,
    chosen on the test split."""
    stat = _cell_stat(cell)
    unfinished = [r for r in cell.records if not _ok(r)]
    reasons = [
        f"{cell.protocol} {r['status']}: {r.get('reason') or 'no reason recorded'}"
        for r in unfinished
    ]
    doubts = []
    chance = _chance(cell.records)
    if stat is not None and chance is not None and stat.mean <= chance[0] + 1e-9:
        doubts.append(CHANCE_NOTE.format(*chance))
    if any(_ok(r) and _selected_on(r) == "test" for r in cell.records):
        doubts.append(SELECTED_ON_TEST_NOTE)
    if stat is None and unfinished:
        return unfinished[-1]["status"], reasons, doubts
    return stat, reasons, doubts


def _gain_recovered(stats: Mapping[str, Stat | None]) -> float | None:
    linear, gradfeat, finetune = (
        stats.get(p) for p in ("linear", "gradfeat", "finetune")
    )
    if linear is None or gradfeat is None or finetune is None:
        return None
    headroom = finetune.mean - linear.mean
    if headroom < 1e-9:  # fine-tuning does not beat the probe: see UNDEFINED_GAIN
        return None
    return 100.0 * (gradfeat.mean - linear.mean) / headroom


def _total_wall_time(records: Sequence[Mapping[str, Any]]) -> float | None:
    """Sum over protocols of the mean wall time over seeds: one seed of everything."""
    per_protocol: dict[str, list[float]] = {}
    for record in records:
        if record.get("wall_time_s") is not None:
            times = per_protocol.setdefault(record["protocol"], [])
            times.append(record["wall_time_s"])
    if not per_protocol:
        return None
    return sum(statistics.fmean(times) for times in per_protocol.values())


def _max_or_none(values: Sequence[float | None], scale: float) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) * scale if known else None


def _theta2_text(row: Row) -> str:
    if SPLIT_KEY not in row.setting:
        return ""
    return ", ".join(row.split) or "default"


def _input_text(row: Row) -> str:
    if INPUT_KEY not in row.setting:
        return ""
    size = row.value(INPUT_KEY)
    if size is None:
        return "default"
    return "×".join(str(n) for n in size) if isinstance(size, list) else str(size)


def _parsed(setting: Mapping[str, str]) -> dict[str, Any]:
    return {key: json.loads(value) for key, value in sorted(setting.items())}


def _table(
    rows: Sequence[Row], labels: Sequence[str], protocols: Sequence[str]
) -> Table:
    """The leaderboard of ``rows`` (see :func:`leaderboard_table`)."""
    columns = ["model", THETA2_COLUMN, INPUT_COLUMN, "dataset", "metric", "seeds",
               *protocols, GAIN_COLUMN, *COST_FORMATS]
    table = Table(columns=columns, rows=[], protocols=list(protocols))
    for index, (row, label) in enumerate(zip(rows, labels)):
        cells: dict[str, Cell] = {p: None for p in protocols}
        doubts: dict[str, list[str]] = {}
        for protocol, cell in row.own.items():
            cells[protocol], reasons, doubts[protocol] = _protocol_cell(cell)
            for note in reasons:
                table.flag(index, protocol, note)
            validation = _validation_stat(cell)
            if validation is not None:
                table.validation[(index, protocol)] = validation
        for protocol, notes in doubts.items():
            for note in notes:
                if note != SELECTED_ON_TEST_NOTE:
                    table.flag(index, protocol, note)
        applicable = {p: _cell_stat(c) for p, c in row.cells.items()}
        gain: Cell = _gain_recovered(applicable)
        linear, finetune = applicable.get("linear"), applicable.get("finetune")
        if gain is not None and gain < 0:
            table.flag(index, GAIN_COLUMN, NEGATIVE_GAIN_NOTE)
        if (linear is not None and finetune is not None and "finetune" in row.own
                and finetune.mean < linear.mean):
            table.flag(index, "finetune", FINETUNE_NOTE)
        for protocol, notes in doubts.items():
            if SELECTED_ON_TEST_NOTE in notes:
                table.flag(index, protocol, SELECTED_ON_TEST_NOTE)
        if gain is None and linear and finetune and finetune.mean <= linear.mean:
            gain = UNDEFINED_GAIN
            table.flag(index, GAIN_COLUMN, UNDEFINED_GAIN_NOTE.format(
                finetune=finetune.mean, linear=linear.mean))
        stats = [c for c in cells.values() if isinstance(c, Stat)]
        table.rows.append([
            label, _theta2_text(row), _input_text(row), row.dataset, row.metric,
            max((s.n for s in stats), default=0),
            *(cells[p] for p in protocols),
            gain,
            _total_wall_time(row.runs),
            _max_or_none([r.get("peak_memory_bytes") for r in row.runs], scale=2**-20),
            _max_or_none([r.get("flops") for r in row.runs], scale=1e-9),
            _max_or_none([r.get("params") for r in row.runs], scale=1e-6),
        ])
        own_setting: dict[str, str] = {}
        for cell in row.own.values():
            own_setting.update(cell.setting)
        table.settings.append(_parsed(own_setting))
        table.kinds.append(row.kind)
        for cell in row.own.values():
            for record in cell.records:
                table.records.append({
                    **record, "label": label, "kind": row.kind,
                    "theta2": list(row.split),
                    "input_size": (record.get("extra") or {}).get("input_size")
                    or row.value(INPUT_KEY),
                    "evaluation_setting": _parsed(cell.setting),
                    "notes": [
                        table.notes[i] for (r, column), marks in table.flags.items()
                        if r == index and column in (cell.protocol, GAIN_COLUMN)
                        for i in marks
                    ],
                })
    return table


def _ablation_table(
    group: AblationGroup, main_rows: Sequence[Row], defaults: Defaults
) -> Table:
    """One Table 1 ablation in the paper's layout: rows are (θ1, θ2, ω) of the
    gradient term, then the activation model (the linear probe) and fine-tuning;
    columns are, per θ2 split, grad and gradfeat (the paper's "full")."""
    splits = sorted({split for split, _ in group.rows}, key=lambda s: (len(s), s))
    columns = ["θ1", "θ2", "ω"]
    for split in splits:
        name = ", ".join(split) or "default"
        columns += [f"grad ({name})", f"gradfeat ({name})"]
    table = Table(columns=columns, rows=[], protocols=["grad", "gradfeat"])
    counts: Counter[int] = Counter()

    def put(
        cells: list[Cell], row_index: int, column: str, cell: RowCell | None
    ) -> None:
        if cell is None:
            cells.append(None)
            return
        value, reasons, doubts = _protocol_cell(cell)
        cells.append(value)
        if isinstance(value, Stat):
            counts[value.n] += 1
        for note in reasons + doubts:
            table.flag(row_index, column, note)

    for ablation in ABLATION_ORDER:
        if not any(key[1] == ablation for key in group.rows):
            continue
        cells: list[Cell] = list(ablation)
        for split in splits:
            row = group.rows.get((split, ablation))
            for protocol in ("grad", "gradfeat"):
                column = columns[len(cells)]
                put(cells, len(table.rows), column,
                    row.cells.get(protocol) if row is not None else None)
        table.rows.append(cells)
    for title, protocol in ((ACTIVATION_ROW, "linear"), (FINETUNE_ROW, "finetune")):
        cells = [title, "", ""]
        for split in splits:
            found = [r.cells[protocol] for (s, _), r in group.rows.items()
                     if s == split and protocol in r.cells]
            column = columns[len(cells)]
            put(cells, len(table.rows), column, found[0] if found else None)
            cells.append(None)
        if any(c is not None for c in cells[3:]):
            table.rows.append(cells)
    table.seeds = counts.most_common(1)[0][0] if counts else None
    first = group.first
    table.caption = ABLATION_CAPTION.format(
        model=first.model, dataset=first.dataset, metric=first.metric,
        words=_group_words(group, main_rows, defaults),
        seeds=_seeds_text(table.seeds, marked=len(counts) > 1),
    )
    return table


def _seeds_text(seeds: int | None, marked: bool) -> str:
    if seeds is None:
        return "no finished run"
    text = "one seed" if seeds == 1 else f"mean ± std over {seeds} seeds"
    return text + (" unless marked (n=…)" if marked else "")


def _group_words(
    group: AblationGroup, main_rows: Sequence[Row], defaults: Defaults
) -> str:
    """What sets an ablation apart from its model's main setting of the same
    weights and label fraction (all its values off the defaults when there is none)."""
    first = group.first
    same = [r for r in main_rows if r.base == first.base
            and r.setting.get(WEIGHTS_KEY) == first.setting.get(WEIGHTS_KEY)
            and r.setting.get(FRACTION_KEY) == first.setting.get(FRACTION_KEY)]
    words = []
    for key in sorted(group.setting, key=word_order):
        value = group.setting[key]
        if same:
            main_value = same[0].setting.get(key)
            if main_value is None or main_value == value:
                continue
        elif defaults.is_default(first.model, key, value):
            continue
        words.append(setting_words(key, value))
    return f" ({'; '.join(words)})" if words else ""


def render(table: Table, fmt: str, show_val: bool = False) -> str:
    """One table as text.

    Args:
        table: From :func:`leaderboard_table` (or a view of :func:`leaderboard`).
        fmt: ``md`` (Markdown), ``csv`` (numbers only: each ``mean ± std`` column is
            split into the mean and a ``<protocol> std`` column; a ``<protocol>
            val`` column beside each protocol's holds the validation metric it was
            chosen with; the row's kind, one column per config key whose value
            differs between rows, and the whole ``setting`` as JSON), ``html`` (a
            ``<table>``) or ``json`` (a list of records, values as stored, i.e.
            fractions, with the row ``label``, ``theta2``, ``input_size`` and the
            ``evaluation_setting`` of the number).
        show_val: In ``md`` and ``html``, the validation metric beside the test
            one (``<protocol> val``) for the protocols chosen on a validation split.

    Raises:
        ValueError: Unknown format.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "json":
        return _json(table)
    if fmt == "csv":
        return _csv(_with_validation(table, every_protocol=True))
    shown = _with_validation(table, every_protocol=False) if show_val else table
    return _markdown(shown) if fmt == "md" else _html(shown)


def render_leaderboard(
    board: Leaderboard, fmt: str, view: str = "compact", show_val: bool = False
) -> str:
    """A view of the leaderboard as text.

    Args:
        board: From :func:`leaderboard`.
        fmt: One of :data:`FORMATS` (see :func:`render`). ``csv`` and ``json`` hold
            every row of the full view whatever ``view`` says, each with its kind
            (``main``, ``ablation``, ``other``).
        view: ``compact``: the main settings, then each Table 1 ablation in the
            paper's layout, then any other settings, each table under its
            caption; ``full``: every setting in one table.
        show_val: See :func:`render`.

    Raises:
        ValueError: Unknown format or view.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}")
    if fmt in ("csv", "json") or view == "full":
        return render(board.full, fmt, show_val)
    tables = [t for t in (board.main, *board.ablations, board.other)
              if t is not None and t.rows]
    separator = "\n" if fmt == "md" else ""
    return separator.join(render(t, fmt, show_val) for t in tables)


def _with_validation(table: Table, every_protocol: bool) -> Table:
    """``table`` with a ``<protocol> val`` column after each protocol's (every one,
    or those with a validation metric)."""
    shown = [p for p in table.protocols
             if every_protocol or any(p == q for _, q in table.validation)]
    if not shown:
        return table
    columns: list[str] = []
    rows: list[list[Cell]] = [[] for _ in table.rows]
    for name, *cells in zip(table.columns, *table.rows):
        columns.append(name)
        for row, cell in zip(rows, cells):
            row.append(cell)
        if name in shown:
            columns.append(name + VAL_SUFFIX)
            for index, row in enumerate(rows):
                row.append(table.validation.get((index, name)))
    return Table(
        columns=columns, rows=rows, protocols=table.protocols, records=table.records,
        notes=table.notes, flags=table.flags, settings=table.settings,
        kinds=table.kinds, validation=table.validation, caption=table.caption,
        seeds=table.seeds,
    )


def _format_cell(cell: Cell, column: str, seeds: int | None = None) -> str:
    if cell is None:
        return ""
    if isinstance(cell, Stat):
        return str(cell) + (f" (n={cell.n})" if seeds and cell.n != seeds else "")
    if isinstance(cell, (str, int)):
        return str(cell)
    return COST_FORMATS.get(column, "{:.2f}").format(cell)


def _text_rows(table: Table) -> list[list[str]]:
    """Cells as text, each followed by the markers of its footnotes."""
    return [
        [
            _format_cell(cell, name, table.seeds)
            + "".join(table.marker(i) for i in table.flags.get((index, name), []))
            for cell, name in zip(row, table.columns)
        ]
        for index, row in enumerate(table.rows)
    ]


def _markdown_cell(text: str) -> str:
    """A cell that stays one cell of one row and shows its text literally."""
    text = html.escape(text, quote=False).replace("|", "\\|")
    return "<br>".join(text.splitlines())


def _footnotes(table: Table) -> list[str]:
    return [f"{table.marker(i)} {note}" for i, note in enumerate(table.notes)]


def _markdown(table: Table) -> str:
    rule = [":---" if c in TEXT_COLUMNS else "---:" for c in table.columns]
    lines = [[_markdown_cell(c) for c in table.columns], rule, *(
        [_markdown_cell(c) for c in cells] for cells in _text_rows(table)
    )]
    text = "".join("| " + " | ".join(cells) + " |\n" for cells in lines)
    if table.caption:
        text = _markdown_cell(table.caption) + "\n\n" + text
    notes = [_markdown_cell(n) for n in _footnotes(table)]
    return text + ("\n" + "".join(f"{n}  \n" for n in notes) if notes else "")


#: First characters that make a spreadsheet read a CSV cell as a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(text: str) -> str:
    """Text that a spreadsheet shows as text: a formula prefix gets a leading ``'``."""
    if text.startswith(FORMULA_PREFIXES):
        try:
            float(text)
        except ValueError:
            return "'" + text
    return text


def _csv_value(value: Any) -> str:
    """A setting's value in a CSV cell: text as it is, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def _differing_keys(settings: Sequence[Mapping[str, Any]]) -> list[str]:
    """The config keys whose values differ between the rows that have them."""
    keys = sorted({k for s in settings for k in s})
    return [k for k in keys
            if len({json.dumps(s[k], sort_keys=True) for s in settings if k in s}) > 1]


def _csv(table: Table) -> str:
    stat_columns = {
        name for i, name in enumerate(table.columns)
        if name in table.protocols or name.removesuffix(VAL_SUFFIX) in table.protocols
        or any(isinstance(row[i], Stat) for row in table.rows)
    }
    setting_keys = _differing_keys(table.settings)
    header = []
    for name in table.columns:
        header += [name, f"{name} std"] if name in stat_columns else [name]
        if name == "metric" and table.kinds:
            header.append("kind")
    if table.settings:
        header += [*setting_keys, "setting"]
    header.append("notes")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([_csv_cell(name) for name in header])
    for index, row in enumerate(table.rows):
        cells = []
        for cell, name in zip(row, table.columns):
            if name in stat_columns:
                if isinstance(cell, Stat):
                    mean = f"{cell.mean:.4f}"
                    std = "" if cell.std is None else f"{cell.std:.4f}"
                else:  # blank, or a status such as "diverged"
                    mean, std = "" if cell is None else str(cell), ""
                cells += [mean, std]
            else:
                cells.append(_csv_cell(_format_cell(cell, name)))
            if name == "metric" and table.kinds:
                cells.append(table.kinds[index])
        if table.settings:
            setting = table.settings[index]
            cells += [_csv_cell(_csv_value(setting[k])) if k in setting else ""
                      for k in setting_keys]
            cells.append(json.dumps(setting, sort_keys=True, ensure_ascii=False))
        cells.append(_csv_cell("; ".join(table.row_notes(index))))
        writer.writerow(cells)
    return out.getvalue()


def _html(table: Table) -> str:
    caption = (f"<caption>{html.escape(table.caption)}</caption>\n"
               if table.caption else "")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>\n"
        for cells in _text_rows(table)
    )
    notes = "".join(
        f'<p class="gradfeat-note">{html.escape(n)}</p>\n' for n in _footnotes(table)
    )
    return (
        f'<table class="gradfeat-leaderboard">\n{caption}'
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n"
        + notes
    )


#: What a record says about how its number was chosen (from its ``extra``).
SELECTION_FIELDS = ("selected_on", "setting", "selection_metric", "values_by_setting")


def _json(table: Table) -> str:
    records = [
        {
            **{name: r.get(name) for name in JSON_FIELDS},
            **{name: (r.get("extra") or {}).get(name) for name in SELECTION_FIELDS},
        }
        for r in table.records
    ]
    return json.dumps(records, indent=2, ensure_ascii=False) + "\n"
