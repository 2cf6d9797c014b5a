"""Leaderboard tables built from stored results: one row per (model, dataset)."""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Union

from .setting import Setting, setting_notes, setting_of_config

#: The paper's column order; other protocols follow in alphabetical order.
PROTOCOL_ORDER = ("linear", "grad", "gradfeat", "finetune", "knn")
#: Output formats of :func:`render`.
FORMATS = ("md", "csv", "html", "json")
GAIN_COLUMN = "gain recovered (%)"
#: Cost columns, after the gain, and how each shows its number.
COST_FORMATS = {
    "wall time (s)": "{:.1f}",
    "peak memory (MiB)": "{:.0f}",
    "GFLOPs": "{:.3g}",
    "params (M)": "{:.3g}",
}
#: Fields of each record in the ``json`` format.
JSON_FIELDS = (
    "model",
    "label",
    "weights",
    "split",
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
    "chosen on the test split (no validation split: DATA.VAL_FRACTION 0), so "
    "optimistic"
)


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


class RowKey(NamedTuple):
    """What tells leaderboard rows apart: the columns and the whole evaluation
    setting (the stored config without the seed, see :mod:`.setting`)."""

    model: str
    weights: str
    split: str
    dataset: str
    metric: str
    setting: Setting = ()


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
    """

    columns: list[str]
    rows: list[list[Cell]]
    protocols: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    flags: dict[tuple[int, str], list[int]] = field(default_factory=dict)

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


def leaderboard_table(records: Sequence[Mapping[str, Any]]) -> Table:
    """Build the leaderboard from stored records.

    Rows are evaluation settings: a model on a dataset with one config (everything
    but the seed). A model evaluated with other weights, another ``θ2`` split or any
    other config value gets its own row, and its label says what differs, e.g.
    ``zoo:x (random)`` or ``zoo:x (DATA.LABEL_FRACTION=0.02)``. Columns: model,
    dataset, metric, seeds, the protocols in the paper's order, the gain recovered
    ``(gradfeat − linear) / (finetune − linear)`` in percent (blank when a term is
    missing or finetune equals linear), the wall time of one seed of all protocols,
    the peak memory, and fvcore's GFLOPs and parameter count of the backbone. A
    protocol evaluated with several seeds shows ``mean ± std``; when one seed was run
    more than once only its latest run counts. Values are percentages. A protocol
    whose latest runs all diverged or failed shows ``diverged`` / ``failed`` and a
    footnote with the reason, never a number. Doubtful numbers get a marker and a
    footnote: at or below chance, a negative gain recovered, fine-tuning below the
    linear probe.

    Args:
        records: Rows as returned by :meth:`ResultsStore.records`.
    """
    latest = _latest_per_seed(records)
    labels = _row_labels(latest)
    protocols = _protocols(latest)
    groups: dict[RowKey, list[dict[str, Any]]] = {}
    for record in latest:
        key = _row_key(record)
        groups.setdefault(key, []).append({**record, "label": labels[key]})
    columns = ["model", "dataset", "metric", "seeds", *protocols, GAIN_COLUMN,
               *COST_FORMATS]
    ordered = sorted(groups, key=lambda k: (k.dataset, labels[k], k.metric))
    table = Table(columns=columns, rows=[], protocols=protocols)
    for key in ordered:
        group = groups[key]
        stats = {
            p: _stat([r["value"] for r in group if r["protocol"] == p and _ok(r)])
            for p in protocols
        }
        cells: dict[str, Cell] = dict(stats)
        for p in protocols:
            unfinished = [r for r in group if r["protocol"] == p and not _ok(r)]
            if unfinished and stats[p] is None:
                cells[p] = unfinished[-1]["status"]
            for record in unfinished:
                table.flag(len(table.rows), p, f"{p} {record['status']}: "
                           f"{record.get('reason') or 'no reason recorded'}")
        gain: Cell = _gain_recovered(stats)
        _flag_doubtful(table, len(table.rows), group, stats, gain)
        linear, finetune = stats.get("linear"), stats.get("finetune")
        if gain is None and linear and finetune and finetune.mean <= linear.mean:
            gain = UNDEFINED_GAIN
            table.flag(len(table.rows), GAIN_COLUMN, UNDEFINED_GAIN_NOTE.format(
                finetune=finetune.mean, linear=linear.mean))
        table.rows.append([
            labels[key],
            key.dataset,
            key.metric,
            max((s.n for s in stats.values() if s is not None), default=0),
            *(cells[p] for p in protocols),
            gain,
            _total_wall_time(group),
            _max_or_none([r.get("peak_memory_bytes") for r in group], scale=2**-20),
            _max_or_none([r.get("flops") for r in group], scale=1e-9),
            _max_or_none([r.get("params") for r in group], scale=1e-6),
        ])
        row = len(table.rows) - 1
        for record in group:
            record["notes"] = [
                table.notes[i] for (r, column), marks in table.flags.items()
                if r == row and column in (record["protocol"], GAIN_COLUMN)
                for i in marks
            ]
    table.records = [record for key in ordered for record in groups[key]]
    return table


def _ok(record: Mapping[str, Any]) -> bool:
    return (record.get("status") or "ok") == "ok" and record.get("value") is not None


def _chance(group: Sequence[Mapping[str, Any]]) -> tuple[float, int] | None:
    """Chance accuracy in percent (one over the classes) for top-1 metrics, if known."""
    for record in group:
        classes = (record.get("extra") or {}).get("num_classes")
        if classes and record["metric"].endswith("top1"):
            return 100.0 / classes, int(classes)
    return None


def _flag_doubtful(
    table: Table, row: int, group: Sequence[Mapping[str, Any]],
    stats: Mapping[str, Stat | None], gain: float | None,
) -> None:
    """Footnote numbers that should not be taken at face value."""
    chance = _chance(group)
    if chance is not None:
        for protocol, stat in stats.items():
            if stat is not None and stat.mean <= chance[0] + 1e-9:
                table.flag(row, protocol, CHANCE_NOTE.format(*chance))
    if gain is not None and gain < 0:
        table.flag(row, GAIN_COLUMN, NEGATIVE_GAIN_NOTE)
    linear, finetune = stats.get("linear"), stats.get("finetune")
    if linear is not None and finetune is not None and finetune.mean < linear.mean:
        table.flag(row, "finetune", FINETUNE_NOTE)
    for record in group:
        if _ok(record) and (record.get("extra") or {}).get("selected_on") == "test":
            table.flag(row, record["protocol"], SELECTED_ON_TEST_NOTE)


def render(table: Table, fmt: str) -> str:
    """The leaderboard as text.

    Args:
        table: From :func:`leaderboard_table`.
        fmt: ``md`` (Markdown), ``csv`` (numbers only: each ``mean ± std`` column is
            split into the mean and a ``<protocol> std`` column), ``html`` (a
            ``<table>``) or ``json`` (a list of records, values as stored, i.e.
            fractions, with the row ``label``).

    Raises:
        ValueError: Unknown format.
    """
    renderers = {"md": _markdown, "csv": _csv, "html": _html, "json": _json}
    if fmt not in renderers:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return renderers[fmt](table)


def _latest_per_seed(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Drop reruns: per row, protocol and seed keep the newest record."""
    latest: dict[tuple, tuple[dict[str, Any], tuple[str, int]]] = {}
    for index, record in enumerate(records):
        key = (*_row_key(record), record["protocol"], record.get("seed"))
        order = (record.get("timestamp") or "", index)
        if key not in latest or order >= latest[key][1]:
            latest[key] = (dict(record), order)
    return [record for record, _ in latest.values()]


