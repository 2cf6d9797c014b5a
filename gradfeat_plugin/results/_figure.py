"""What the leaderboard's figures share: the table's rows with their settings, short
setting labels, word-boundary wrapping, protocol colours and saving with a marker."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from matplotlib.figure import Figure

from ..config import get_cfg
from .leaderboard import PROTOCOL_ORDER, THETA2_COLUMN, Cell, Table, leaderboard_table
from .setting import IMPLIED_VALUES, setting_notes, setting_of_config

#: Written into the image's metadata; ``leaderboard.py --plot`` replaces only files
#: that carry it.
PLOT_MARKER = "gradfeat-plugin leaderboard"
#: Image formats whose metadata can carry :data:`PLOT_MARKER`, and its key there.
PLOT_METADATA_KEYS = {"png": "Software", "pdf": "Creator", "svg": "Creator"}
#: The parts of the Table 1 ablation, as the weights column and the config name them.
ABLATION_PARTS = (("θ1", "THETA1"), ("θ2", "THETA2"), ("ω", "PROBE"))
#: Config keys that say which part of the network the Table 1 ablation re-initialised.
ABLATION_KEYS = frozenset(f"ABLATION.{key}" for _, key in ABLATION_PARTS)
LABEL_FRACTION_KEY = "DATA.LABEL_FRACTION"
_DIGEST = re.compile(r" \[([0-9a-f]{8})\]$")
#: Where a label may break: after a space, or after a comma that joins names.
_BREAKS = re.compile(r"(?<=[ ,])")


def literal(text: str) -> str:
    """Text matplotlib shows as it is: no mathtext (``$``), not hidden (``_x``)."""
    text = text.replace("$", r"\$")
    return "\u200b" + text if text.startswith("_") else text


def wrap_words(text: str, width: int) -> str:
    """``text`` in lines of at most ``width`` characters, broken only after a space
    or a comma; a single word longer than ``width`` keeps a line of its own."""
    lines: list[str] = []
    line = ""
    for piece in filter(None, _BREAKS.split(text)):
        if line and len((line + piece).rstrip()) > width:
            lines.append(line.rstrip())
            line = piece.lstrip()
        else:
            line += piece
    lines.append(line.rstrip())
    return "\n".join(lines)


def wrap_label(label: str, width: int) -> str:
    """A label of ``", "``-joined parts in lines of at most ``width`` characters,
    broken between parts where it can and inside a part (:func:`wrap_words`) only
    where the part alone is longer."""
    lines: list[str] = []
    for part in label.split(", "):
        # A line that another part follows ends in a comma: count it.
        if lines and len(lines[-1]) + 2 + len(part) + 1 <= width:
            lines[-1] += ", " + part
        else:
            if lines:
                lines[-1] += ","
            lines.append(part)
    return "\n".join(wrap_words(line, width) for line in lines)


def protocol_colours(protocols: Sequence[str]) -> dict[str, str]:
    """One colour per protocol, the same in every figure: the paper's protocols by
    their place in :data:`PROTOCOL_ORDER`, others after them."""
    order = [*PROTOCOL_ORDER, *(p for p in protocols if p not in PROTOCOL_ORDER)]
    return {p: f"C{order.index(p)}" for p in protocols}


@dataclass
class Row:
    """One leaderboard row: a record of it (for its setting), its label and its cells.

    Args:
        record: One of the row's records.
        label: The row's full leaderboard label.
        cells: The protocol cells of the row.
        short: What tells the row apart from the model's other rows.
        notes: The config values in ``short`` (as a reader says them).
    """

    record: Mapping[str, Any]
    label: str
    cells: dict[str, Cell]
    short: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def model(self) -> str:
        return str(self.record["model"])

    @property
    def dataset(self) -> str:
        return str(self.record["dataset"])

    @property
    def metric(self) -> str:
        return str(self.record["metric"]).replace("_knn_", "_")

    @property
    def split(self) -> str:
        return str(self.record.get("split") or "")

    @property
    def weights(self) -> str:
        """The weights without the ablation's parts: ``pretrained``, ``random``,
        a path."""
        return str(self.record.get("weights") or "").partition("; ")[0]

    @property
    def setting(self) -> dict[str, str]:
        """The evaluation setting: config key -> JSON value."""
        return dict(setting_of_config(self.record.get("config")))

    @property
    def label_fraction(self) -> float:
        try:
            return float(json.loads(self.setting.get(LABEL_FRACTION_KEY, "1.0")))
        except (TypeError, ValueError):
            return 1.0

    @property
    def random_parts(self) -> list[str]:
        return random_parts(str(self.record.get("weights") or ""), self.setting)


def table_of(results: Table | Sequence[Mapping[str, Any]]) -> Table:
    """A :class:`Table`, built from records with :func:`leaderboard_table`."""
    return results if isinstance(results, Table) else leaderboard_table(results)


def table_rows(table: Table, ignore: frozenset[str] = frozenset()) -> list[Row]:
    """The table's rows in its order, each with a short label that tells it apart
    from the other rows of its model and dataset; config keys in ``ignore`` are left
    out of that label (a figure shows them otherwise)."""
    by_row: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for record in table.records:
        metric = str(record["metric"]).replace("_knn_", "_")
        by_row.setdefault((record["label"], record["dataset"], metric), []).append(record)
    rows = []
    for cells in table.rows:
        named = dict(zip(table.columns, cells))
        found = by_row[(named["model"], named["dataset"], named["metric"])]
        # A row may show a cell of runs at another θ2 depth (the linear probe
        # they share): its setting is that of a run at its own θ2.
        split = str(named.get(THETA2_COLUMN) or "").replace(", ", ",")
        record = next((r for r in found if str(r.get("split") or "") == split), found[0])
        rows.append(Row(record, str(named["model"]),
                        {p: named[p] for p in table.protocols}))
    settings: dict[tuple[str, str], set] = {}
    splits: dict[str, set[str]] = {}
    for row in rows:
        setting = _without(row.setting, ignore)
        settings.setdefault((row.model, row.dataset), set()).add(setting)
        splits.setdefault(row.model, set()).add(row.split)
    notes = {pair: setting_notes(sorted(found)) for pair, found in settings.items()}
    for row in rows:
        setting = row.setting
        row.notes = [
            _short_note(note)
            for note in notes[(row.model, row.dataset)][_without(setting, ignore)]
            if not _is_default(note, setting)
        ]
        row.short = _short_label(row, len(splits[row.model]) > 1)
        digest = _DIGEST.search(row.label)
        if digest:
            row.short += f" [{digest.group(1)}]"
    return rows


def _without(setting: Mapping[str, str], keys: frozenset[str]) -> tuple:
    return tuple(sorted((k, v) for k, v in setting.items() if k not in keys))


def random_parts(weights: str, setting: Mapping[str, str]) -> list[str]:
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
    if key in setting:
        return setting[key] == default
    implied = IMPLIED_VALUES.get(key, ...)
    return implied is not ... and json.dumps(implied, sort_keys=True, default=str) == default


def _short_note(note: str) -> str:
    """A setting note as a reader says it: ``DATA.LABEL_FRACTION=0.1`` is
    ``10 % labels``, ``TRAIN.EPOCHS=30`` is ``30 epochs``; other ``KEY=value``
    notes stay as they are."""
    key, _, value = note.partition("=")
    try:
        if key == LABEL_FRACTION_KEY:
            return f"{100 * float(value):g} % labels"
        if key == "TRAIN.EPOCHS":
            return f"{int(value)} epochs"
    except ValueError:
        pass
    return note


def _short_label(row: Row, several_splits: bool) -> str:
    """What tells a row apart from the others of its model: the weights when not
    pretrained, the ablated parts, the split, the config values other than the
    defaults."""
    parts = []
    if row.weights == "random":
        parts.append("random init")
    elif row.weights != "pretrained":
        parts.append(os.path.basename(row.weights.rstrip("/")) or row.weights)
    if row.random_parts:
        parts.append(f"{','.join(row.random_parts)} random")
    if several_splits:
        parts.append(f"split {row.split or 'default'}")
    parts += row.notes
    return ", ".join(parts) or "pretrained"


def save_figure(figure: Figure, path: str | os.PathLike, dpi: int) -> None:
    """Write ``figure`` with :data:`PLOT_MARKER` in its metadata.

    Raises:
        ValueError: The file's format is not one of :data:`PLOT_METADATA_KEYS`.
    """
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
    if fmt not in PLOT_METADATA_KEYS:
        known = ", ".join(PLOT_METADATA_KEYS)
        raise ValueError(f"plot format {fmt!r}; use one of {known}")
    figure.savefig(
        os.fspath(path), dpi=dpi, format=fmt,
        metadata={PLOT_METADATA_KEYS[fmt]: PLOT_MARKER},
    )