def _row_key(record: Mapping[str, Any]) -> RowKey:
    fields = {name: str(record.get(name) or "") for name in RowKey._fields[:-1]}
    # lightly names kNN's accuracy val_knn_top1; it shares the row of val_top1.
    fields["metric"] = fields["metric"].replace("_knn_", "_")
    return RowKey(**fields, setting=setting_of_config(record.get("config")))


def _row_labels(records: Sequence[Mapping[str, Any]]) -> dict[RowKey, str]:
    """``model`` plus, in brackets, the weights if not pretrained, the split if the
    same model was evaluated with several splits, and the config values that tell
    its settings on one dataset apart. Labels that still coincide get a digest."""
    splits: dict[str, set[str]] = {}
    settings: dict[tuple[str, str], set[Setting]] = {}
    keys = {_row_key(record) for record in records}
    for key in keys:
        splits.setdefault(key.model, set()).add(key.split)
        settings.setdefault((key.model, key.dataset), set()).add(key.setting)
    notes_by_pair = {
        pair: setting_notes(sorted(found)) for pair, found in settings.items()
    }
    labels = {}
    for key in keys:
        notes = []
        if key.weights != "pretrained":
            notes.append(_short_weights(key.weights))
        if len(splits[key.model]) > 1:
            notes.append(f"split={key.split or 'default'}")
        notes += notes_by_pair[(key.model, key.dataset)][key.setting]
        labels[key] = key.model + (f" ({', '.join(notes)})" if notes else "")
    shared: dict[tuple[str, str, str], list[RowKey]] = {}
    for key in keys:
        shared.setdefault((labels[key], key.dataset, key.metric), []).append(key)
    for same in shared.values():
        if len(same) > 1:
            for key in same:
                digest = hashlib.sha256(repr(key).encode("utf-8")).hexdigest()[:8]
                labels[key] += f" [{digest}]"
    return labels


def _short_weights(weights: str) -> str:
    """A checkpoint path or URL shortened to its file name."""
    return os.path.basename(weights.rstrip("/")) or weights


def _protocols(records: Sequence[Mapping[str, Any]]) -> list[str]:
    present = {r["protocol"] for r in records}
    known = [p for p in PROTOCOL_ORDER if p in present]
    return known + sorted(present - set(PROTOCOL_ORDER))


def _stat(values: Sequence[float]) -> Stat | None:
    if not values:
        return None
    percent = [100.0 * v for v in values]
    std = statistics.stdev(percent) if len(percent) > 1 else None
    return Stat(mean=statistics.fmean(percent), std=std, n=len(percent))


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


def _total_wall_time(group: Sequence[Mapping[str, Any]]) -> float | None:
    """Sum over protocols of the mean wall time over seeds: one seed of everything."""
    per_protocol: dict[str, list[float]] = {}
    for record in group:
        if record.get("wall_time_s") is not None:
            times = per_protocol.setdefault(record["protocol"], [])
            times.append(record["wall_time_s"])
    if not per_protocol:
        return None
    return sum(statistics.fmean(times) for times in per_protocol.values())


def _max_or_none(values: Sequence[float | None], scale: float) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) * scale if known else None


def _format_cell(cell: Cell, column: str) -> str:
    if cell is None:
        return ""
    if isinstance(cell, (Stat, str, int)):
        return str(cell)
    return COST_FORMATS.get(column, "{:.2f}").format(cell)


def _text_rows(table: Table) -> list[list[str]]:
    """Cells as text, each followed by the markers of its footnotes."""
    return [
        [
            _format_cell(cell, name)
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
    text_columns = {"model", "dataset", "metric"}
    rule = [":---" if c in text_columns else "---:" for c in table.columns]
    lines = [[_markdown_cell(c) for c in table.columns], rule, *(
        [_markdown_cell(c) for c in cells] for cells in _text_rows(table)
    )]
    text = "".join("| " + " | ".join(cells) + " |\n" for cells in lines)
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


def _csv(table: Table) -> str:
    stat_columns = {
        name for i, name in enumerate(table.columns)
        if any(isinstance(row[i], Stat) for row in table.rows)
    }
    header = []
    for name in table.columns:
        header += [name, f"{name} std"] if name in stat_columns else [name]
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
        cells.append(_csv_cell("; ".join(table.row_notes(index))))
        writer.writerow(cells)
    return out.getvalue()


def _html(table: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>\n"
        for cells in _text_rows(table)
    )
    notes = "".join(
        f'<p class="gradfeat-note">{html.escape(n)}</p>\n' for n in _footnotes(table)
    )
    return (
        '<table class="gradfeat-leaderboard">\n'
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
    return json.dumps(records, indent=2) + "\n"
